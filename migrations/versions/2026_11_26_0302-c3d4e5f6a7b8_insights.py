"""insights (analytics and artist statistics)

Revision ID: c3d4e5f6a7b8
Revises: b8f2c1d3e4a5
Create Date: 2026-11-26 03:20:00
"""

from __future__ import annotations

from alembic import op

revision = "c3d4e5f6a7b8"
down_revision = "b8f2c1d3e4a5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unique listeners of an artist or a track over a window: the index alone, read in
    # listener order, counts them without sorting (the day filter is checked in the index).
    op.create_index(
        "ix_daily_artist_listeners_artist_user_day",
        "daily_artist_listeners",
        ["artist_id", "user_id", "day"],
    )
    op.create_index(
        "ix_daily_track_listeners_track_user_day",
        "daily_track_listeners",
        ["track_id", "user_id", "day"],
    )


def downgrade() -> None:
    op.drop_index("ix_daily_track_listeners_track_user_day", table_name="daily_track_listeners")
    op.drop_index("ix_daily_artist_listeners_artist_user_day", table_name="daily_artist_listeners")

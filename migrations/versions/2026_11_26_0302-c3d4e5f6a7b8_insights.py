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
    # Unique listeners of an artist or track over a window, counted from the index alone.
    op.create_index(
        "ix_daily_artist_listeners_artist_day_user",
        "daily_artist_listeners",
        ["artist_id", "day", "user_id"],
    )
    op.create_index(
        "ix_daily_track_listeners_track_day_user",
        "daily_track_listeners",
        ["track_id", "day", "user_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_daily_track_listeners_track_day_user", table_name="daily_track_listeners")
    op.drop_index("ix_daily_artist_listeners_artist_day_user", table_name="daily_artist_listeners")

"""library (playlists, likes, follows, search indexes)

Revision ID: a7e1b0c2d3f4
Revises: 90712dd2ed77
Create Date: 2026-11-26 03:00:00
"""

from __future__ import annotations

revision = "a7e1b0c2d3f4"
down_revision = "90712dd2ed77"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

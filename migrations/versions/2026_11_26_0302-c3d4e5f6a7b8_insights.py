"""insights (analytics and artist statistics)

Revision ID: c3d4e5f6a7b8
Revises: b8f2c1d3e4a5
Create Date: 2026-11-26 03:20:00
"""

from __future__ import annotations

revision = "c3d4e5f6a7b8"
down_revision = "b8f2c1d3e4a5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

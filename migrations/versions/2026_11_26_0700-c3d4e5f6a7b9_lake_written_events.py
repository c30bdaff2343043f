"""events: the events the lake consumer has written, so the lake holds each event once

A JetStream log deduplicates a client's retry only within its duplicate window; a retry after
it (an offline device sending a batch again much later) puts a second copy of its events in
the log. The listening consumer skips it (`counted_events`); the lake consumer now records
what it wrote, in the same transaction as its progress, and skips it too. Both records are
pruned once no copy of their event can reach the log any more (`written_at`, `counted_at`).
Existing lakes: nothing to backfill — the table starts empty, and events written before it
exist once (the database log holds each event once; JetStream's window caught the retries it
could).

Revision ID: c3d4e5f6a7b9
Revises: b2c3d4e5f6a8
Create Date: 2026-11-26 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c3d4e5f6a7b9"
down_revision = "b2c3d4e5f6a8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create lake_written_events."""
    op.create_table(
        "lake_written_events",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "event_id", name=op.f("pk_lake_written_events")),
    )
    with op.batch_alter_table("lake_written_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lake_written_events_written_at"), ["written_at"], unique=False
        )


def downgrade() -> None:
    """Drop lake_written_events."""
    op.drop_table("lake_written_events")

"""events: the database log recognises a retry by (occurred_at, user id, event id)

Keyed by (user id, event id) alone, the log's unique index took random client ids, and every
insert dirtied an index page of its own: on SQLite an append cost 26 µs per event once the log
held 200,000, against 4 µs with time first (events arrive roughly in time order, so new keys
land at the end of the index). A client's retry repeats the whole event, occurred_at included.
An event id sent again with another occurred_at is now logged again; the consumers apply each
(user id, event id) once however often it reaches the log (`first_seen_events`).

Existing rows: occurred_at is read from each event's own body.

Revision ID: d4e5f6a7b8c1
Revises: c3d4e5f6a7b9
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "d4e5f6a7b8c1"
down_revision = "c3d4e5f6a7b9"
branch_labels = None
depends_on = None

_BACKFILL_CHUNK = 5000


def _backfill_occurred_at(connection: sa.Connection) -> None:
    """Set occurred_at of every existing row from its body."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text(
                "UPDATE event_log SET occurred_at = (body::jsonb ->> 'occurred_at')::timestamptz"
            )
        )
        return
    # SQLite: in Python, to the microsecond and in the text form the app's timestamps take.
    after = 0
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT position, body FROM event_log WHERE position > :after "
                "ORDER BY position LIMIT :chunk"
            ),
            {"after": after, "chunk": _BACKFILL_CHUNK},
        ).all()
        if not rows:
            return
        connection.execute(
            sa.text("UPDATE event_log SET occurred_at = :occurred_at WHERE position = :position"),
            [
                {
                    "position": position,
                    "occurred_at": datetime.fromisoformat(json.loads(body)["occurred_at"])
                    .astimezone(UTC)
                    .strftime("%Y-%m-%d %H:%M:%S.%f"),
                }
                for position, body in rows
            ],
        )
        after = rows[-1][0]


def upgrade() -> None:
    """Add event_log.occurred_at and key the log by (occurred_at, user_id, event_id)."""
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True))
    _backfill_occurred_at(op.get_bind())
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.alter_column(
            "occurred_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.drop_constraint("uq_event_log_user_event", type_="unique")
        batch_op.create_unique_constraint(
            "uq_event_log_occurred_user_event", ["occurred_at", "user_id", "event_id"]
        )


def downgrade() -> None:
    """Key the log by (user_id, event_id) again: later copies of an event id are dropped."""
    op.execute(
        "DELETE FROM event_log WHERE position NOT IN "
        "(SELECT MIN(position) FROM event_log GROUP BY user_id, event_id)"
    )
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.drop_constraint("uq_event_log_occurred_user_event", type_="unique")
        batch_op.create_unique_constraint("uq_event_log_user_event", ["user_id", "event_id"])
        batch_op.drop_column("occurred_at")

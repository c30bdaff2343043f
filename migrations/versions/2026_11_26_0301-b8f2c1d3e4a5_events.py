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
    # PostgreSQL: each appended event carries its transaction's id, so consumers can stop
    # before any transaction still in flight (see encore.bus.event_log).
    transaction_id_default: str | sa.TextClause = (
        sa.text("(pg_current_xact_id()::text)::bigint")
        if op.get_bind().dialect.name == "postgresql"
        else "0"
    )
    op.create_table(
        "counted_events",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "event_id", name=op.f("pk_counted_events")),
    )
    with op.batch_alter_table("counted_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_counted_events_counted_at"), ["counted_at"], unique=False
        )

    op.create_table(
        "daily_artist_listeners",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("artist_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("streams", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "artist_id", "user_id", name=op.f("pk_daily_artist_listeners")
        ),
    )
    with op.batch_alter_table("daily_artist_listeners", schema=None) as batch_op:
        batch_op.create_index(
            "ix_daily_artist_listeners_artist_day", ["artist_id", "day"], unique=False
        )

    op.create_table(
        "daily_artist_stats",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("artist_id", sa.Uuid(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("plays", sa.BigInteger(), nullable=False),
        sa.Column("streams", sa.BigInteger(), nullable=False),
        sa.Column("ms_played", sa.BigInteger(), nullable=False),
        sa.Column("skips", sa.BigInteger(), nullable=False),
        sa.Column("likes", sa.BigInteger(), nullable=False),
        sa.Column("unlikes", sa.BigInteger(), nullable=False),
        sa.Column("playlist_adds", sa.BigInteger(), nullable=False),
        sa.Column("flagged_plays", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "artist_id", "country", "device", "source", name=op.f("pk_daily_artist_stats")
        ),
    )
    with op.batch_alter_table("daily_artist_stats", schema=None) as batch_op:
        batch_op.create_index(
            "ix_daily_artist_stats_artist_day", ["artist_id", "day"], unique=False
        )

    op.create_table(
        "daily_track_listeners",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("streams", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "track_id", "user_id", name=op.f("pk_daily_track_listeners")
        ),
    )
    with op.batch_alter_table("daily_track_listeners", schema=None) as batch_op:
        batch_op.create_index(
            "ix_daily_track_listeners_track_day", ["track_id", "day"], unique=False
        )

    op.create_table(
        "daily_track_stats",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("plays", sa.BigInteger(), nullable=False),
        sa.Column("streams", sa.BigInteger(), nullable=False),
        sa.Column("ms_played", sa.BigInteger(), nullable=False),
        sa.Column("skips", sa.BigInteger(), nullable=False),
        sa.Column("likes", sa.BigInteger(), nullable=False),
        sa.Column("unlikes", sa.BigInteger(), nullable=False),
        sa.Column("playlist_adds", sa.BigInteger(), nullable=False),
        sa.Column("flagged_plays", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "track_id", "country", "device", "source", name=op.f("pk_daily_track_stats")
        ),
    )
    with op.batch_alter_table("daily_track_stats", schema=None) as batch_op:
        batch_op.create_index("ix_daily_track_stats_track_day", ["track_id", "day"], unique=False)

    op.create_table(
        "event_consumer_offsets",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name=op.f("pk_event_consumer_offsets")),
    )
    op.create_table(
        "event_log",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "transaction_id", sa.BigInteger(), server_default=transaction_id_default, nullable=False
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_event_log")),
        sa.UniqueConstraint("user_id", "event_id", name="uq_event_log_user_event"),
    )
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_log_transaction_position", ["transaction_id", "position"], unique=False
        )

    op.create_table(
        "listening_history",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("played_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ms_played", sa.BigInteger(), nullable=False),
        sa.Column("context_type", sa.String(length=16), nullable=True),
        sa.Column("context_id", sa.String(length=100), nullable=True),
        sa.Column("device", sa.String(length=16), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("flag", sa.String(length=32), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listening_history")),
        sa.UniqueConstraint("user_id", "event_id", name="uq_listening_history_user_event"),
    )
    with op.batch_alter_table("listening_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_listening_history_track_id"), ["track_id"], unique=False
        )
        batch_op.create_index(
            "ix_listening_history_user_played", ["user_id", "played_at", "id"], unique=False
        )
    for table in ("artists", "tracks"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("stream_count", sa.BigInteger(), server_default="0", nullable=False)
            )


def downgrade() -> None:
    for table in (
        "listening_history",
        "event_log",
        "event_consumer_offsets",
        "daily_track_stats",
        "daily_track_listeners",
        "daily_artist_stats",
        "daily_artist_listeners",
        "counted_events",
    ):
        op.drop_table(table)
    for table in ("tracks", "artists"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("stream_count")

"""recommend (models, interactions, radio, generated playlists)

Revision ID: d4e5f6a7b8c9
Revises: c3d4e5f6a7b8
Create Date: 2026-11-26 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d4e5f6a7b8c9"
down_revision = "c3d4e5f6a7b8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recommend_applied_events",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "event_id", name=op.f("pk_recommend_applied_events")),
    )
    with op.batch_alter_table("recommend_applied_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recommend_applied_events_applied_at"), ["applied_at"], unique=False
        )

    op.create_table(
        "recommend_interactions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("streams", sa.Integer(), nullable=False),
        sa.Column("ms_played", sa.BigInteger(), nullable=False),
        sa.Column("played_share", sa.Float(), nullable=False),
        sa.Column("early_skips", sa.Integer(), nullable=False),
        sa.Column("like_balance", sa.Integer(), nullable=False),
        sa.Column("playlist_adds", sa.Integer(), nullable=False),
        sa.Column("last_played_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "track_id", name=op.f("pk_recommend_interactions")),
    )
    with op.batch_alter_table("recommend_interactions", schema=None) as batch_op:
        batch_op.create_index("ix_recommend_interactions_track", ["track_id"], unique=False)

    op.create_table(
        "radio_stations",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("seed_kind", sa.String(length=16), nullable=False),
        sa.Column("seed_id", sa.Uuid(), nullable=False),
        sa.Column("served", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_radio_stations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_radio_stations")),
    )
    with op.batch_alter_table("radio_stations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_radio_stations_user_id"), ["user_id"], unique=False)

    op.create_table(
        "radio_station_tracks",
        sa.Column("station_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("artist_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["radio_stations.id"],
            name=op.f("fk_radio_station_tracks_station_id_radio_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", "position", name=op.f("pk_radio_station_tracks")),
    )

    op.create_table(
        "radio_feedback",
        sa.Column("station_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("skips", sa.Integer(), nullable=False),
        sa.Column("likes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("station_id", "track_id", name=op.f("pk_radio_feedback")),
    )


def downgrade() -> None:
    op.drop_table("radio_feedback")
    op.drop_table("radio_station_tracks")
    with op.batch_alter_table("radio_stations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_radio_stations_user_id"))
    op.drop_table("radio_stations")
    with op.batch_alter_table("recommend_interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_recommend_interactions_track")
    op.drop_table("recommend_interactions")
    with op.batch_alter_table("recommend_applied_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recommend_applied_events_applied_at"))
    op.drop_table("recommend_applied_events")

"""Recommendation tables: per-listener track interactions, applied event ids, radio stations,
generated playlists."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base, UUIDPrimaryKey, utcnow


class RecommendAppliedEvent(Base):
    """An event the recommend consumer has applied: a redelivery of it changes nothing."""

    __tablename__ = "recommend_applied_events"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(index=True)


class TrackInteraction(Base):
    """What one listener did with one track, summed over all events: training input."""

    __tablename__ = "recommend_interactions"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    track_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # Plays of 30 s or more.
    streams: Mapped[int] = mapped_column(Integer, default=0)
    ms_played: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sum over plays of the share of the track heard (0..1 each): rewards finishing a track.
    played_share: Mapped[float] = mapped_column(Float, default=0.0)
    # Plays ended before 30 s: weak evidence the listener does not want the track.
    early_skips: Mapped[int] = mapped_column(Integer, default=0)
    # Likes minus unlikes: positive means liked now.
    like_balance: Mapped[int] = mapped_column(Integer, default=0)
    playlist_adds: Mapped[int] = mapped_column(Integer, default=0)
    last_played_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_recommend_interactions_track", "track_id"),)


class RadioStation(UUIDPrimaryKey, Base):
    """A listener's radio session from one seed; the tracks it played are its history."""

    __tablename__ = "radio_stations"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    seed_kind: Mapped[str] = mapped_column(String(16))
    seed_id: Mapped[uuid.UUID] = mapped_column()
    served: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RadioStationTrack(Base):
    """A track a station served, in order: no repeats within the station."""

    __tablename__ = "radio_station_tracks"

    station_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("radio_stations.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[uuid.UUID] = mapped_column()
    artist_id: Mapped[uuid.UUID | None] = mapped_column()


class RadioFeedback(Base):
    """Skips and likes of a track heard on a station (events with context type radio)."""

    __tablename__ = "radio_feedback"

    station_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    track_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    skips: Mapped[int] = mapped_column(Integer, default=0)
    likes: Mapped[int] = mapped_column(Integer, default=0)


class GeneratedPlaylist(Base):
    """A playlist Encore generates for one listener (Discover Weekly, Daily Mix n): which
    library playlist fills that slot, so every refresh replaces the same playlist's tracks."""

    __tablename__ = "recommend_generated_playlists"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # "discover_weekly", "daily_mix_1" … "daily_mix_3".
    slot: Mapped[str] = mapped_column(String(32), primary_key=True)
    playlist_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("playlists.id", ondelete="CASCADE"), unique=True
    )
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)

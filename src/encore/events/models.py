"""Events tables: listening history, the applied-event record and daily rollups."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base, UUIDPrimaryKey


class CountedEvent(Base):
    """An event the listening consumer has applied: a redelivery of it changes nothing."""

    __tablename__ = "counted_events"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    counted_at: Mapped[datetime] = mapped_column(index=True)


class LakeWrittenEvent(Base):
    """An event the lake consumer has written: a second copy of it in the log (a client's
    retry after JetStream's duplicate window) is left out of the lake."""

    __tablename__ = "lake_written_events"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    written_at: Mapped[datetime] = mapped_column(index=True)


class ListeningHistoryEntry(UUIDPrimaryKey, Base):
    """A play of 30 s or more: a stream, or a play flagged as abuse and not counted."""

    __tablename__ = "listening_history"

    user_id: Mapped[uuid.UUID] = mapped_column()
    event_id: Mapped[uuid.UUID] = mapped_column()
    track_id: Mapped[uuid.UUID] = mapped_column(index=True)
    # When the play ended (the end event's occurred_at) and when it began (minus ms played).
    played_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime] = mapped_column()
    ms_played: Mapped[int] = mapped_column(BigInteger)
    context_type: Mapped[str | None] = mapped_column(String(16))
    context_id: Mapped[str | None] = mapped_column(String(100))
    device: Mapped[str | None] = mapped_column(String(16))
    country: Mapped[str | None] = mapped_column(String(2))
    # Why the play is not counted (e.g. "overlapping_play"); None for a stream that counts.
    flag: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        UniqueConstraint("user_id", "event_id", name="uq_listening_history_user_event"),
        Index("ix_listening_history_user_played", "user_id", "played_at", "id"),
    )


class _DailyCounters:
    """The counters every daily rollup row carries."""

    plays: Mapped[int] = mapped_column(BigInteger, default=0)
    streams: Mapped[int] = mapped_column(BigInteger, default=0)
    ms_played: Mapped[int] = mapped_column(BigInteger, default=0)
    skips: Mapped[int] = mapped_column(BigInteger, default=0)
    likes: Mapped[int] = mapped_column(BigInteger, default=0)
    unlikes: Mapped[int] = mapped_column(BigInteger, default=0)
    playlist_adds: Mapped[int] = mapped_column(BigInteger, default=0)
    flagged_plays: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyTrackStats(_DailyCounters, Base):
    """A track's counters for one UTC day, split by country, device type and source."""

    __tablename__ = "daily_track_stats"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    track_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # "" when the client did not say: a primary key column cannot be NULL.
    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    device: Mapped[str] = mapped_column(String(16), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)

    __table_args__ = (Index("ix_daily_track_stats_track_day", "track_id", "day"),)


class DailyArtistStats(_DailyCounters, Base):
    """An artist's counters (over their tracks) for one UTC day, split like the track's."""

    __tablename__ = "daily_artist_stats"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    artist_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    device: Mapped[str] = mapped_column(String(16), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)

    __table_args__ = (Index("ix_daily_artist_stats_artist_day", "artist_id", "day"),)


class DailyTrackListener(Base):
    """A listener who streamed a track on a UTC day: unique listeners over any window."""

    __tablename__ = "daily_track_listeners"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    track_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    streams: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_daily_track_listeners_track_day", "track_id", "day"),
        # Unique listeners over a window counted from the index alone, in listener order: no
        # sort for the DISTINCT (the day filter is checked within the index).
        Index("ix_daily_track_listeners_track_user_day", "track_id", "user_id", "day"),
    )


class DailyArtistListener(Base):
    """A listener who streamed an artist on a UTC day."""

    __tablename__ = "daily_artist_listeners"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    artist_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    streams: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_daily_artist_listeners_artist_day", "artist_id", "day"),
        Index("ix_daily_artist_listeners_artist_user_day", "artist_id", "user_id", "day"),
    )


class ListenerDay(Base):
    """A UTC day on which an account played anything (any play event, counted or not)."""

    __tablename__ = "listener_days"

    # The primary key in listener order: an account's days before or after one are index seeks.
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class DailyActiveListeners(Base):
    """Accounts active on a UTC day, counted by the days since each was active before.

    `days_since_active` is 0 for an account's first day ever and at most
    `encore.events.activity.ACTIVE_GAP_CAP_DAYS`. An account is active somewhere in a window
    [first, last] exactly once on its first active day there: the row of a day d with a gap
    above d - first. So DAU, WAU, MAU, new listeners and a window's listeners are sums over
    these rows, whatever the window.
    """

    __tablename__ = "daily_active_listeners"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    days_since_active: Mapped[int] = mapped_column(primary_key=True)
    listeners: Mapped[int] = mapped_column(BigInteger, default=0)


class ListeningSession(UUIDPrimaryKey, Base):
    """A run of an account's plays with no more than 30 minutes between one and the next."""

    __tablename__ = "listening_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column()
    # The first play's start and the last play's end.
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    plays: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        # The sessions a new play may join end at most 30 minutes before it starts: a seek.
        Index("ix_listening_sessions_user_ended", "user_id", "ended_at"),
    )


class DailyListeningStats(Base):
    """A UTC day's listening: the sessions that started on it (how many, their summed length,
    their play events) and the streams counted on it (over all tracks)."""

    __tablename__ = "daily_listening_stats"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger, default=0)
    # Microseconds: event times have them, so sums stay exact.
    session_us: Mapped[int] = mapped_column(BigInteger, default=0)
    session_plays: Mapped[int] = mapped_column(BigInteger, default=0)
    streams: Mapped[int] = mapped_column(BigInteger, default=0)


class ListenerCohortActivity(Base):
    """Accounts of a cohort (the week or month of their first play) active in a later period."""

    __tablename__ = "listener_cohort_activity"

    # "week" (starting Mondays) or "month".
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    cohort: Mapped[date] = mapped_column(Date, primary_key=True)
    active: Mapped[date] = mapped_column(Date, primary_key=True)
    listeners: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyArtistListenerGaps(Base):
    """An artist's listeners on a UTC day, counted by the days since each streamed it before.

    `days_since_listened` is 0 for a listener's first day with the artist and at most
    `encore.events.activity.ACTIVE_GAP_CAP_DAYS`. As with `DailyActiveListeners`, the unique
    listeners of any window (or bucket) [first, last] are the rows of its days d with a gap
    above d - first: a few thousand rows for the busiest artist, not one per listener and day.
    """

    __tablename__ = "daily_artist_listener_gaps"

    artist_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    days_since_listened: Mapped[int] = mapped_column(primary_key=True)
    listeners: Mapped[int] = mapped_column(BigInteger, default=0)

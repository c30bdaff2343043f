"""Insights as the API answers them: artist and track statistics, engagement, charts, royalties."""

from __future__ import annotations

import enum
import uuid
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class Granularity(enum.StrEnum):
    """How a statistics time series is bucketed."""

    day = "day"
    week = "week"
    month = "month"


class CohortPeriod(enum.StrEnum):
    """How retention cohorts are formed."""

    week = "week"
    month = "month"


class ChartPeriod(enum.StrEnum):
    """The span a chart covers, ending on its date."""

    day = "day"
    week = "week"


class StatsTotals(BaseModel):
    """Counters over a window (or one bucket of it)."""

    streams: int = Field(description="Plays heard 30 s or more, abuse excluded.")
    listeners: int = Field(description="Distinct accounts that streamed (exact).")
    ms_played: int = Field(description="Milliseconds listened, abuse excluded.")
    plays: int = Field(description="Plays started.")
    skips: int
    saves: int = Field(description="Likes.")
    unsaves: int = Field(description="Likes taken back.")
    playlist_adds: int
    skip_rate: float | None = Field(description="skips / plays started; null without plays.")
    flagged_plays: int = Field(description="Plays flagged as abuse (not counted).")


class StatsBucket(StatsTotals):
    """The counters of one day, week (from Monday) or month of the window."""

    start: date


class SplitRow(BaseModel):
    """Counters for one value of a dimension (country, device type or source)."""

    value: str = Field(description='"" when clients did not say.')
    streams: int
    ms_played: int
    plays: int
    skips: int


class TopTrack(BaseModel):
    """A track ranked by streams."""

    track_id: uuid.UUID
    title: str | None
    streams: int
    ms_played: int


class EntityStats(BaseModel):
    """An artist's or a track's statistics over a window."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str | None
    from_date: date = Field(serialization_alias="from")
    to_date: date = Field(serialization_alias="to")
    granularity: Granularity
    totals: StatsTotals
    series: list[StatsBucket]
    by_country: list[SplitRow]
    by_device: list[SplitRow]
    by_source: list[SplitRow]
    top_tracks: list[TopTrack] = Field(default_factory=list)


class EngagementDay(BaseModel):
    """Engagement figures of one UTC day."""

    day: date
    dau: int = Field(description="Accounts with a play event that day.")
    wau: int = Field(description="… in the 7 days ending that day.")
    mau: int = Field(description="… in the 30 days ending that day.")
    dau_mau: float | None
    new_listeners: int = Field(description="Active that day for the first time ever.")
    returning_listeners: int
    sessions: int = Field(description="Sessions starting that day (split at 30 min idle).")
    avg_session_seconds: float | None
    streams: int
    streams_per_listener: float | None = Field(description="streams / dau.")


class Engagement(BaseModel):
    """Engagement per day over a window, and over the whole window."""

    from_date: date = Field(serialization_alias="from")
    to_date: date = Field(serialization_alias="to")
    days: list[EngagementDay]
    listeners: int = Field(description="Distinct accounts active in the window.")
    sessions: int
    avg_session_seconds: float | None
    streams: int
    streams_per_listener: float | None = Field(description="streams / listeners in the window.")


class CohortWeek(BaseModel):
    """How many of a cohort were active `offset` periods after their first."""

    offset: int
    active: int
    rate: float


class Cohort(BaseModel):
    """Accounts whose first play fell in one period."""

    start: date
    size: int
    retention: list[CohortWeek]


class Retention(BaseModel):
    """A cohort retention table."""

    cohort: CohortPeriod
    cohorts: list[Cohort]


class ChartEntry(BaseModel):
    """A track or an artist on a chart."""

    rank: int
    id: uuid.UUID
    name: str | None
    streams: int


class Charts(BaseModel):
    """Top tracks and artists for a day or a week."""

    date: date
    period: ChartPeriod
    country: str | None
    genre: str | None
    tracks: list[ChartEntry]
    artists: list[ChartEntry]


class RoyaltyRow(BaseModel):
    """An artist's pro-rata share of a month's streams."""

    artist_id: uuid.UUID
    name: str | None
    streams: int
    share: float
    payout: Decimal | None = Field(description="share × pool, when a pool was given.")


class RoyaltyReport(BaseModel):
    """Pro-rata shares of a month's streams (abuse excluded)."""

    month: str
    total_streams: int
    pool: Decimal | None
    artists: list[RoyaltyRow]


class LakeQuery(BaseModel):
    """A read-only SQL query over the lake's views."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=20_000)

"""Insights served from the daily rollups: artist and track statistics, charts, royalties.

The rollup tables belong to the events domain, which fills them; they exist for this domain
to read, so these queries read the events models directly (the agreed exception to "another
domain only through its service"), and so do engagement and retention, from the listener
activity rollups (`encore.events.activity`). Analysts' own SQL reads the lake
(`encore.analytics.lake_queries`).
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from encore.analytics.schemas import (
    ChartEntry,
    ChartPeriod,
    Charts,
    Cohort,
    CohortPeriod,
    CohortWeek,
    Engagement,
    EngagementDay,
    EntityStats,
    Granularity,
    Retention,
    RoyaltyReport,
    RoyaltyRow,
    SplitRow,
    StatsBucket,
    StatsTotals,
    TopTrack,
)
from encore.catalog import service as catalog_service
from encore.events.activity import ACTIVE_GAP_CAP_DAYS, FIRST_ACTIVE_DAY
from encore.events.models import (
    DailyActiveListeners,
    DailyArtistListener,
    DailyArtistListenerGaps,
    DailyArtistStats,
    DailyListeningStats,
    DailyTrackListener,
    DailyTrackStats,
    ListenerCohortActivity,
)
from encore.problems import InvalidInput, NotFound

MAX_WINDOW_DAYS = 731
"""Longest statistics window (two years, a leap day included)."""
ENGAGEMENT_MAX_DAYS = 366
"""Longest engagement window."""
# Listener gaps are stored up to ACTIVE_GAP_CAP_DAYS: windows up to that long count exactly.
assert max(MAX_WINDOW_DAYS, ENGAGEMENT_MAX_DAYS) <= ACTIVE_GAP_CAP_DAYS
MAX_RETENTION_COHORTS = 104
_WAU_DAYS = 7
_MAU_DAYS = 30
TOP_TRACKS = 10
CHART_LENGTH = 50
_GENRE_SCAN_CHUNK = 500

_COUNTERS = ("plays", "streams", "ms_played", "skips", "likes", "unlikes", "playlist_adds")
_COUNTERS_WITH_FLAGS = (*_COUNTERS, "flagged_plays")

_StatsModel = type[DailyArtistStats] | type[DailyTrackStats]
_ListenerModel = type[DailyArtistListener] | type[DailyTrackListener]


def check_window(from_date: date, to_date: date, *, max_days: int = MAX_WINDOW_DAYS) -> None:
    """Refuse a window that ends before it starts or spans more than `max_days` days (422)."""
    if from_date > to_date:
        raise InvalidInput(f"from ({from_date}) is after to ({to_date})")
    days = (to_date - from_date).days + 1
    if days > max_days:
        raise InvalidInput(f"the window spans {days} days; at most {max_days} are allowed")


def bucket_start(day: date, granularity: Granularity) -> date:
    """The first day of the day, week (Monday) or month bucket holding `day`."""
    if granularity == Granularity.week:
        return day - timedelta(days=day.weekday())
    if granularity == Granularity.month:
        return day.replace(day=1)
    return day


def window_buckets(from_date: date, to_date: date, granularity: Granularity) -> list[date]:
    """Each bucket's first day within the window (the first one clipped to `from_date`)."""
    starts: list[date] = []
    day = from_date
    while day <= to_date:
        start = max(bucket_start(day, granularity), from_date)
        if not starts or starts[-1] != start:
            starts.append(start)
        day += timedelta(days=1)
    return starts


def _skip_rate(skips: int, plays: int) -> float | None:
    return skips / plays if plays else None


def _totals(counters: dict[str, int], listeners: int) -> dict[str, Any]:
    return {
        "streams": counters["streams"],
        "listeners": listeners,
        "ms_played": counters["ms_played"],
        "plays": counters["plays"],
        "skips": counters["skips"],
        "saves": counters["likes"],
        "unsaves": counters["unlikes"],
        "playlist_adds": counters["playlist_adds"],
        "skip_rate": _skip_rate(counters["skips"], counters["plays"]),
        "flagged_plays": counters["flagged_plays"],
    }


@dataclass(frozen=True)
class _Rollups:
    stats: _StatsModel
    listeners: _ListenerModel
    entity_column: str
    # Listeners by days since each last streamed the entity (kept for artists).
    listener_gaps: type[DailyArtistListenerGaps] | None = None


_ARTIST = _Rollups(DailyArtistStats, DailyArtistListener, "artist_id", DailyArtistListenerGaps)
_TRACK = _Rollups(DailyTrackStats, DailyTrackListener, "track_id")


async def _listeners_from_gaps(
    db_session: AsyncSession,
    gaps: type[DailyArtistListenerGaps],
    entity_id: uuid.UUID,
    from_date: date,
    to_date: date,
    starts: Sequence[date],
) -> tuple[int, list[int]]:
    """Unique listeners of the window and of each bucket (starting on `starts`): each
    listener counts once, on the first day it streamed within them."""
    rows = await db_session.execute(
        select(gaps.day, gaps.days_since_listened, gaps.listeners).where(
            gaps.artist_id == entity_id, gaps.day >= from_date, gaps.day <= to_date
        )
    )
    window = 0
    per_bucket = [0] * len(starts)
    for day, gap, listeners in rows.all():
        position = bisect_right(starts, day) - 1
        if gap == FIRST_ACTIVE_DAY or gap > (day - from_date).days:
            window += listeners
        if gap == FIRST_ACTIVE_DAY or gap > (day - starts[position]).days:
            per_bucket[position] += listeners
    return window, per_bucket


def _listener_days(
    db_session: AsyncSession, listeners: _ListenerModel, from_date: date, to_date: date
) -> tuple[Any, Any]:
    """The window's condition for counting distinct listeners of one entity."""
    day: Any = listeners.day
    if db_session.get_bind().dialect.name == "sqlite":
        # Left visible, SQLite reads the (entity, day) index and sorts every row for the
        # DISTINCT; hidden, it reads the (entity, user, day) index in listener order instead
        # (ix_daily_*_listeners_*_user_day, on the events tables) and sorts nothing.
        day = func.coalesce(listeners.day, listeners.day)
    return day >= from_date, day <= to_date


def _sums(model: _StatsModel, names: Sequence[str] = _COUNTERS_WITH_FLAGS) -> list[Any]:
    return [func.coalesce(func.sum(getattr(model, name)), 0).label(name) for name in names]


async def _listeners_from_rows(
    db_session: AsyncSession,
    rollups: _Rollups,
    entity_id: uuid.UUID,
    from_date: date,
    to_date: date,
    granularity: Granularity,
    index_of: dict[date, int],
) -> tuple[int, list[int]]:
    """Unique listeners of the window and of each bucket, counted over the listener rows."""
    listeners = rollups.listeners
    listener_entity = getattr(listeners, rollups.entity_column)
    listener_window = (
        listener_entity == entity_id,
        listeners.day >= from_date,
        listeners.day <= to_date,
    )
    distinct_users = func.count(func.distinct(listeners.user_id))
    window_listeners = int(
        await db_session.scalar(
            select(distinct_users).where(
                listener_entity == entity_id,
                *_listener_days(db_session, listeners, from_date, to_date),
            )
        )
        or 0
    )
    # The bucket of a listener row as an index: a CASE over the bucket starts reads the same
    # on SQLite and PostgreSQL, where date arithmetic does not. Within one day a listener has
    # one row, so a day's listeners are its rows: no DISTINCT needed.
    if granularity == Granularity.day:
        bucket_column: Any = listeners.day
        distinct_users = func.count()
    else:
        bucket_column = case(
            *[(listeners.day >= start, n) for start, n in reversed(list(index_of.items()))],
            else_=0,
        )
    bucket_listeners = [0] * len(index_of)
    rows = await db_session.execute(
        select(bucket_column.label("bucket"), distinct_users.label("users"))
        .where(*listener_window)
        .group_by(bucket_column)
    )
    for bucket_key, users in rows.all():
        position = index_of[bucket_key] if granularity == Granularity.day else int(bucket_key)
        bucket_listeners[position] = int(users)
    return window_listeners, bucket_listeners


async def _entity_stats(
    db_session: AsyncSession,
    rollups: _Rollups,
    entity_id: uuid.UUID,
    from_date: date,
    to_date: date,
    granularity: Granularity,
) -> dict[str, Any]:
    stats = rollups.stats
    entity = getattr(stats, rollups.entity_column)
    in_window = (entity == entity_id, stats.day >= from_date, stats.day <= to_date)
    starts = window_buckets(from_date, to_date, granularity)
    per_bucket: list[dict[str, int]] = [dict.fromkeys(_COUNTERS_WITH_FLAGS, 0) for _ in starts]
    index_of = {start: number for number, start in enumerate(starts)}
    daily = await db_session.execute(
        select(stats.day, *_sums(stats)).where(*in_window).group_by(stats.day)
    )
    for row in daily.mappings():
        bucket = per_bucket[index_of[max(bucket_start(row["day"], granularity), from_date)]]
        for name in _COUNTERS_WITH_FLAGS:
            bucket[name] += int(row[name])
    total = {name: sum(b[name] for b in per_bucket) for name in _COUNTERS_WITH_FLAGS}

    if rollups.listener_gaps is not None:
        window_listeners, bucket_listeners = await _listeners_from_gaps(
            db_session, rollups.listener_gaps, entity_id, from_date, to_date, starts
        )
    else:
        window_listeners, bucket_listeners = await _listeners_from_rows(
            db_session, rollups, entity_id, from_date, to_date, granularity, index_of
        )

    splits: dict[str, dict[str, dict[str, int]]] = {
        dimension: defaultdict(lambda: dict.fromkeys(("streams", "ms_played", "plays", "skips"), 0))
        for dimension in ("country", "device", "source")
    }
    split_rows = await db_session.execute(
        select(
            stats.country,
            stats.device,
            stats.source,
            *_sums(stats, ("streams", "ms_played", "plays", "skips")),
        )
        .where(*in_window)
        .group_by(stats.country, stats.device, stats.source)
    )
    for row in split_rows.mappings():
        for dimension in ("country", "device", "source"):
            counters = splits[dimension][row[dimension]]
            for name in ("streams", "ms_played", "plays", "skips"):
                counters[name] += int(row[name])

    def split_list(dimension: str) -> list[SplitRow]:
        return [
            SplitRow(value=value, **counters)
            for value, counters in sorted(
                splits[dimension].items(), key=lambda item: (-item[1]["streams"], item[0])
            )
        ]

    return {
        "id": entity_id,
        "from_date": from_date,
        "to_date": to_date,
        "granularity": granularity,
        "totals": StatsTotals(**_totals(total, window_listeners)),
        "series": [
            StatsBucket(start=start, **_totals(per_bucket[n], bucket_listeners[n]))
            for n, start in enumerate(starts)
        ],
        "by_country": split_list("country"),
        "by_device": split_list("device"),
        "by_source": split_list("source"),
    }


async def _top_tracks(
    db_session: AsyncSession,
    track_ids: Sequence[uuid.UUID],
    from_date: date,
    to_date: date,
    limit: int,
) -> list[TopTrack]:
    if not track_ids:
        return []
    ranked = (
        await db_session.execute(
            select(DailyTrackStats.track_id, *_sums(DailyTrackStats, ("streams", "ms_played")))
            .where(
                DailyTrackStats.track_id.in_(list(track_ids)),
                DailyTrackStats.day >= from_date,
                DailyTrackStats.day <= to_date,
            )
            .group_by(DailyTrackStats.track_id)
            .order_by(func.sum(DailyTrackStats.streams).desc(), DailyTrackStats.track_id)
            .limit(limit)
        )
    ).all()
    # Listeners per top track are left out: for a popular artist they cost more than all of
    # the rest of the statistics (a DISTINCT over every listener row of each track).
    top_ids = [row.track_id for row in ranked if row.streams > 0]
    if not top_ids:
        return []
    tracks = await catalog_service.get_tracks(db_session=db_session, track_ids=top_ids)
    return [
        TopTrack(
            track_id=row.track_id,
            title=tracks[row.track_id].title if row.track_id in tracks else None,
            streams=int(row.streams),
            ms_played=int(row.ms_played),
        )
        for row in ranked
        if row.streams > 0
    ]


async def get_owned_artist_name(
    *, db_session: AsyncSession, artist_id: uuid.UUID, user_id: uuid.UUID | None, admin: bool
) -> str:
    """The artist's name if the account manages it (or is an admin); NotFound otherwise."""
    if admin:
        artists = await catalog_service.get_artists(db_session=db_session, artist_ids=[artist_id])
        if artist_id in artists:
            return artists[artist_id].name
    elif user_id is not None:
        owned = await catalog_service.get_owned_artist(
            db_session=db_session, artist_id=artist_id, user_id=user_id
        )
        if owned is not None:
            return owned.name
    raise NotFound(f"no artist with id {artist_id}")


async def get_owned_track_title(
    *, db_session: AsyncSession, track_id: uuid.UUID, user_id: uuid.UUID | None, admin: bool
) -> str:
    """The track's title if the account manages one of its primary artists; NotFound otherwise."""
    facts = await catalog_service.get_track_stream_facts(
        db_session=db_session, track_ids=[track_id]
    )
    if track_id in facts and (admin or user_id is not None):
        owned = admin
        for artist_id in facts[track_id].primary_artist_ids:
            if owned:
                break
            owned = (
                await catalog_service.get_owned_artist(
                    db_session=db_session, artist_id=artist_id, user_id=user_id or uuid.UUID(int=0)
                )
                is not None
            )
        if owned:
            tracks = await catalog_service.get_tracks(db_session=db_session, track_ids=[track_id])
            return tracks[track_id].title
    raise NotFound(f"no track with id {track_id}")


async def artist_stats(
    *,
    db_session: AsyncSession,
    artist_id: uuid.UUID,
    name: str | None,
    from_date: date,
    to_date: date,
    granularity: Granularity,
    top_tracks: int = TOP_TRACKS,
) -> EntityStats:
    """An artist's statistics over a window, with its top tracks."""
    check_window(from_date, to_date)
    figures = await _entity_stats(db_session, _ARTIST, artist_id, from_date, to_date, granularity)
    track_ids = await catalog_service.list_primary_track_ids(
        db_session=db_session, artist_id=artist_id
    )
    top = await _top_tracks(db_session, track_ids, from_date, to_date, top_tracks)
    return EntityStats(name=name, top_tracks=top, **figures)


async def track_stats(
    *,
    db_session: AsyncSession,
    track_id: uuid.UUID,
    name: str | None,
    from_date: date,
    to_date: date,
    granularity: Granularity,
) -> EntityStats:
    """A track's statistics over a window."""
    check_window(from_date, to_date)
    figures = await _entity_stats(db_session, _TRACK, track_id, from_date, to_date, granularity)
    return EntityStats(name=name, **figures)


async def _ranked_tracks(
    db_session: AsyncSession, from_date: date, to_date: date, country: str | None
) -> list[tuple[uuid.UUID, int]]:
    conditions = [DailyTrackStats.day >= from_date, DailyTrackStats.day <= to_date]
    if country is not None:
        conditions.append(DailyTrackStats.country == country)
    streams = func.sum(DailyTrackStats.streams)
    rows = await db_session.execute(
        select(DailyTrackStats.track_id, streams)
        .where(*conditions)
        .group_by(DailyTrackStats.track_id)
        .having(streams > 0)
        .order_by(streams.desc(), DailyTrackStats.track_id)
    )
    return [(track_id, int(count)) for track_id, count in rows.all()]


async def charts(
    *,
    db_session: AsyncSession,
    day: date,
    period: ChartPeriod,
    country: str | None,
    genre: str | None,
    limit: int = CHART_LENGTH,
) -> Charts:
    """Top tracks and artists by streams for a day, or the week ending on it."""
    from_date = day - timedelta(days=6) if period == ChartPeriod.week else day
    ranked = await _ranked_tracks(db_session, from_date, day, country)
    if genre is not None:
        # Only the tracks of the genre count, for the artists' chart too.
        kept: list[tuple[uuid.UUID, int]] = []
        for offset in range(0, len(ranked), _GENRE_SCAN_CHUNK):
            chunk = ranked[offset : offset + _GENRE_SCAN_CHUNK]
            tagged = await catalog_service.tracks_in_genre(
                db_session=db_session, genre=genre, track_ids=[t for t, _ in chunk]
            )
            kept.extend(item for item in chunk if item[0] in tagged)
        ranked = kept
    if genre is None and country is None:
        rows = await db_session.execute(
            select(DailyArtistStats.artist_id, func.sum(DailyArtistStats.streams))
            .where(DailyArtistStats.day >= from_date, DailyArtistStats.day <= day)
            .group_by(DailyArtistStats.artist_id)
        )
        artist_streams = {artist: int(count or 0) for artist, count in rows.all()}
    else:
        conditions = [DailyArtistStats.day >= from_date, DailyArtistStats.day <= day]
        if country is not None:
            conditions.append(DailyArtistStats.country == country)
        if genre is None:
            rows = await db_session.execute(
                select(DailyArtistStats.artist_id, func.sum(DailyArtistStats.streams))
                .where(*conditions)
                .group_by(DailyArtistStats.artist_id)
            )
            artist_streams = {artist: int(count or 0) for artist, count in rows.all()}
        else:
            facts = await catalog_service.get_track_stream_facts(
                db_session=db_session, track_ids=[t for t, _ in ranked]
            )
            artist_streams = defaultdict(int)
            for track_id, streams in ranked:
                for artist in facts[track_id].primary_artist_ids if track_id in facts else ():
                    artist_streams[artist] += streams
    top_artists = sorted(
        ((a, s) for a, s in artist_streams.items() if s > 0), key=lambda item: (-item[1], item[0])
    )[:limit]
    top_tracks = ranked[:limit]
    tracks = await catalog_service.get_tracks(
        db_session=db_session, track_ids=[t for t, _ in top_tracks]
    )
    artists = await catalog_service.get_artists(
        db_session=db_session, artist_ids=[a for a, _ in top_artists]
    )
    return Charts(
        date=day,
        period=period,
        country=country,
        genre=genre,
        tracks=[
            ChartEntry(
                rank=rank,
                id=track_id,
                name=tracks[track_id].title if track_id in tracks else None,
                streams=streams,
            )
            for rank, (track_id, streams) in enumerate(top_tracks, start=1)
        ],
        artists=[
            ChartEntry(
                rank=rank,
                id=artist_id,
                name=artists[artist_id].name if artist_id in artists else None,
                streams=streams,
            )
            for rank, (artist_id, streams) in enumerate(top_artists, start=1)
        ],
    )


def parse_month(month: str) -> tuple[date, date]:
    """The first and last day of a `YYYY-MM` month; InvalidInput for anything else."""
    try:
        year_text, month_text = month.split("-")
        if len(year_text) != 4 or len(month_text) != 2:
            raise ValueError(month)
        first = date(int(year_text), int(month_text), 1)
    except ValueError:
        raise InvalidInput(f"month must be YYYY-MM, not {month!r}") from None
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


async def royalties(*, db_session: AsyncSession, month: str, pool: Decimal | None) -> RoyaltyReport:
    """Each artist's pro-rata share of the month's counted streams (flagged plays excluded)."""
    first, last = parse_month(month)
    streams = func.sum(DailyArtistStats.streams)
    rows = (
        await db_session.execute(
            select(DailyArtistStats.artist_id, streams)
            .where(DailyArtistStats.day >= first, DailyArtistStats.day <= last)
            .group_by(DailyArtistStats.artist_id)
            .having(streams > 0)
        )
    ).all()
    counted = sorted(((a, int(s)) for a, s in rows), key=lambda item: (-item[1], item[0]))
    # A track with two primary artists counts for each: shares are of the artists' streams.
    total = sum(s for _, s in counted)
    names = await catalog_service.get_artists(
        db_session=db_session, artist_ids=[a for a, _ in counted]
    )
    return RoyaltyReport(
        month=f"{first:%Y-%m}",
        total_streams=total,
        pool=pool,
        artists=[
            RoyaltyRow(
                artist_id=artist_id,
                name=names[artist_id].name if artist_id in names else None,
                streams=count,
                share=count / total,
                payout=(pool * count / total).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
                if pool is not None
                else None,
            )
            for artist_id, count in counted
        ],
    )


async def track_daily_streams(
    *, db_session: AsyncSession, track_ids: Sequence[uuid.UUID], from_date: date, to_date: date
) -> dict[uuid.UUID, dict[date, int]]:
    """Counted streams per UTC day of each of these tracks over the window."""
    if not track_ids:
        return {}
    rows = await db_session.execute(
        select(DailyTrackStats.track_id, DailyTrackStats.day, func.sum(DailyTrackStats.streams))
        .where(
            DailyTrackStats.track_id.in_(list(track_ids)),
            DailyTrackStats.day >= from_date,
            DailyTrackStats.day <= to_date,
        )
        .group_by(DailyTrackStats.track_id, DailyTrackStats.day)
    )
    series: dict[uuid.UUID, dict[date, int]] = defaultdict(dict)
    for track_id, day, streams in rows.all():
        series[track_id][day] = int(streams or 0)
    return dict(series)


def _first_active_within(hist: Sequence[int], reach: int) -> list[int]:
    """For k = 0..reach: the day's active accounts not active in the k days before it.

    `hist[g]` counts the day's accounts by days since last active (0: first day ever; the
    last slot holds every gap beyond `reach`).
    """
    beyond = [0] * (reach + 1)
    running = 0
    for gap in range(reach, -1, -1):
        running += hist[gap + 1]
        beyond[gap] = running
    return [hist[FIRST_ACTIVE_DAY] + above for above in beyond]


async def engagement(*, db_session: AsyncSession, from_date: date, to_date: date) -> Engagement:
    """Engagement per day and over the window, from the listener activity and stream rollups."""
    check_window(from_date, to_date, max_days=ENGAGEMENT_MAX_DAYS)
    window_days = (to_date - from_date).days + 1
    reach = max(window_days, _MAU_DAYS) - 1
    lookback = from_date - timedelta(days=_MAU_DAYS - 1)
    rows = await db_session.execute(
        select(
            DailyActiveListeners.day,
            DailyActiveListeners.days_since_active,
            DailyActiveListeners.listeners,
        ).where(DailyActiveListeners.day >= lookback, DailyActiveListeners.day <= to_date)
    )
    histograms: dict[date, list[int]] = defaultdict(lambda: [0] * (reach + 2))
    for day, gap, listeners in rows.all():
        histograms[day][min(gap, reach + 1)] += int(listeners)
    empty = [0] * (reach + 1)
    first_within = {day: _first_active_within(hist, reach) for day, hist in histograms.items()}

    def listeners_between(first: date, last: date) -> int:
        # An account counts once, on its first active day in the window: the day's accounts
        # not active in the days of the window before it.
        return sum(
            first_within.get(first + timedelta(days=n), empty)[n]
            for n in range((last - first).days + 1)
        )

    session_rows = await db_session.execute(
        select(
            DailyListeningStats.day,
            DailyListeningStats.sessions,
            DailyListeningStats.session_us,
            DailyListeningStats.streams,
        ).where(DailyListeningStats.day >= from_date, DailyListeningStats.day <= to_date)
    )
    sessions: dict[date, tuple[int, int]] = {}
    streams: dict[date, int] = {}
    for day, count, us, day_streams in session_rows.all():
        sessions[day] = (int(count), int(us))
        streams[day] = int(day_streams)
    days = []
    for offset in range(window_days):
        day = from_date + timedelta(days=offset)
        dau = first_within.get(day, empty)[0]
        new = histograms[day][FIRST_ACTIVE_DAY] if day in histograms else 0
        mau = listeners_between(day - timedelta(days=_MAU_DAYS - 1), day)
        count, us = sessions.get(day, (0, 0))
        day_streams = streams.get(day, 0)
        days.append(
            EngagementDay(
                day=day,
                dau=dau,
                wau=listeners_between(day - timedelta(days=_WAU_DAYS - 1), day),
                mau=mau,
                dau_mau=dau / mau if mau else None,
                new_listeners=new,
                returning_listeners=dau - new,
                sessions=count,
                avg_session_seconds=us / count / 1e6 if count else None,
                streams=day_streams,
                streams_per_listener=day_streams / dau if dau else None,
            )
        )
    listeners = listeners_between(from_date, to_date)
    total_sessions = sum(count for count, _ in sessions.values())
    total_us = sum(us for _, us in sessions.values())
    total_streams = sum(streams.values())
    return Engagement(
        from_date=from_date,
        to_date=to_date,
        days=days,
        listeners=listeners,
        sessions=total_sessions,
        avg_session_seconds=total_us / total_sessions / 1e6 if total_sessions else None,
        streams=total_streams,
        streams_per_listener=total_streams / listeners if listeners else None,
    )


def _periods_between(cohort: date, active: date, period: CohortPeriod) -> int:
    if period == CohortPeriod.week:
        return (active - cohort).days // 7
    return (active.year - cohort.year) * 12 + active.month - cohort.month


async def retention(*, db_session: AsyncSession, period: CohortPeriod, cohorts: int) -> Retention:
    """Accounts by the week (or month) of their first play, and the share active afterwards."""
    table = ListenerCohortActivity
    in_period = (table.period == period.value, table.listeners > 0)
    latest = (
        select(table.cohort)
        .where(*in_period)
        .group_by(table.cohort)
        .order_by(table.cohort.desc())
        .limit(cohorts)
    )
    kept = sorted((await db_session.scalars(latest)).all())
    if not kept:
        return Retention(cohort=period, cohorts=[])
    rows = await db_session.execute(
        select(table.cohort, table.active, table.listeners).where(
            *in_period, table.cohort >= kept[0]
        )
    )
    counts: dict[date, dict[int, int]] = defaultdict(dict)
    for cohort, active, listeners in rows.all():
        counts[cohort][_periods_between(cohort, active, period)] = int(listeners)
    answer = []
    for cohort in kept:
        size = counts[cohort].get(0, 0)
        answer.append(
            Cohort(
                start=cohort,
                size=size,
                retention=[
                    CohortWeek(
                        offset=offset,
                        active=counts[cohort].get(offset, 0),
                        rate=counts[cohort].get(offset, 0) / size if size else 0.0,
                    )
                    for offset in range(max(counts[cohort]) + 1)
                ],
            )
        )
    return Retention(cohort=period, cohorts=answer)

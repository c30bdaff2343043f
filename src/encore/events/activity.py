"""Listener activity rollups, kept by the listening consumer: active days, sessions, cohorts.

Engagement and retention need every account's days and sessions, which a scan of the lake
derives in seconds; these tables keep them up to date event by event instead, so that
reading them costs a few thousand rows whatever the number of events:

- `listener_days`: one row per account and UTC day it played anything;
- `daily_active_listeners`: per day, its active accounts by the days since each was active
  before (0 for a first day ever) — DAU, WAU, MAU, new listeners and any window's listeners
  are sums over it (see `DailyActiveListeners`);
- `listening_sessions` and `daily_listening_stats`: sessions (plays split by 30 minutes of
  inactivity) and, per day they start on, their count and summed length;
- `listener_cohort_activity`: per week and per month cohort, the accounts active in each
  later period.

Events arrive in any order (offline ones up to 30 days late): a new active day changes the
gap of the account's next active day, a new play merges every session within 30 minutes of
it, an earlier first day moves the account to an earlier cohort. Each change is applied as
the difference between the account's rows before and after, so applying events in any order
ends with the same tables; the consumer applies each event once (`counted_events`), and one
batch at a time per consumer (the logs keep one batch in flight), so two batches never
interleave their reads and writes of one account.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from encore.db import dialect_insert, new_id
from encore.events.models import (
    DailyActiveListeners,
    DailyArtistListener,
    DailyArtistListenerGaps,
    DailyListeningStats,
    ListenerCohortActivity,
    ListenerDay,
    ListeningSession,
)

SESSION_GAP = timedelta(minutes=30)
"""Inactivity that ends a session: a play starting later than this after the last ended."""

ACTIVE_GAP_CAP_DAYS = 731
"""Days since an account was last active (or last streamed an artist) are stored up to this,
longer gaps as this: any window of up to 731 days counts its listeners exactly."""

FIRST_ACTIVE_DAY = 0
"""`days_since_active` of an account's first active day ever."""

COHORT_PERIODS = ("week", "month")

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PlayInterval:
    """One play event of an account: from when the play started to when the event occurred."""

    user_id: uuid.UUID
    started_at: datetime
    ended_at: datetime


def period_start(day: date, period: str) -> date:
    """The Monday of the week, or the first of the month, holding `day`."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _period_end(day: date, period: str) -> date:
    if period == "week":
        return period_start(day, period) + timedelta(days=6)
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def active_gap(day: date, previous: date | None) -> int:
    """The `days_since_active` of an active day after the account's previous one (or none)."""
    if previous is None:
        return FIRST_ACTIVE_DAY
    return min((day - previous).days, ACTIVE_GAP_CAP_DAYS)


async def apply_listener_activity(db_session: AsyncSession, plays: Sequence[PlayInterval]) -> None:
    """Fold newly counted play events into the active days, sessions and cohorts."""
    if not plays:
        return
    await _record_active_days(db_session, {(p.user_id, p.ended_at.date()) for p in plays})
    await _merge_sessions(db_session, plays)


# --- active days, their gaps, cohorts -------------------------------------------------------


def _predecessor(days: Sequence[date], day: date) -> date | None:
    """The latest of the sorted `days` before `day`."""
    position = bisect_left(days, day)
    return days[position - 1] if position else None


@dataclass
class _ActivityChanges:
    gaps: dict[tuple[date, int], int]
    cohorts: dict[tuple[str, date, date], int]


_Key = tuple[uuid.UUID, ...]


@dataclass
class _DayNeighbourhoods:
    """Per key (an account, or an artist and a listener): its days that a change touches."""

    # Sorted: every day of the key within the range asked for, and each new day's neighbours.
    known: dict[_Key, list[date]]
    # Each key's first day ever (only when asked for: cohorts need it, artists do not).
    first: dict[_Key, date]


async def _day_neighbourhoods(
    db_session: AsyncSession,
    model: Any,
    key_columns: Sequence[str],
    new_days: dict[_Key, set[date]],
    low: date,
    high: date,
    *,
    with_first: bool = True,
) -> _DayNeighbourhoods:
    """What gap and cohort changes need, read after the new days were inserted: the keys'
    days in [low, high], each new day's neighbours and each key's first day (index seeks,
    whatever the length of a key's history)."""
    keys = sorted(new_days)
    every_new_day = sorted({day for days in new_days.values() for day in days})
    outer = [getattr(model, name) for name in key_columns]
    key_filter = (
        outer[0].in_([key[0] for key in keys]) if len(outer) == 1 else tuple_(*outer).in_(keys)
    )
    known: dict[_Key, set[date]] = defaultdict(set)
    if low < high:
        # (With a range of one day, the only days in it are the new ones.)
        in_range = await db_session.execute(
            select(*outer, model.day).where(key_filter, model.day >= low, model.day <= high)
        )
        for *key_values, day in in_range.all():
            known[tuple(key_values)].add(day)
    other = aliased(model)
    same_key = [
        getattr(other, name) == column for name, column in zip(key_columns, outer, strict=True)
    ]
    previous = (
        select(other.day)
        .where(*same_key, other.day < model.day)
        .order_by(other.day.desc())
        .limit(1)
        .scalar_subquery()
    )
    following = (
        select(other.day)
        .where(*same_key, other.day > model.day)
        .order_by(other.day)
        .limit(1)
        .scalar_subquery()
    )
    first = (
        select(other.day).where(*same_key).order_by(other.day).limit(1).scalar_subquery()
        if with_first
        else model.day
    )
    neighbours = await db_session.execute(
        select(*outer, model.day, previous, following, first).where(
            key_filter, model.day.in_(every_new_day)
        )
    )
    first_day: dict[_Key, date] = {}
    for *key_values, day, before, after, first_of_key in neighbours.all():
        key = tuple(key_values)
        if day not in new_days.get(key, ()):
            continue
        known[key].update(d for d in (day, before, after) if d is not None)
        first_day[key] = first_of_key
    return _DayNeighbourhoods({key: sorted(days) for key, days in known.items()}, first_day)


def _count_gaps(gaps: dict[tuple[date, int], int], new: set[date], final: list[date]) -> list[date]:
    """Add a key's changes of gap counts; returns its known days from before the new ones.

    `final` holds every day of the key from the one before its earliest new day up to the
    one after its latest (see _day_neighbourhoods): enough to know each affected day's
    predecessor, before and after.
    """
    old = [day for day in final if day not in new]
    low, high = min(new), max(new)
    following = final[bisect_left(final, high) + 1 :][:1]
    # The new days take their gaps; the first old day after them changes its gap.
    for day in [d for d in final if low <= d <= high] + following:
        gaps[(day, active_gap(day, _predecessor(final, day)))] += 1
        if day not in new:
            gaps[(day, active_gap(day, _predecessor(old, day)))] -= 1
    return old


async def _record_active_days(db_session: AsyncSession, pairs: set[tuple[uuid.UUID, date]]) -> None:
    insert = dialect_insert(db_session)
    inserted = await db_session.execute(
        insert(ListenerDay)
        .on_conflict_do_nothing(index_elements=[ListenerDay.user_id, ListenerDay.day])
        .returning(ListenerDay.user_id, ListenerDay.day),
        [{"user_id": user, "day": day} for user, day in sorted(pairs)],
    )
    new_days: dict[_Key, set[date]] = defaultdict(set)
    for user, day in inserted.all():
        new_days[(user,)].add(day)
    if not new_days:
        return
    every_new_day = {day for days in new_days.values() for day in days}
    # The weeks and months of the new days: which of them were active before.
    low = min(min(period_start(d, p) for p in COHORT_PERIODS) for d in every_new_day)
    high = max(max(_period_end(d, p) for p in COHORT_PERIODS) for d in every_new_day)
    around = await _day_neighbourhoods(db_session, ListenerDay, ["user_id"], new_days, low, high)
    changes = _ActivityChanges(defaultdict(int), defaultdict(int))
    movers: list[uuid.UUID] = []
    for key in sorted(new_days):
        old = _count_gaps(changes.gaps, new_days[key], around.known[key])
        if _count_cohorts(changes, new_days[key], old, around.first[key]):
            movers.append(key[0])
    if movers:
        await _move_cohorts(
            db_session, changes, movers, {key[0]: days for key, days in new_days.items()}
        )
    await _add_counts(
        db_session,
        DailyActiveListeners,
        ["day", "days_since_active"],
        "listeners",
        {key: n for key, n in changes.gaps.items() if n},
    )
    await _add_counts(
        db_session,
        ListenerCohortActivity,
        ["period", "cohort", "active"],
        "listeners",
        {key: n for key, n in changes.cohorts.items() if n},
    )


def _count_cohorts(changes: _ActivityChanges, new: set[date], old: list[date], first: date) -> bool:
    """Add an account's cohort changes; True when its cohort moved (see _move_cohorts).

    `old` holds the account's earlier days in the periods of the new days and next to them.
    """
    old_first = first if first not in new else (old[0] if old else None)
    if old_first is None or any(
        period_start(old_first, period) != period_start(first, period) for period in COHORT_PERIODS
    ):
        return True
    for period in COHORT_PERIODS:
        cohort = period_start(first, period)
        old_periods = {period_start(day, period) for day in old}
        for active in {period_start(day, period) for day in new} - old_periods:
            changes.cohorts[(period, cohort, active)] += 1
    return False


async def record_artist_listener_days(
    db_session: AsyncSession, new_listener_days: set[tuple[uuid.UUID, uuid.UUID, date]]
) -> None:
    """Count (artist, listener, day) rows just added to `daily_artist_listeners` into
    `daily_artist_listener_gaps`."""
    if not new_listener_days:
        return
    new_days: dict[_Key, set[date]] = defaultdict(set)
    for artist, user, day in new_listener_days:
        new_days[(artist, user)].add(day)
    every_new_day = {day for _, _, day in new_listener_days}
    around = await _day_neighbourhoods(
        db_session,
        DailyArtistListener,
        ["artist_id", "user_id"],
        new_days,
        min(every_new_day),
        max(every_new_day),
        with_first=False,
    )
    per_artist: dict[tuple[uuid.UUID, date, int], int] = defaultdict(int)
    for key in sorted(new_days):
        gaps: dict[tuple[date, int], int] = defaultdict(int)
        _count_gaps(gaps, new_days[key], around.known[key])
        for (day, gap), n in gaps.items():
            per_artist[(key[0], day, gap)] += n
    await _add_counts(
        db_session,
        DailyArtistListenerGaps,
        ["artist_id", "day", "days_since_listened"],
        "listeners",
        {key: n for key, n in per_artist.items() if n},
    )


async def _move_cohorts(
    db_session: AsyncSession,
    changes: _ActivityChanges,
    users: Sequence[uuid.UUID],
    new_days: dict[uuid.UUID, set[date]],
) -> None:
    """New accounts, and accounts whose first day moved earlier: every period is re-counted."""
    every_day: dict[uuid.UUID, list[date]] = defaultdict(list)
    rows = await db_session.execute(
        select(ListenerDay.user_id, ListenerDay.day)
        .where(ListenerDay.user_id.in_(users))
        .order_by(ListenerDay.user_id, ListenerDay.day)
    )
    for user, day in rows.all():
        every_day[user].append(day)
    for user in users:
        final = every_day[user]
        old = [day for day in final if day not in new_days[user]]
        for period in COHORT_PERIODS:
            if old:
                cohort = period_start(old[0], period)
                for active in {period_start(day, period) for day in old}:
                    changes.cohorts[(period, cohort, active)] -= 1
            cohort = period_start(final[0], period)
            for active in {period_start(day, period) for day in final}:
                changes.cohorts[(period, cohort, active)] += 1


async def _add_counts(
    db_session: AsyncSession,
    model: Any,
    key_columns: Sequence[str],
    count_column: str,
    increments: dict[tuple[Any, ...], int],
) -> None:
    if not increments:
        return
    statement = dialect_insert(db_session)(model)
    statement = statement.on_conflict_do_update(
        index_elements=list(key_columns),
        set_={count_column: model.__table__.c[count_column] + statement.excluded[count_column]},
    )
    rows = [
        {**dict(zip(key_columns, key, strict=True)), count_column: count}
        for key, count in sorted(increments.items())
    ]
    await db_session.execute(statement, rows)


# --- sessions -------------------------------------------------------------------------------


@dataclass
class _Span:
    started_at: datetime
    ended_at: datetime
    plays: int
    session_id: uuid.UUID | None  # None for a play of this batch


def _components(spans: Iterable[_Span]) -> list[list[_Span]]:
    """Spans grouped into sessions: a span starting over 30 minutes after all before ended
    starts the next one."""
    groups: list[list[_Span]] = []
    end: datetime | None = None
    for span in sorted(spans, key=lambda s: (s.started_at, s.ended_at)):
        if end is None or span.started_at > end + SESSION_GAP:
            groups.append([])
            end = span.ended_at
        groups[-1].append(span)
        end = max(end, span.ended_at)
    return groups


async def _merge_sessions(db_session: AsyncSession, plays: Sequence[PlayInterval]) -> None:
    by_user: dict[uuid.UUID, list[_Span]] = defaultdict(list)
    for play in plays:
        by_user[play.user_id].append(_Span(play.started_at, play.ended_at, 1, None))
    low = min(play.started_at for play in plays) - SESSION_GAP
    high = max(play.ended_at for play in plays) + SESSION_GAP
    existing = await db_session.execute(
        select(ListeningSession).where(
            ListeningSession.user_id.in_(sorted(by_user)),
            ListeningSession.ended_at >= low,
            ListeningSession.started_at <= high,
        )
    )
    for session in existing.scalars():
        by_user[session.user_id].append(
            _Span(session.started_at, session.ended_at, session.plays, session.id)
        )
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    replaced: list[uuid.UUID] = []
    created: list[dict[str, Any]] = []
    for user, spans in sorted(by_user.items()):
        for group in _components(spans):
            if all(span.session_id is not None for span in group):
                continue  # an old session no play of this batch comes near
            started_at = min(span.started_at for span in group)
            ended_at = max(span.ended_at for span in group)
            plays_in_group = sum(span.plays for span in group)
            for span in group:
                if span.session_id is not None:
                    replaced.append(span.session_id)
                    _add_session(per_day, span.started_at, span.ended_at, span.plays, -1)
            _add_session(per_day, started_at, ended_at, plays_in_group, 1)
            created.append(
                {
                    "id": new_id(),
                    "user_id": user,
                    "started_at": started_at,
                    "ended_at": ended_at,
                    "plays": plays_in_group,
                }
            )
    if replaced:
        await db_session.execute(
            delete(ListeningSession)
            .where(ListeningSession.id.in_(replaced))
            .execution_options(synchronize_session=False)
        )
    if created:
        await db_session.execute(dialect_insert(db_session)(ListeningSession), created)
    changed = {day: counts for day, counts in per_day.items() if any(counts)}
    if not changed:
        return
    statement = dialect_insert(db_session)(DailyListeningStats)
    table = DailyListeningStats.__table__
    columns = ("sessions", "session_us", "session_plays")
    statement = statement.on_conflict_do_update(
        index_elements=["day"],
        set_={name: table.c[name] + statement.excluded[name] for name in columns},
    )
    await db_session.execute(
        statement,
        [
            {"day": day, **dict(zip(columns, counts, strict=True))}
            for day, counts in sorted(changed.items())
        ],
    )


def _add_session(
    per_day: dict[date, list[int]],
    started_at: datetime,
    ended_at: datetime,
    plays: int,
    sign: int,
) -> None:
    counts = per_day[started_at.date()]
    counts[0] += sign
    counts[1] += sign * ((ended_at - started_at) // _MICROSECOND)
    counts[2] += sign * plays

"""Engagement and retention from the consumer-kept activity rollups, whatever the event order;
and the migration's backfill builds the same rollups from the event log."""

from __future__ import annotations

import importlib.util
import random
import uuid
from collections import defaultdict
from datetime import date, timedelta
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select

from encore.analytics.schemas import Granularity
from encore.analytics.service import bucket_start
from encore.auth.models import Role
from encore.db import migrations_path
from encore.events import service as events_service
from encore.events.models import (
    DailyActiveListeners,
    DailyArtistListenerGaps,
    DailyListeningStats,
    ListenerCohortActivity,
    ListenerDay,
    ListeningSession,
)
from tests.fixtures.events import drain_events
from tests.fixtures.oauth import asgi_client, create_user, resources_of, user_token
from tests.integration.analytics.synthetic import (
    Recomputed,
    now_floor,
    read_lake,
    recompute,
    seed_catalog,
    synthesize_month,
)

_COUNTS = {"listeners", "sessions", "session_us", "session_plays", "streams"}
_ACTIVITY_TABLES = (
    DailyArtistListenerGaps,
    ListenerDay,
    DailyActiveListeners,
    ListeningSession,
    DailyListeningStats,
    ListenerCohortActivity,
)


async def _record_shuffled(
    app: FastAPI, by_user: dict[uuid.UUID, list[dict[str, Any]]], seed: int
) -> None:
    """Append small per-account batches in random order, applying them every few batches."""
    rng = random.Random(seed)
    batches = [
        (user, events[start : start + 7])
        for user, events in by_user.items()
        for start in range(0, len(events), 7)
    ]
    rng.shuffle(batches)
    resources = resources_of(app)
    for number, (user, batch) in enumerate(batches, start=1):
        result = await events_service.record_events(
            event_log=resources.event_log,
            rate_limiter=None,
            user_id=user,
            body=orjson.dumps({"events": batch}),
        )
        assert result.accepted == len(batch), result
        if number % 25 == 0:
            await drain_events(app)
    await drain_events(app)


def _first_seen(truth: Recomputed) -> dict[uuid.UUID, date]:
    first: dict[uuid.UUID, date] = {}
    for day in sorted(truth.active):
        for user in truth.active[day]:
            first.setdefault(user, day)
    return first


def _within(truth: Recomputed, day: date, span: int) -> int:
    return len(
        set().union(*(truth.active.get(day - timedelta(days=n), set()) for n in range(span)))
    )


async def _check_activity(http: httpx.AsyncClient, truth: Recomputed) -> None:
    days = sorted(truth.active)
    # From before the first active day, so the window has empty days and first-day gaps.
    first, last = days[0] - timedelta(days=2), days[-1]
    answer = await http.get(
        "/v1/analytics/engagement", params={"from": first.isoformat(), "to": last.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    engagement = answer.json()
    first_seen = _first_seen(truth)
    for row in engagement["days"]:
        day = date.fromisoformat(row["day"])
        assert row["dau"] == len(truth.active.get(day, set())), day
        assert row["wau"] == _within(truth, day, 7), day
        assert row["mau"] == _within(truth, day, 30), day
        assert row["new_listeners"] == sum(1 for seen in first_seen.values() if seen == day)
        sessions = truth.sessions.get(day, [])
        assert row["sessions"] == len(sessions), day
        if sessions:
            assert row["avg_session_seconds"] == pytest.approx(sum(sessions) / len(sessions))
    assert engagement["listeners"] == len(first_seen)
    # A window inside the month: its listeners are the accounts active within it.
    middle = (first + timedelta(days=9), first + timedelta(days=20))
    inner = (
        await http.get(
            "/v1/analytics/engagement",
            params={"from": middle[0].isoformat(), "to": middle[1].isoformat()},
        )
    ).json()
    assert inner["listeners"] == _within(truth, middle[1], (middle[1] - middle[0]).days + 1)

    for period in ("week", "month"):
        answer = await http.get(
            "/v1/analytics/retention", params={"cohort": period, "cohorts": 104}
        )
        assert answer.status_code == 200, answer.text
        expected: dict[date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        periods: dict[uuid.UUID, set[date]] = defaultdict(set)
        for day, users in truth.active.items():
            start = bucket_start(day, Granularity(period))
            for user in users:
                periods[user].add(start)
        for starts in periods.values():
            cohort = min(starts)
            for start in starts:
                offset = (
                    (start - cohort).days // 7
                    if period == "week"
                    else (start.year - cohort.year) * 12 + start.month - cohort.month
                )
                expected[cohort][offset] += 1
        cohorts = answer.json()["cohorts"]
        assert [c["start"] for c in cohorts] == [d.isoformat() for d in sorted(expected)]
        for cohort in cohorts:
            counts = expected[date.fromisoformat(cohort["start"])]
            assert cohort["size"] == counts[0]
            assert {r["offset"]: r["active"] for r in cohort["retention"] if r["active"]} == dict(
                counts
            )


async def test_activity_figures_do_not_depend_on_the_order_events_arrive_in(app: FastAPI) -> None:
    catalog = await seed_catalog(app, artists=2, tracks_per_artist=3)
    by_user = synthesize_month(catalog, listeners=60, seed=9, end=now_floor())
    await _record_shuffled(app, by_user, seed=4)
    truth = recompute(read_lake(app))
    async with resources_of(app).session_factory() as db_session:
        stored = (await db_session.scalars(select(ListeningSession))).all()
    assert len(stored) == sum(len(lengths) for lengths in truth.sessions.values())
    assert sum(s.plays for s in stored) == sum(
        1
        for row in read_lake(app)
        if row["type"] in ("play_start", "play_progress", "play_end", "skip")
    )
    await create_user(app, "ana", roles=(Role.analyst,))
    async with asgi_client(app) as http:
        http.headers["Authorization"] = f"Bearer {await user_token(app, 'ana', 'analytics')}"
        await _check_activity(http, truth)


def _migration() -> ModuleType:
    path = next((migrations_path() / "versions").glob("*-a1b2c3d4e5f7_listener_activity.py"))
    spec = importlib.util.spec_from_file_location("listener_activity_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _snapshot(app: FastAPI) -> dict[str, set[tuple[Any, ...]]]:
    tables: dict[str, set[tuple[Any, ...]]] = {}
    async with resources_of(app).session_factory() as db_session:
        for model in _ACTIVITY_TABLES:
            columns = [c for c in model.__table__.columns if c.name != "id"]
            rows = (await db_session.execute(select(*columns))).all()
            # Counts that went back to zero (an account's gap or cohort moved, a session
            # started earlier) are rows the backfill never writes.
            counts = [c.name for c in columns if c.name in _COUNTS]
            tables[model.__tablename__] = {
                tuple(row) for row in rows if not counts or any(getattr(row, c) for c in counts)
            }
    return tables


async def test_the_migration_backfills_what_the_consumer_keeps(app: FastAPI) -> None:
    catalog = await seed_catalog(app, artists=1, tracks_per_artist=3)
    by_user = synthesize_month(catalog, listeners=25, seed=3, end=now_floor())
    await _record_shuffled(app, by_user, seed=8)
    kept = await _snapshot(app)
    assert kept["listening_sessions"] and kept["listener_cohort_activity"]
    assert kept["daily_artist_listener_gaps"]
    # Events appended but not applied yet stay the consumer's: the backfill leaves them out.
    late_user = uuid.uuid4()
    late = synthesize_month(catalog, listeners=1, seed=5, end=now_floor())
    await events_service.record_events(
        event_log=resources_of(app).event_log,
        rate_limiter=None,
        user_id=late_user,
        body=orjson.dumps({"events": next(iter(late.values()))[:20]}),
    )
    migration = _migration()
    async with resources_of(app).session_factory() as db_session:
        for model in _ACTIVITY_TABLES:
            await db_session.execute(delete(model))
        await db_session.commit()
        connection = await db_session.connection()
        await connection.run_sync(migration._backfill)
        await connection.run_sync(migration._backfill_artist_listener_gaps)
        await db_session.commit()
    assert await _snapshot(app) == kept

"""The consumers under failure: the lake holds each event exactly once, counts stay exact."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from encore import bus
from encore.bus.event_log import (
    EventConsumer,
    EventToAppend,
    LoggedEvent,
    drain_event_consumers,
)
from encore.db import utcnow
from encore.event_log_models import EventLogEntry
from encore.events import service as events_service
from encore.events.lake import LAKE_EVENTS_PREFIX, LAKE_SCHEMA_VERSION, LakeWriter
from encore.events.models import (
    CountedEvent,
    DailyTrackStats,
    LakeWrittenEvent,
    ListeningHistoryEntry,
)
from encore.events.service import record_events
from encore.events.tasks import (
    LAKE_CONSUMER,
    LISTENING_CONSUMER,
    PRUNE_JOB,
    prune_dedupe_records,
)
from encore.jobs_models import JobRecord, JobState
from encore.recommend.models import RecommendAppliedEvent
from tests.fixtures.events import drain_events, listening_session, play_end, seed_catalog
from tests.fixtures.oauth import create_user, resources_of


class ConsumerCrash(Exception):
    """Stands for a worker killed after the batch's effects and before its commit."""


async def _append(app: FastAPI, user_id: uuid.UUID, events: list[dict[str, object]]) -> int:
    resources = resources_of(app)
    result = await record_events(
        event_log=resources.event_log,
        rate_limiter=None,
        user_id=user_id,
        body=orjson.dumps({"events": events}),
    )
    assert not result.rejected, result.rejected
    return result.accepted


def _lake_root(app: FastAPI) -> Path:
    location = resources_of(app).settings.storage_url.removeprefix("file://")
    return Path(location) / LAKE_EVENTS_PREFIX


def _read_lake(app: FastAPI) -> list[tuple[object, ...]]:
    pattern = str(_lake_root(app) / "**" / "*.parquet")
    with duckdb.connect() as lake:
        return lake.execute(
            "select event_id, type, date, hour, schema_version, occurred_at, context_type "
            f"from read_parquet('{pattern}', hive_partitioning = true) order by occurred_at"
        ).fetchall()


async def test_lake_has_every_event_once_in_hourly_partitions(app: FastAPI) -> None:
    playable = await seed_catalog(app)
    user = await create_user(app, "erin")
    start = (utcnow() - timedelta(hours=3)).replace(minute=50, second=0, microsecond=0)
    # Twelve back-to-back plays of 3m20s: the session crosses into the next hour.
    events = listening_session(playable.track_ids * 2, start=start)
    await _append(app, user.id, events)
    await drain_events(app)
    rows = _read_lake(app)
    assert len(rows) == len(events)
    assert {row[0] for row in rows} == {event["event_id"] for event in events}
    assert {row[4] for row in rows} == {LAKE_SCHEMA_VERSION}
    hours = {(str(row[2]), int(str(row[3]))) for row in rows}
    assert len(hours) == 2
    for event_id, _type, day, hour, _version, occurred_at, context in rows:
        assert context == "album"
        assert isinstance(occurred_at, datetime)
        utc = occurred_at.astimezone(UTC)
        assert (str(day), int(str(hour))) == (utc.date().isoformat(), utc.hour), event_id
    partitions = sorted(p.relative_to(_lake_root(app)).parent for p in _lake_root(app).rglob("*"))
    assert all(str(p).startswith("date=") for p in partitions if str(p) != ".")


async def test_a_lake_writer_that_dies_before_its_commit_writes_nothing_twice(
    app: FastAPI,
) -> None:
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    user = await create_user(app, "frank")
    resources = resources_of(app)
    at = utcnow() - timedelta(hours=2)
    await _append(app, user.id, listening_session(playable.track_ids, start=at))
    writer = LakeWriter(store=resources.store, log_source=resources.event_log.source)

    async def write_then_die(batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        await writer(batch, db_session)
        raise ConsumerCrash

    with pytest.raises(ConsumerCrash):
        await resources.event_log.consume_once(EventConsumer(LAKE_CONSUMER, write_then_die, 3))
    # More events arrive before the writer comes back with a larger batch size.
    later = listening_session(playable.track_ids, start=at + timedelta(minutes=20))
    await _append(app, user.id, later)
    await drain_event_consumers(resources.event_log, [EventConsumer(LAKE_CONSUMER, writer, 100)])
    rows = _read_lake(app)
    assert len(rows) == 8
    assert len({row[0] for row in rows}) == 8


async def test_a_listening_consumer_that_dies_mid_batch_counts_exactly(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=1, tracks_per_artist=3)
    user = await create_user(app, "grace")
    resources = resources_of(app)
    await _append(
        app, user.id, listening_session(playable.track_ids, start=utcnow() - timedelta(hours=1))
    )

    async def apply_then_die(batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        await events_service.apply_listening_events(batch, db_session)
        raise ConsumerCrash

    with pytest.raises(ConsumerCrash):
        await resources.event_log.consume_once(EventConsumer(LISTENING_CONSUMER, apply_then_die, 4))
    await drain_events(app)
    # Applied again after the crash: the crashed transaction left nothing behind.
    await drain_event_consumers(
        resources.event_log,
        [EventConsumer(LISTENING_CONSUMER, events_service.apply_listening_events, 2)],
    )
    async with resources.session_factory() as db_session:
        streams = await db_session.scalar(select(func.sum(DailyTrackStats.streams)))
        history = await db_session.scalar(select(func.count()).select_from(ListeningHistoryEntry))
    assert streams == 3
    assert history == 3


async def test_a_redelivered_event_is_applied_once(app: FastAPI) -> None:
    """A log that hands the same event over again (JetStream after its dedupe window)."""
    playable = await seed_catalog(app, artists=1, tracks_per_artist=1)
    user = await create_user(app, "heidi")
    resources = resources_of(app)
    event = play_end(playable.track_ids[0], at=utcnow() - timedelta(minutes=3))
    await _append(app, user.id, [event])
    captured: list[LoggedEvent] = []

    async def capture(batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        captured.extend(batch)
        await events_service.apply_listening_events(batch, db_session)

    await drain_event_consumers(
        resources.event_log, [EventConsumer(LISTENING_CONSUMER, capture, 10)]
    )
    async with resources.session_factory() as db_session, db_session.begin():
        await events_service.apply_listening_events(captured, db_session)
    async with resources.session_factory() as db_session:
        streams = await db_session.scalar(select(func.sum(DailyTrackStats.streams)))
    assert streams == 1


async def _dedupe_records(app: FastAPI) -> dict[str, set[uuid.UUID]]:
    async with resources_of(app).session_factory() as db_session:
        return {
            "counted": set(await db_session.scalars(select(CountedEvent.event_id))),
            "written": set(await db_session.scalars(select(LakeWrittenEvent.event_id))),
            "recommend": set(await db_session.scalars(select(RecommendAppliedEvent.event_id))),
        }


async def test_dedupe_records_are_pruned_once_no_copy_can_come_again(app: FastAPI) -> None:
    resources = resources_of(app)
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    user = await create_user(app, "olga")
    events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=2))
    await _append(app, user.id, events)
    await drain_events(app)
    recent = {uuid.UUID(str(event["event_id"])) for event in events}
    assert await _dedupe_records(app) == {"counted": recent, "written": recent, "recommend": recent}
    # The listening consumer keeps one pruning run queued, a day ahead.
    async with resources.session_factory() as db_session:
        queued = (
            await db_session.scalars(select(JobRecord).where(JobRecord.kind == PRUNE_JOB))
        ).all()
    assert len(queued) == 1
    assert queued[0].run_after > utcnow() + timedelta(hours=23)

    retention = resources.settings.events_retention_days
    horizon = events_service.dedupe_record_horizon(now=utcnow(), log_retention_days=retention)
    assert utcnow() - timedelta(days=32 + retention) < horizon < utcnow() - timedelta(days=30)
    # Records a minute before the horizon go, one a minute after it stays.
    old = [uuid.uuid4() for _ in range(7)]
    kept = uuid.uuid4()
    async with resources.session_factory() as db_session:
        for event_id in [*old, kept]:
            at = horizon + (timedelta(minutes=1) if event_id == kept else -timedelta(minutes=1))
            db_session.add(CountedEvent(user_id=user.id, event_id=event_id, counted_at=at))
            db_session.add(LakeWrittenEvent(user_id=user.id, event_id=event_id, written_at=at))
            db_session.add(RecommendAppliedEvent(user_id=user.id, event_id=event_id, applied_at=at))
        await db_session.commit()

    await _run_prune_job(app)

    left = recent | {kept}
    assert await _dedupe_records(app) == {"counted": left, "written": left, "recommend": left}


async def _run_prune_job(app: FastAPI) -> None:
    """The pruning job as a worker runs it."""
    resources = resources_of(app)
    now = utcnow()
    job = bus.Job(
        id=uuid.uuid4(),
        kind=PRUNE_JOB,
        payload={},
        state=JobState.running,
        attempts=1,
        run_after=now,
        created_at=now,
        updated_at=now,
    )
    await prune_dedupe_records(
        {},
        bus.JobContext(
            job=job,
            worker_id="test",
            settings=resources.settings,
            session_factory=resources.session_factory,
            store=resources.store,
        ),
    )


async def _append_received_at(
    app: FastAPI, user_id: uuid.UUID, events: list[dict[str, object]], received_at: datetime
) -> None:
    """Append events straight to the log as if they had arrived at `received_at`."""
    await resources_of(app).event_log.append(
        [
            EventToAppend(
                user_id=user_id,
                event_id=uuid.UUID(str(event["event_id"])),
                type=str(event["type"]),
                received_at=received_at,
                body=orjson.dumps(
                    {**event, "user_id": str(user_id), "received_at": received_at.isoformat()}
                ),
                occurred_at=datetime.fromisoformat(str(event["occurred_at"])),
            )
            for event in events
        ]
    )


async def _logged_event_ids(app: FastAPI) -> set[uuid.UUID]:
    async with resources_of(app).session_factory() as db_session:
        return set((await db_session.scalars(select(EventLogEntry.event_id))).all())


async def test_the_database_log_keeps_events_until_every_consumer_applied_them_and_retention_ends(
    app: FastAPI,
) -> None:
    resources = resources_of(app)
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    user = await create_user(app, "quinn")
    retention = timedelta(days=resources.settings.events_retention_days)
    # Events that arrived just before and just after the retention horizon...
    old_events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=3))
    recent_events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=1))
    await _append_received_at(app, user.id, old_events, utcnow() - retention - timedelta(minutes=5))
    await _append_received_at(
        app, user.id, recent_events, utcnow() - retention + timedelta(minutes=5)
    )
    every_id = {uuid.UUID(str(event["event_id"])) for event in old_events + recent_events}
    old_ids = {uuid.UUID(str(event["event_id"])) for event in old_events}

    # ...stay while the consumers have not applied them,
    await _run_prune_job(app)
    assert await _logged_event_ids(app) == every_id

    # and the old ones go once every consumer has: the counts stay as they were.
    await drain_events(app)
    streams_before = await _track_streams(app)
    assert streams_before == sum(
        event["type"] == "play_end" for event in old_events + recent_events
    )
    await _run_prune_job(app)
    assert await _logged_event_ids(app) == every_id - old_ids
    assert await _track_streams(app) == streams_before

    # A late retry of a pruned event is appended again, and changes no count.
    await _append(app, user.id, old_events[:1])
    await drain_events(app)
    assert await _track_streams(app) == streams_before


async def test_events_after_a_prune_of_the_whole_log_still_reach_the_consumers(
    app: FastAPI,
) -> None:
    resources = resources_of(app)
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    user = await create_user(app, "rosa")
    long_ago = utcnow() - timedelta(days=resources.settings.events_retention_days + 1)
    old_events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=3))
    await _append_received_at(app, user.id, old_events, long_ago)
    await drain_events(app)
    streams_before = await _track_streams(app)
    await _run_prune_job(app)
    # Everything was applied and is past retention; only the newest event stays, so that new
    # events are numbered after the positions the consumers have read up to.
    assert len(await _logged_event_ids(app)) == 1
    new_events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=1))
    await _append(app, user.id, new_events)
    await drain_events(app)
    new_streams = sum(event["type"] == "play_end" for event in new_events)
    assert await _track_streams(app) == streams_before + new_streams


async def _track_streams(app: FastAPI) -> int:
    async with resources_of(app).session_factory() as db_session:
        total = await db_session.scalar(select(func.sum(DailyTrackStats.streams)))
    return int(total or 0)


async def test_pruning_deletes_in_chunks(app: FastAPI) -> None:
    user = await create_user(app, "pavel")
    at = utcnow() - timedelta(days=100)
    async with resources_of(app).session_factory() as db_session:
        for _ in range(7):
            db_session.add(CountedEvent(user_id=user.id, event_id=uuid.uuid4(), counted_at=at))
        await db_session.commit()
    async with resources_of(app).session_factory() as db_session:
        deleted = await events_service.prune_dedupe_records(
            db_session=db_session, older_than=utcnow(), chunk=3
        )
    assert deleted == {"counted_events": 7, "lake_written_events": 0}
    assert await _dedupe_records(app) == {"counted": set(), "written": set(), "recommend": set()}

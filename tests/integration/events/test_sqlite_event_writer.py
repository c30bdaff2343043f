"""The SQLite event log's writer thread: group commits, failures answered, the thread lives on.

SQLite only: PostgreSQL appends on the event loop through asyncpg and has no writer thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from encore.bus.event_log import EventLogUnavailable, EventToAppend, _SQLiteWriter
from encore.config import load_settings
from encore.db import create_engine, upgrade_database, utcnow


@pytest.fixture
async def sqlite_log_path(tmp_path: Path) -> Path:
    """A migrated SQLite database of its own."""
    path = tmp_path / "writer.db"
    engine: AsyncEngine = create_engine(
        load_settings(
            database_url=f"sqlite+aiosqlite:///{path}",
            storage_url=f"file://{tmp_path / 'media'}",
            secret_key_file=str(tmp_path / "secret.key"),
        )
    )
    try:
        await upgrade_database(engine)
    finally:
        await engine.dispose()
    return path


def _events(count: int, user_id: uuid.UUID | None = None) -> list[EventToAppend]:
    user_id = user_id or uuid.uuid4()
    now = utcnow()
    return [
        EventToAppend(
            user_id=user_id,
            event_id=uuid.uuid4(),
            type="play_start",
            received_at=now,
            body=orjson.dumps({"n": number}),
            occurred_at=now - timedelta(seconds=number),
        )
        for number in range(count)
    ]


def _logged(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM event_log").fetchone()[0])


async def test_concurrent_appends_share_commits_and_each_learns_its_own_duplicates(
    sqlite_log_path: Path,
) -> None:
    writer = _SQLiteWriter(str(sqlite_log_path))
    try:
        batches = [_events(100) for _ in range(30)]
        # The same events twice at once: only one of the two appends records them.
        twice = _events(7)
        results = await asyncio.gather(
            *(writer.append(batch) for batch in batches), writer.append(twice), writer.append(twice)
        )
        assert [(r.appended, r.duplicates) for r in results[:30]] == [(100, 0)] * 30
        assert sorted((r.appended, r.duplicates) for r in results[30:]) == [(0, 7), (7, 0)]
        # A retry of part of a batch, with new events: the retried ones are duplicates.
        retry = await writer.append(batches[0][:40] + _events(5))
        assert (retry.appended, retry.duplicates) == (5, 40)
        assert _logged(sqlite_log_path) == 3000 + 7 + 5
    finally:
        await writer.close()


async def test_a_locked_database_is_a_503_and_the_writer_goes_on(sqlite_log_path: Path) -> None:
    writer = _SQLiteWriter(str(sqlite_log_path), busy_timeout_seconds=0.2)
    blocker = sqlite3.connect(sqlite_log_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        with pytest.raises(EventLogUnavailable) as refused:
            await writer.append(_events(10))
        assert refused.value.headers == {"Retry-After": "1"}
        blocker.execute("ROLLBACK")
        result = await writer.append(_events(10))
        assert (result.appended, result.duplicates) == (10, 0)
        assert _logged(sqlite_log_path) == 10
    finally:
        blocker.close()
        await writer.close()


async def test_a_failing_group_is_answered_with_its_error(tmp_path: Path) -> None:
    # A database without the log's table: every append of the group fails, none hangs.
    writer = _SQLiteWriter(str(tmp_path / "empty.db"))
    try:
        outcomes = await asyncio.gather(
            writer.append(_events(3)), writer.append(_events(4)), return_exceptions=True
        )
        assert all(isinstance(outcome, sqlite3.OperationalError) for outcome in outcomes)
        assert all("no such table" in str(outcome) for outcome in outcomes)
    finally:
        await writer.close()


async def test_an_append_whose_request_went_away_is_still_written(sqlite_log_path: Path) -> None:
    writer = _SQLiteWriter(str(sqlite_log_path))
    try:
        waiting = asyncio.create_task(writer.append(_events(25)))
        await asyncio.sleep(0)  # handed to the thread
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await writer.close()  # finishes what it was handed
    assert _logged(sqlite_log_path) == 25


async def test_times_are_stored_as_the_orm_reads_them(sqlite_log_path: Path) -> None:
    from datetime import UTC, datetime, timezone

    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from encore.event_log_models import EventLogEntry

    moments = [
        datetime(2026, 11, 26, 9, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 11, 26, 10, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 26, 10, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 26, 11, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=1, minutes=30))),
        datetime(2026, 12, 31, 23, 59, 59, 500_000, tzinfo=timezone(timedelta(hours=-5))),
    ]
    user_id = uuid.uuid4()
    events = [
        EventToAppend(
            user_id=user_id,
            event_id=uuid.uuid4(),
            type="play_start",
            received_at=moment,
            body=b"{}",
            occurred_at=moment,
        )
        for moment in moments
    ]
    writer = _SQLiteWriter(str(sqlite_log_path))
    try:
        assert (await writer.append(events)).appended == len(moments)
        # The same events again (a retry): the stored keys match the new ones exactly.
        assert (await writer.append(events)).duplicates == len(moments)
    finally:
        await writer.close()
    with sqlite3.connect(sqlite_log_path) as connection:
        stored = [row[0] for row in connection.execute("SELECT occurred_at FROM event_log")]
    assert all(len(text) == 26 and text[10] == " " and text[19] == "." for text in stored)
    engine = create_async_engine(f"sqlite+aiosqlite:///{sqlite_log_path}")
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        EventLogEntry.event_id, EventLogEntry.occurred_at, EventLogEntry.received_at
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    read = {event_id: (occurred_at, received_at) for event_id, occurred_at, received_at in rows}
    for event, moment in zip(events, moments, strict=True):
        assert read[event.event_id] == (moment, moment)

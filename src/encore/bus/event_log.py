"""The listening-event log behind one small Protocol; this module holds the database backend.

Producers append batches of events; every event is keyed by (occurred_at, user id, client
event id), so appending the same event twice records it once (a client retry repeats all
three). An event id sent again with another occurred_at is logged again; consumers apply each
(user id, event id) once all the same (`first_seen_events`), as they must anyway for a
JetStream log, whose duplicate window is ten minutes. Consumers are named: each
reads the log in order from its own offset and hands batches to a handler.

Database backend: the `event_log` table and one `event_consumer_offsets` row per consumer.
A batch's handler runs in the same transaction that advances the consumer's offset, so a
handler that writes only to the database applies each event exactly once. A handler with
effects outside the database (the Parquet lake) must make them idempotent: a crash after the
effect and before the commit replays the same batch from the same offset.

On PostgreSQL, positions come from a sequence and concurrent appenders may commit out of
order; every row therefore carries its transaction id and consumers read only rows of
transactions older than the oldest one still running (`pg_snapshot_xmin`), ordered by
(transaction id, position). SQLite has a single writer, so positions commit in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson
import structlog
from sqlalchemy import Table, delete, func, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from encore.db import apply_sqlite_pragmas, dialect_insert, utcnow
from encore.event_log_models import EventConsumerOffset, EventLogEntry
from encore.problems import Problem

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import (
        AsyncConnection,
        AsyncEngine,
        AsyncSession,
        async_sessionmaker,
    )

    from encore.config import Settings

logger = structlog.get_logger("encore.bus.events")

DEFAULT_CONSUMER_POLL_SECONDS = 0.5
"""How long an idle consumer waits before reading the log again."""

SQLITE_BUSY_TIMEOUT_SECONDS = 10.0
"""How long the SQLite writer waits for another writer's lock before giving up on a group."""


class EventLogUnavailable(Problem):
    """The event log did not take the batch in time: nothing is promised, retry."""

    status = 503
    title = "Event log unavailable"
    slug = "event-log-unavailable"


class EventToAppend(NamedTuple):
    """One validated event on its way into the log (a named tuple: ingest makes one per event,
    and a frozen dataclass costs several times as much to build)."""

    user_id: uuid.UUID
    event_id: uuid.UUID
    type: str
    received_at: datetime
    # The whole event as the consumers will read it (JSON object).
    body: bytes
    # The client's time of the event: with the account and the event id, what a retry repeats.
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One event as a consumer reads it back."""

    position: int
    user_id: uuid.UUID
    event_id: uuid.UUID
    received_at: datetime
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """How many events of an append were new, and how many the log already held."""

    appended: int
    duplicates: int


EventBatchHandler = Callable[[Sequence[LoggedEvent], "AsyncSession"], Awaitable[None]]
"""Applies a batch of events; database writes go through the session it is given, which the
log commits together with the consumer's progress."""


@dataclass(frozen=True, slots=True)
class EventConsumer:
    """A named reader of the log, its handler and how it batches."""

    name: str
    handler: EventBatchHandler
    batch_size: int = 1000
    # Wait up to this long for a full batch (fewer, larger Parquet files); 0 = never wait.
    linger_seconds: float = 0.0


FIRST_SEEN_CHUNK = 5000
"""Events recorded per INSERT by `first_seen_events` (three parameters each)."""


async def first_seen_events(
    db_session: AsyncSession,
    batch: Sequence[LoggedEvent],
    *,
    record: type[Any],
    recorded_at: str,
) -> list[LoggedEvent]:
    """The events of the batch a consumer has not handled before, in log order and each once,
    now recorded as handled in `record` (a model keyed by user_id and event_id, stamped in its
    `recorded_at` column) within the consumer's transaction. A log may hand an event over
    again (a redelivery, or a copy from a client's late retry): it is left out."""
    unique: dict[tuple[uuid.UUID, uuid.UUID], LoggedEvent] = {}
    for event in batch:
        unique.setdefault((event.user_id, event.event_id), event)
    if not unique:
        return []
    statement = (
        dialect_insert(db_session)(record)
        .on_conflict_do_nothing(index_elements=[record.user_id, record.event_id])
        .returning(record.user_id, record.event_id)
    )
    now = utcnow()
    rows = [{"user_id": u, "event_id": e, recorded_at: now} for u, e in unique]
    fresh: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for start in range(0, len(rows), FIRST_SEEN_CHUNK):
        result = await db_session.execute(statement, rows[start : start + FIRST_SEEN_CHUNK])
        fresh.update((row.user_id, row.event_id) for row in result)
    return [event for key, event in unique.items() if key in fresh]


class EventLog(Protocol):
    """The durable, deduplicating log of listening events."""

    @property
    def source(self) -> str:
        """A short name of the backend, part of the names of files made from its positions."""
        ...

    async def append(self, events: Sequence[EventToAppend]) -> AppendResult:
        """Record events durably (returns after commit or acknowledgement), each at most once."""
        ...

    async def consume_once(self, consumer: EventConsumer) -> int:
        """Apply the consumer's next batch, if one is due; the number of events it applied."""
        ...

    async def ping(self) -> None:
        """Raise when the log cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def logged_event_from_body(position: int, body: bytes) -> LoggedEvent:
    """Decode an event body as stored by the log."""
    decoded = orjson.loads(body)
    return LoggedEvent(
        position=position,
        user_id=uuid.UUID(decoded["user_id"]),
        event_id=uuid.UUID(decoded["event_id"]),
        received_at=datetime.fromisoformat(decoded["received_at"]),
        body=decoded,
    )


# SQLite stores these columns as SQLAlchemy's Uuid and UTCDateTime types do: 32 hex digits,
# and UTC text with microseconds (text comparison is time order).
# Core, not ORM, statements for appends: the ORM's bulk path costs more than the insert.
_EVENT_LOG: Table = EventLogEntry.__table__  # type: ignore[assignment]
_SQLITE_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_SQLITE_APPEND_PREFIX = (
    "INSERT INTO event_log (user_id, event_id, received_at, occurred_at, body) VALUES "
)
_SQLITE_APPEND_SUFFIX = " ON CONFLICT (occurred_at, user_id, event_id) DO NOTHING"
GROUP_COMMIT_MAX_EVENTS = 5000
"""Events one group commit writes at most (five parameters each: under SQLite's 32,766)."""


def _sqlite_rows(events: Sequence[EventToAppend]) -> tuple[list[str], list[str]]:
    """The INSERT parameters of the events, as SQLAlchemy's Uuid and UTCDateTime store them on
    SQLite, and their keys (user id + event id hex). Plain values: SQLAlchemy's per-row type
    processing cost several times SQLite's own work."""
    parameters: list[str] = []
    keys: list[str] = []
    # An append's events share their account and arrival time (one request): each formatted
    # once. Their times share whole seconds often: each second's text is formatted once.
    user_id: uuid.UUID | None = None
    received_at: datetime | None = None
    user_hex = timestamp = ""
    seconds_text: dict[int, str] = {}
    for event in events:
        if event.user_id is not user_id:
            user_id, user_hex = event.user_id, event.user_id.hex
        if event.received_at is not received_at:
            received_at = event.received_at
            timestamp = received_at.astimezone(UTC).strftime(_SQLITE_TIMESTAMP)
        occurred_at = event.occurred_at
        if occurred_at.tzinfo is not UTC:
            occurred_at = occurred_at.astimezone(UTC)
        # Exact whole seconds since the epoch (a float timestamp may round up a second).
        second = (occurred_at - _EPOCH) // _ONE_SECOND
        second_text = seconds_text.get(second)
        if second_text is None:
            second_text = seconds_text[second] = occurred_at.strftime("%Y-%m-%d %H:%M:%S.")
        event_hex = event.event_id.hex
        parameters += (
            user_hex,
            event_hex,
            timestamp,
            f"{second_text}{occurred_at.microsecond:06d}",
            event.body.decode(),
        )
        keys.append(user_hex + event_hex)
    return parameters, keys


@functools.lru_cache(maxsize=64)
def _sqlite_append_statement(rows: int) -> str:
    # Groups come in a few sizes (multiples of a client's batch): SQLite's statement cache
    # keeps each prepared, and this keeps each string.
    return _SQLITE_APPEND_PREFIX + ",".join(["(?, ?, ?, ?, ?)"] * rows) + _SQLITE_APPEND_SUFFIX


def _insert_into_sqlite(
    connection: sqlite3.Connection, parameters: Sequence[str], keys: Sequence[str]
) -> list[bool]:
    """One multi-row INSERT, its own transaction (autocommit: one call, one wait for the GIL
    after it); which of the keyed events it inserted."""
    cursor = connection.execute(_sqlite_append_statement(len(keys)), parameters)
    inserted = cursor.rowcount
    if inserted == len(keys):
        return [True] * len(keys)  # nearly always: no event was in the log before
    if inserted <= 0:
        return [False] * len(keys)
    # The statement held the only write lock: its rows are the last `inserted` positions up
    # to its last one. Not RETURNING: its rows come one step each, each waiting for the GIL.
    last = cursor.lastrowid or 0
    fresh = connection.execute(
        "SELECT user_id, event_id FROM event_log WHERE position > ? AND position <= ?",
        (last - inserted, last),
    )
    return _inserted_flags(keys, {user + event for user, event in fresh})


@dataclass(slots=True)
class _ThreadedAppend:
    """An append handed to the SQLite writer thread, and where to answer it."""

    parameters: list[str]
    keys: list[str]
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future[AppendResult]


def _answer(result: asyncio.Future[AppendResult], outcome: AppendResult | BaseException) -> None:
    # On the event loop: the request may have gone away (its future cancelled) meanwhile.
    if result.done():
        return
    if isinstance(outcome, BaseException):
        result.set_exception(outcome)
    else:
        result.set_result(outcome)


class _SQLiteWriter:
    """Group commit on SQLite: a thread of its own, with a connection of its own, writes every
    append waiting for it in one transaction, answers each, and starts on the next at once.

    Neither the transaction nor the next one waits for the event loop: through aiosqlite,
    BEGIN, INSERT, fetch and COMMIT were each a hand-off to its thread and back, each waiting its
    turn behind the requests on a busy loop (a 1,500-event group took ~45 ms for ~5 ms of work).
    """

    def __init__(self, path: str, *, busy_timeout_seconds: float = SQLITE_BUSY_TIMEOUT_SECONDS):
        self._path = path
        self._busy_timeout_seconds = busy_timeout_seconds
        self._appends: queue.SimpleQueue[_ThreadedAppend | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # An append taken from the queue that did not fit into the group being written.
        self._carried: _ThreadedAppend | None = None

    async def append(self, events: Sequence[EventToAppend]) -> AppendResult:
        """Insert the events in a committed transaction (shared with the appends waiting with
        them); how many were new."""
        loop = asyncio.get_running_loop()
        # Formatted here, in the request, so that the writer holds the GIL as little as it can.
        parameters, keys = _sqlite_rows(events)
        request = _ThreadedAppend(parameters, keys, loop, loop.create_future())
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_forever, name="encore-event-log-writer", daemon=True
            )
            self._thread.start()
        self._appends.put(request)
        # A request that goes away cancels only its wait: the thread writes its events all the
        # same (no shield, whose extra callback costs a turn of a busy loop).
        return await request.result

    def _next_group(self, first: _ThreadedAppend) -> tuple[list[_ThreadedAppend], bool]:
        """The waiting appends that fit into one transaction with `first`; whether to stop."""
        group = [first]
        size = len(first.keys)
        while size < GROUP_COMMIT_MAX_EVENTS:
            try:
                waiting = self._appends.get_nowait()
            except queue.Empty:
                break
            if waiting is None:
                return group, True
            if size + len(waiting.keys) > GROUP_COMMIT_MAX_EVENTS:
                self._carried = waiting
                break
            group.append(waiting)
            size += len(waiting.keys)
        return group, False

    def _write_forever(self) -> None:
        connection: sqlite3.Connection | None = None
        stopping = False
        try:
            while not stopping:
                first = self._carried or self._appends.get()
                self._carried = None
                if first is None:
                    break
                group, stopping = self._next_group(first)
                try:
                    if connection is None:
                        connection = self._connect()
                    if len(group) == 1:
                        parameters, keys = group[0].parameters, group[0].keys
                    else:
                        parameters = [value for append in group for value in append.parameters]
                        keys = [key for append in group for key in append.keys]
                    inserted = _insert_into_sqlite(connection, parameters, keys)
                except Exception as error:
                    failure: Exception = error
                    if isinstance(error, sqlite3.OperationalError) and (
                        "locked" in str(error) or "busy" in str(error)
                    ):
                        # Another writer held the database all along: nothing was written.
                        logger.warning(
                            "event_append_busy", events=sum(len(append.keys) for append in group)
                        )
                        failure = EventLogUnavailable(
                            "the event log is busy; send the batch again",
                            headers={"Retry-After": "1"},
                        )
                    for append in group:
                        _deliver(append, failure)
                    continue
                results = _results_per_append([len(append.keys) for append in group], inserted)
                for append, result in zip(group, results, strict=True):
                    _deliver(append, result)
        finally:
            if connection is not None:
                connection.close()

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: each INSERT is a transaction of its own, all of its rows or none.
        connection = sqlite3.connect(self._path, isolation_level=None)
        apply_sqlite_pragmas(connection)
        connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_seconds * 1000)}")
        return connection

    async def close(self) -> None:
        """Finish the appends handed over so far, then stop the thread and close its connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._appends.put(None)
            await asyncio.to_thread(thread.join)


def _deliver(append: _ThreadedAppend, outcome: AppendResult | BaseException) -> None:
    """Hand an append's outcome to its event loop (from the writer thread)."""
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
        append.loop.call_soon_threadsafe(_answer, append.result, outcome)


def _results_per_append(counts: Sequence[int], inserted: Sequence[bool]) -> list[AppendResult]:
    """What became of each append of a group commit: its share of the group's inserted flags,
    the appends' events in order."""
    results = []
    start = 0
    for count in counts:
        appended = sum(inserted[start : start + count])
        start += count
        results.append(AppendResult(appended, count - appended))
    return results


def _inserted_flags(keys: Sequence[str], inserted: set[str]) -> list[bool]:
    """Per event key, whether the statement inserted it: only the first of two events with
    one key (sent by two requests at once) did."""
    flags = []
    for key in keys:
        if key in inserted:
            inserted.discard(key)
            flags.append(True)
        else:
            flags.append(False)
    return flags


async def _append_to_postgresql(
    connection: AsyncConnection, events: Sequence[EventToAppend]
) -> list[bool]:
    """asyncpg's batched insert; which of the events it inserted."""
    statement = (
        postgresql_insert(_EVENT_LOG)
        .on_conflict_do_nothing(index_elements=["occurred_at", "user_id", "event_id"])
        .returning(_EVENT_LOG.c.user_id, _EVENT_LOG.c.event_id)
    )
    rows = [
        {
            "user_id": event.user_id,
            "event_id": event.event_id,
            "received_at": event.received_at,
            "occurred_at": event.occurred_at,
            "body": event.body.decode(),
        }
        for event in events
    ]
    result = await connection.execute(statement, rows)
    inserted = {user.hex + event.hex for user, event in result.all()}
    return _inserted_flags([event.user_id.hex + event.event_id.hex for event in events], inserted)


@dataclass
class _PendingAppend:
    events: Sequence[EventToAppend]
    result: asyncio.Future[AppendResult]


class DatabaseEventLog:
    """The event log as a table in Encore's database (SQLite or PostgreSQL)."""

    source = "db"

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        # Group commit: appends that arrive while a transaction is being written wait and go
        # into the next one together, so concurrent requests share one INSERT and one COMMIT
        # (each is still answered only after the commit that holds its events). SQLite's
        # single writer does it in a thread of its own; PostgreSQL's in a task on the loop.
        self._pending: list[_PendingAppend] = []
        self._writer: asyncio.Task[None] | None = None
        engine: AsyncEngine = session_factory.kw["bind"]
        self._sqlite_writer = (
            _SQLiteWriter(str(engine.url.database)) if engine.dialect.name == "sqlite" else None
        )

    async def append(self, events: Sequence[EventToAppend]) -> AppendResult:
        """Insert the events in a committed transaction (shared with appends arriving at the
        same time); events already in the log are left alone."""
        if not events:
            return AppendResult(0, 0)
        if self._sqlite_writer is not None:
            return await self._sqlite_writer.append(events)
        pending = _PendingAppend(events, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        # A request that goes away does not stop the transaction its events are in.
        return await asyncio.shield(pending.result)

    async def _write_pending(self) -> None:
        while self._pending:
            group = [self._pending.pop(0)]
            size = len(group[0].events)
            while self._pending and size + len(self._pending[0].events) <= GROUP_COMMIT_MAX_EVENTS:
                group.append(self._pending.pop(0))
                size += len(group[-1].events)
            try:
                inserted = await self._write_group([event for p in group for event in p.events])
            except BaseException as error:
                for pending in group:
                    if not pending.result.done():
                        pending.result.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                continue
            results = _results_per_append([len(pending.events) for pending in group], inserted)
            for pending, result in zip(group, results, strict=True):
                if not pending.result.done():
                    pending.result.set_result(result)

    async def _write_group(self, events: Sequence[EventToAppend]) -> list[bool]:
        # A Core connection, not an ORM session: appends need no identity map or unit of work.
        engine: AsyncEngine = self._session_factory.kw["bind"]
        async with engine.begin() as connection:
            return await _append_to_postgresql(connection, events)

    async def consume_once(self, consumer: EventConsumer) -> int:
        """Read the consumer's next batch, apply it and move its offset, in one transaction."""
        try:
            return await self._consume_batch(consumer)
        except OperationalError as error:
            # SQLite: another writer committed after this transaction's snapshot (a stale
            # read cannot become a write); the batch is simply read again next time.
            if "locked" in str(error) or "busy" in str(error).lower():
                logger.info("event_consumer_retry", consumer=consumer.name, reason=str(error))
                return 0
            raise

    async def _consume_batch(self, consumer: EventConsumer) -> int:
        async with self._session_factory() as session, session.begin():
            postgres = session.get_bind().dialect.name == "postgresql"
            offset = await session.get(EventConsumerOffset, consumer.name)
            after = (offset.transaction_id, offset.position) if offset else (0, 0)
            query = (
                select(EventLogEntry.position, EventLogEntry.transaction_id, EventLogEntry.body)
                .where(
                    tuple_(EventLogEntry.transaction_id, EventLogEntry.position) > tuple_(*after)
                    if postgres
                    else EventLogEntry.position > after[1]
                )
                .order_by(EventLogEntry.transaction_id, EventLogEntry.position)
                .limit(consumer.batch_size)
            )
            if postgres:
                query = query.where(
                    EventLogEntry.transaction_id
                    < literal_column("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
                )
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            batch = [logged_event_from_body(row.position, row.body.encode()) for row in rows]
            if (
                consumer.linger_seconds > 0
                and len(batch) < consumer.batch_size
                and (utcnow() - batch[0].received_at).total_seconds() < consumer.linger_seconds
            ):
                return 0
            await consumer.handler(batch, session)
            last = rows[-1]
            if not await self._advance(session, consumer.name, offset, last):
                # Another process ran the same consumer over the same batch first: drop ours.
                await session.rollback()
                return 0
        return len(batch)

    async def _advance(
        self,
        session: AsyncSession,
        consumer: str,
        offset: EventConsumerOffset | None,
        last: Any,
    ) -> bool:
        now = utcnow()
        if offset is None:
            insert = (
                postgresql_insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite_insert
            )
            created = await session.execute(
                insert(EventConsumerOffset)
                .values(
                    consumer=consumer,
                    transaction_id=last.transaction_id,
                    position=last.position,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[EventConsumerOffset.consumer])
                .returning(EventConsumerOffset.consumer)
            )
            return created.first() is not None
        moved = await session.execute(
            update(EventConsumerOffset)
            .where(
                EventConsumerOffset.consumer == consumer,
                EventConsumerOffset.transaction_id == offset.transaction_id,
                EventConsumerOffset.position == offset.position,
            )
            .values(transaction_id=last.transaction_id, position=last.position, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(moved, "rowcount", 0))

    async def ping(self) -> None:
        """The database answers (it is the log)."""
        async with self._session_factory() as session:
            await session.execute(select(func.count()).select_from(EventConsumerOffset))

    async def close(self) -> None:
        """Stop the SQLite writer thread, if appends started it (the rest of the log shares the
        app's engine)."""
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()


class EventConsumerPool:
    """Runs each consumer in its own task until stopped: polls, applies, backs off on errors."""

    def __init__(
        self,
        log: EventLog,
        consumers: Sequence[EventConsumer],
        *,
        poll_seconds: float = DEFAULT_CONSUMER_POLL_SECONDS,
    ) -> None:
        self._log = log
        self._consumers = list(consumers)
        self._poll_seconds = poll_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start one task per consumer."""
        self._stopping.clear()
        for consumer in self._consumers:
            self._tasks.append(
                asyncio.create_task(self._run(consumer), name=f"event-consumer-{consumer.name}")
            )

    async def stop(self) -> None:
        """Stop after the batches in hand (a batch is applied in one transaction, or not)."""
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, consumer: EventConsumer) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                applied = await self._log.consume_once(consumer)
                failures = 0
            except Exception:
                failures += 1
                logger.exception("event_consumer_failed", consumer=consumer.name)
                applied = 0
                # Back off (capped) so a poisoned batch or an outage does not spin the CPU.
                await self._pause(min(30.0, self._poll_seconds * 2**failures))
                continue
            if applied == 0:
                await self._pause(self._poll_seconds)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


async def prune_consumed_events(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    consumers: Sequence[str],
    received_before: datetime,
    chunk: int = 10_000,
) -> int:
    """Delete the database log's events that every one of these consumers has applied and
    that arrived before `received_before` (the log's retention, as JetStream's max age does for
    its stream), `chunk` rows per committed transaction, the newest event excepted; how many.
    Nothing while a consumer has not read at all. A client's retry of a deleted event is
    appended again; the consumers' own records of applied events (kept longer than any retry
    can come) make it harmless."""
    async with session_factory() as session:
        offsets = (
            await session.scalars(
                select(EventConsumerOffset).where(EventConsumerOffset.consumer.in_(consumers))
            )
        ).all()
        if not consumers or len(offsets) < len(set(consumers)):
            return 0
        lowest = min((offset.transaction_id, offset.position) for offset in offsets)
        # The consumers' own order (see _consume_batch): by transaction, then position.
        consumed = (
            tuple_(EventLogEntry.transaction_id, EventLogEntry.position) <= tuple_(*lowest)
            if session.get_bind().dialect.name == "postgresql"
            else EventLogEntry.position <= lowest[1]
        )
        # The newest event always stays: SQLite numbers a new row one past the highest left,
        # and an emptied table would number new events below the consumers' offsets.
        newest = select(func.max(EventLogEntry.position)).scalar_subquery()
        total = 0
        while True:
            doomed = (
                select(EventLogEntry.position)
                .where(
                    consumed,
                    EventLogEntry.received_at < received_before,
                    EventLogEntry.position < newest,
                )
                .order_by(EventLogEntry.position)
                .limit(chunk)
                .scalar_subquery()
            )
            result = await session.execute(
                delete(EventLogEntry)
                .where(EventLogEntry.position.in_(doomed))
                .execution_options(synchronize_session=False)
            )
            await session.commit()
            removed = int(getattr(result, "rowcount", 0) or 0)
            total += removed
            if removed < chunk:
                return total


async def drain_event_consumers(log: EventLog, consumers: Sequence[EventConsumer]) -> int:
    """Apply every due batch of every consumer until none has anything left (tests, CLI)."""
    total = 0
    while True:
        applied = 0
        for consumer in consumers:
            applied += await log.consume_once(consumer)
        total += applied
        if applied == 0:
            return total


async def open_event_log(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> EventLog:
    """The event log of this deployment: JetStream when `bus_url` is set, else the database."""
    if settings.bus_url:
        from encore.bus.jetstream_events import JetStreamEventLog

        return await JetStreamEventLog.connect(settings, session_factory)
    return DatabaseEventLog(session_factory)

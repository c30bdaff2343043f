"""Durable job queue behind one small Protocol; this module holds the database backend.

A job is a kind, a JSON payload and the bookkeeping of its tries. Producers add jobs with
`enqueue_job` inside their own transaction, so a job exists if and only if their write
commits. Workers (`WorkerPool`, or `encore worker`) claim a due job with a lease, run the
handler registered for its kind while renewing the lease, and complete it. A failure puts the
job back with exponential back-off until `job_max_attempts` tries send it to the `dead` state;
a worker that dies mid-job stops renewing its lease and another worker claims the job once the
lease has expired.

Delivery is therefore at least once: a handler may run more than once for the same job (a
worker lost after the work but before `complete`), so every handler must be idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeAlias

import structlog
from sqlalchemy import ColumnElement, delete, event, func, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from encore.db import dialect_insert, new_id, utcnow
from encore.jobs_models import (
    ACTIVE_JOB_PREDICATE,
    MAX_KEY_LENGTH,
    MAX_KIND_LENGTH,
    JobRecord,
    JobState,
)

if TYPE_CHECKING:
    from types import TracebackType

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from encore.config import Settings
    from encore.storage import BlobStore

logger = structlog.get_logger("encore.bus")

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "MAX_ERROR_LENGTH",
    "NOOP_JOB_KIND",
    "RELAY_INTERVAL",
    "RETRY_DELAY_CAP",
    "DatabaseJobQueue",
    "Job",
    "JobAnnouncement",
    "JobContext",
    "JobHandler",
    "JobQueue",
    "JobState",
    "PermanentJobError",
    "WorkerPool",
    "enqueue_job",
    "open_job_queue",
    "register_job_announcer",
    "retry_delay",
    "run_noop_job",
    "run_workers",
    "truncate_error",
]

RETRY_DELAY_CAP = timedelta(minutes=10)
"""The longest a failed job waits before its next try."""

MAX_ERROR_LENGTH = 4000
"""Characters of a failure kept in `last_error`; a traceback can run much longer."""

DEFAULT_POLL_INTERVAL = 1.0
"""Seconds an idle worker waits before looking for due jobs again (jobs enqueued in the same
process wake it at once)."""

NOOP_JOB_KIND = "noop"
"""A built-in kind whose handler does nothing: shows that workers are running and settling."""

RELAY_INTERVAL = 30.0
"""Seconds between a worker pool's sweeps for jobs whose announcement to a broker may have been
lost (backends without a broker have nothing to sweep)."""
PURGE_INTERVAL = 86_400.0
"""Seconds between a worker pool's deletions of jobs finished longer ago than
`jobs_retention_days`."""

_ACTIVE_STATES = (JobState.queued, JobState.running)
_ENQUEUED_FLAG = "encore.bus.enqueued"
_ANNOUNCEMENTS = "encore.bus.announcements"


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the queue reports it (a snapshot: the stored job may have moved on)."""

    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    state: JobState
    attempts: int
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    dedupe_key: str | None = None
    group_key: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    finished_at: datetime | None = None


class PermanentJobError(Exception):
    """Raised by a handler when its job can never succeed (bad input): no retry, dead at once."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler gets beside the payload: the job and the process's resources."""

    job: Job
    worker_id: str
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    store: BlobStore


@dataclass(frozen=True, slots=True)
class JobAnnouncement:
    """A job that became due to run when its transaction committed (for a broker to carry)."""

    id: uuid.UUID
    kind: str
    # When the job was queued (its updated_at then): tells a re-queued job from its first run.
    queued_at: datetime


JobHandler: TypeAlias = Callable[[dict[str, Any], JobContext], Coroutine[Any, Any, None]]
"""Runs one job. It must be idempotent: a job can be delivered again after a lost worker.
Raise PermanentJobError for input that will never work; any other exception is retried."""


class JobQueue(Protocol):
    """Where jobs wait, are leased to workers and settle; one backend per deployment."""

    async def enqueue(
        self,
        *,
        kind: str,
        payload: Mapping[str, Any],
        dedupe_key: str | None = None,
        group_key: str | None = None,
        run_after: datetime | None = None,
    ) -> uuid.UUID:
        """Add a job on its own (outside any caller's transaction); its id."""
        ...

    async def claim(self, worker_id: str, kinds: Collection[str], lease: timedelta) -> Job | None:
        """Lease the oldest due job of these kinds to `worker_id`, counting a try; None if none."""
        ...

    async def extend_lease(self, job_id: uuid.UUID, worker_id: str, lease: timedelta) -> bool:
        """Renew the lease for `lease` from now; False when the job is no longer ours."""
        ...

    async def complete(self, job_id: uuid.UUID, worker_id: str) -> bool:
        """Mark our running job done; False when the job is no longer ours."""
        ...

    async def fail(
        self, job_id: uuid.UUID, worker_id: str, error: str, *, permanent: bool = False
    ) -> JobState | None:
        """Record a failed try: queued for a later retry or dead; None when no longer ours."""
        ...

    async def release(self, job_id: uuid.UUID, worker_id: str) -> bool:
        """Give our running job back untried (worker stopping): due now, the try not counted."""
        ...

    async def get_job(self, job_id: uuid.UUID) -> Job | None:
        """The job with this id, or None."""
        ...

    async def job_counts_by_state(
        self, *, kinds: Collection[str] | None = None, group_key: str | None = None
    ) -> dict[JobState, int]:
        """How many jobs (of these kinds, of this group) are in each state; every state listed."""
        ...

    async def list_dead_jobs(
        self, *, kinds: Collection[str] | None = None, limit: int = 100
    ) -> list[Job]:
        """The dead jobs (of these kinds), most recently given up first."""
        ...

    async def requeue_dead_job(self, job_id: uuid.UUID) -> bool:
        """Give a dead job a fresh set of tries; False if not dead or its key is taken again."""
        ...

    async def purge_finished_jobs(self, *, finished_before: datetime) -> int:
        """Delete jobs done before this time (dead ones are kept for inspection); how many."""
        ...

    async def open(self) -> None:
        """Start carrying jobs committed in this process to the workers (a broker backend)."""
        ...

    async def close(self) -> None:
        """Stop carrying jobs and let go of connections; the queue can be opened again."""
        ...

    async def ping(self) -> None:
        """Raise if the queue's backend cannot be reached."""
        ...

    async def relay_unannounced_jobs(self) -> int:
        """Hand the workers due jobs whose announcement may have been lost; how many."""
        ...


def _job_from_record(record: JobRecord) -> Job:
    return Job(
        id=record.id,
        kind=record.kind,
        payload=dict(record.payload),
        state=JobState(record.state),
        attempts=record.attempts,
        run_after=record.run_after,
        created_at=record.created_at,
        updated_at=record.updated_at,
        dedupe_key=record.dedupe_key,
        group_key=record.group_key,
        lease_owner=record.lease_owner,
        lease_expires_at=record.lease_expires_at,
        last_error=record.last_error,
        finished_at=record.finished_at,
    )


def _state_is(column: Any, state: JobState) -> ColumnElement[bool]:
    # A literal, not a bound parameter: PostgreSQL uses a partial index only when it can prove
    # the index's predicate from the query text, which a generic prepared plan's $1 never does.
    condition: ColumnElement[bool] = column == literal_column(f"'{state.value}'")
    return condition


def _check_key(name: str, value: str | None, max_length: int) -> None:
    if value is not None and not 0 < len(value) <= max_length:
        raise ValueError(f"{name} must be 1 to {max_length} characters")


def truncate_error(error: str) -> str:
    """The error cut to MAX_ERROR_LENGTH characters (its start, which names the exception)."""
    if len(error) <= MAX_ERROR_LENGTH:
        return error
    return error[: MAX_ERROR_LENGTH - 1] + "…"


def retry_delay(attempts: int) -> timedelta:
    """How long a job that failed its `attempts`-th try waits: about 2^attempts s, capped."""
    ceiling = min(RETRY_DELAY_CAP.total_seconds(), 2.0 ** min(max(attempts, 0), 32))
    # Half fixed, half random: the jobs of a batch that failed together do not retry in step.
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311


async def enqueue_job(
    *,
    db_session: AsyncSession,
    kind: str,
    payload: Mapping[str, Any],
    dedupe_key: str | None = None,
    group_key: str | None = None,
    run_after: datetime | None = None,
) -> uuid.UUID:
    """Add a job in the caller's transaction; with a dedupe key already queued, that job's id.

    The job becomes visible to workers when the caller commits and vanishes if it rolls back.
    `dedupe_key` is scoped to the kind and held while the job is queued or running.
    """
    _check_key("kind", kind, MAX_KIND_LENGTH)
    _check_key("dedupe_key", dedupe_key, MAX_KEY_LENGTH)
    _check_key("group_key", group_key, MAX_KEY_LENGTH)
    now = utcnow()
    insert = dialect_insert(db_session)
    # A bounded loop: the twin found by the key may finish between the insert and the lookup.
    for _ in range(5):
        statement = insert(JobRecord).values(
            id=new_id(),
            kind=kind,
            payload=dict(payload),
            state=JobState.queued,
            dedupe_key=dedupe_key,
            group_key=group_key,
            attempts=0,
            run_after=run_after or now,
            created_at=now,
            updated_at=now,
        )
        if dedupe_key is not None:
            # ON CONFLICT, not a caught IntegrityError: an error would abort the caller's whole
            # transaction on PostgreSQL.
            statement = statement.on_conflict_do_nothing(
                index_elements=[JobRecord.kind, JobRecord.dedupe_key],
                index_where=text(ACTIVE_JOB_PREDICATE),
            )
        inserted = await db_session.scalar(statement.returning(JobRecord.id))
        if inserted is not None:
            db_session.info[_ENQUEUED_FLAG] = True
            job_id: uuid.UUID = inserted
            _remember_announcement(db_session.info, JobAnnouncement(job_id, kind, now))
            return job_id
        existing = await db_session.scalar(
            select(JobRecord.id).where(
                JobRecord.kind == kind,
                JobRecord.dedupe_key == dedupe_key,
                JobRecord.state.in_(_ACTIVE_STATES),
            )
        )
        if existing is not None:
            twin_id: uuid.UUID = existing
            return twin_id
    raise RuntimeError(f"could not enqueue a {kind} job with dedupe key {dedupe_key!r}")


def _remember_announcement(info: dict[Any, Any], announcement: JobAnnouncement) -> None:
    info.setdefault(_ANNOUNCEMENTS, []).append(announcement)


def take_announcements(info: dict[Any, Any]) -> list[JobAnnouncement]:
    """The jobs enqueued so far in this session's transaction, taken out of its care.

    For a queue that announces them itself after its own commit (instead of the commit hook).
    """
    taken: list[JobAnnouncement] = info.pop(_ANNOUNCEMENTS, [])
    return taken


# In-process wake-ups: worker pools of this process hear of a commit that enqueued a job at once,
# instead of at their next poll.
_local_wakeups: set[Callable[[], None]] = set()

JobAnnouncer: TypeAlias = Callable[[Session, tuple[JobAnnouncement, ...]], None]
"""Told, in the commit hook, which jobs a session's transaction just committed; it must not
block (a broker backend schedules the publishing on the running event loop)."""

_job_announcers: set[JobAnnouncer] = set()


def register_job_announcer(announcer: JobAnnouncer) -> Callable[[], None]:
    """Have `announcer` hear of every commit that enqueued jobs; the call that unregisters it."""
    _job_announcers.add(announcer)
    return lambda: _job_announcers.discard(announcer)


def _wake_local_workers(session: Session) -> None:
    announcements = tuple(session.info.pop(_ANNOUNCEMENTS, ()))
    if announcements:
        for announce in tuple(_job_announcers):
            try:
                announce(session, announcements)
            except Exception:
                # The commit stands; the relay of a worker pool hands these jobs out later.
                logger.exception("job_announce_failed", jobs=len(announcements))
    if session.info.pop(_ENQUEUED_FLAG, False):
        for wake in tuple(_local_wakeups):
            wake()


def _forget_enqueued(session: Session, *_args: Any) -> None:
    session.info.pop(_ENQUEUED_FLAG, None)
    session.info.pop(_ANNOUNCEMENTS, None)


event.listen(Session, "after_commit", _wake_local_workers)
event.listen(Session, "after_rollback", _forget_enqueued)


class DatabaseJobQueue:
    """The job queue as a table in Encore's database (SQLite or PostgreSQL).

    Claims take `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent workers never
    wait on each other's rows; on SQLite every claim is a single writer transaction whose first
    statement writes, so it holds the write lock before it reads and cannot race. Time comes
    from `clock`, so tests can move it instead of sleeping.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        max_attempts: int = 5,
        clock: Callable[[], datetime] = utcnow,
        backoff: Callable[[int], timedelta] = retry_delay,
    ) -> None:
        self._session_factory = session_factory
        self._max_attempts = max_attempts
        self._clock = clock
        self._backoff = backoff

    async def enqueue(
        self,
        *,
        kind: str,
        payload: Mapping[str, Any],
        dedupe_key: str | None = None,
        group_key: str | None = None,
        run_after: datetime | None = None,
    ) -> uuid.UUID:
        """Add a job in a transaction of its own; its id."""
        async with self._session_factory() as session, session.begin():
            return await enqueue_job(
                db_session=session,
                kind=kind,
                payload=payload,
                dedupe_key=dedupe_key,
                group_key=group_key,
                run_after=run_after or self._clock(),
            )

    def _claim_statement(
        self,
        *,
        worker_id: str,
        kinds: tuple[str, ...],
        lease: timedelta,
        now: datetime,
        lease_expired: bool,
    ) -> Any:
        candidate = aliased(JobRecord, name="candidate")
        if lease_expired:
            due = (_state_is(candidate.state, JobState.running), candidate.lease_expires_at <= now)
            order = (candidate.lease_expires_at, candidate.id)
        else:
            due = (_state_is(candidate.state, JobState.queued), candidate.run_after <= now)
            order = (candidate.run_after, candidate.id)
        chosen = (
            select(candidate.id)
            .where(candidate.kind.in_(kinds), *due)
            .order_by(*order)
            .limit(1)
            .with_for_update(skip_locked=True)  # PostgreSQL only; SQLite has one writer anyway
            .scalar_subquery()
        )
        values: dict[str, Any] = {
            "state": JobState.running,
            "lease_owner": worker_id,
            "lease_expires_at": now + lease,
            "attempts": JobRecord.attempts + 1,
            "updated_at": now,
        }
        if lease_expired:
            values["last_error"] = (
                "the lease of worker "
                + func.coalesce(JobRecord.lease_owner, "?")
                + " expired before the job settled (worker stopped or stuck)"
            )
        return (
            update(JobRecord)
            .where(JobRecord.id == chosen)
            .values(**values)
            .returning(JobRecord)
            .execution_options(synchronize_session=False)
        )

    async def claim(self, worker_id: str, kinds: Collection[str], lease: timedelta) -> Job | None:
        """Lease the oldest due job of these kinds to `worker_id`, counting a try; None if none.

        Jobs whose worker's lease expired come first; one that has used up its tries that way
        (it keeps killing its worker) goes to dead instead of being handed out again.
        """
        wanted = tuple(kinds)
        if not wanted:
            return None
        async with self._session_factory() as session, session.begin():
            while True:
                now = self._clock()
                record: JobRecord | None = None
                for lease_expired in (True, False):
                    record = await session.scalar(
                        self._claim_statement(
                            worker_id=worker_id,
                            kinds=wanted,
                            lease=lease,
                            now=now,
                            lease_expired=lease_expired,
                        )
                    )
                    if record is not None:
                        break
                if record is None:
                    return None
                if record.attempts <= self._max_attempts:
                    return _job_from_record(record)
                await session.execute(
                    update(JobRecord)
                    .where(JobRecord.id == record.id)
                    .values(
                        state=JobState.dead,
                        # The claim above only found the job dead: it was not a try.
                        attempts=record.attempts - 1,
                        lease_expires_at=None,
                        finished_at=now,
                        updated_at=now,
                    )
                )
                logger.warning(
                    "job_dead",
                    job_id=str(record.id),
                    kind=record.kind,
                    attempts=record.attempts - 1,
                    reason="lease expired on every try",
                )

    def _owned(self, job_id: uuid.UUID, worker_id: str) -> tuple[ColumnElement[bool], ...]:
        return (
            JobRecord.id == job_id,
            JobRecord.lease_owner == worker_id,
            _state_is(JobRecord.state, JobState.running),
        )

    async def _update_owned(
        self, job_id: uuid.UUID, worker_id: str, values: dict[str, Any]
    ) -> bool:
        async with self._session_factory() as session, session.begin():
            updated = await session.scalar(
                update(JobRecord)
                .where(*self._owned(job_id, worker_id))
                .values(**values)
                .returning(JobRecord.id)
            )
        return updated is not None

    async def extend_lease(self, job_id: uuid.UUID, worker_id: str, lease: timedelta) -> bool:
        """Renew the lease for `lease` from now; False when the job is no longer ours."""
        now = self._clock()
        return await self._update_owned(
            job_id, worker_id, {"lease_expires_at": now + lease, "updated_at": now}
        )

    async def complete(self, job_id: uuid.UUID, worker_id: str) -> bool:
        """Mark our running job done; False when the job is no longer ours."""
        now = self._clock()
        return await self._update_owned(
            job_id,
            worker_id,
            {
                "state": JobState.done,
                "lease_expires_at": None,
                "finished_at": now,
                "updated_at": now,
            },
        )

    async def fail(
        self, job_id: uuid.UUID, worker_id: str, error: str, *, permanent: bool = False
    ) -> JobState | None:
        """Record a failed try: queued for a later retry or dead; None when no longer ours."""
        now = self._clock()
        async with self._session_factory() as session, session.begin():
            # An UPDATE first, not a SELECT: it takes the row lock (and SQLite's write lock)
            # before the tries are read, so nobody claims the job between the two statements.
            attempts = await session.scalar(
                update(JobRecord)
                .where(*self._owned(job_id, worker_id))
                .values(updated_at=now)
                .returning(JobRecord.attempts)
            )
            if attempts is None:
                return None
            values: dict[str, Any] = {"lease_expires_at": None, "last_error": truncate_error(error)}
            if permanent or attempts >= self._max_attempts:
                values |= {"state": JobState.dead, "finished_at": now}
            else:
                values |= {"state": JobState.queued, "run_after": now + self._backoff(attempts)}
            await session.execute(update(JobRecord).where(JobRecord.id == job_id).values(**values))
        state: JobState = values["state"]
        return state

    async def release(self, job_id: uuid.UUID, worker_id: str) -> bool:
        """Give our running job back untried (worker stopping): due now, the try not counted."""
        now = self._clock()
        return await self._update_owned(
            job_id,
            worker_id,
            {
                "state": JobState.queued,
                "attempts": JobRecord.attempts - 1,
                "run_after": now,
                "lease_expires_at": None,
                "updated_at": now,
            },
        )

    async def get_job(self, job_id: uuid.UUID) -> Job | None:
        """The job with this id, or None."""
        async with self._session_factory() as session:
            record = await session.get(JobRecord, job_id)
            return _job_from_record(record) if record is not None else None

    async def job_counts_by_state(
        self, *, kinds: Collection[str] | None = None, group_key: str | None = None
    ) -> dict[JobState, int]:
        """How many jobs (of these kinds, of this group) are in each state; every state listed."""
        statement = select(JobRecord.state, func.count()).group_by(JobRecord.state)
        if kinds is not None:
            statement = statement.where(JobRecord.kind.in_(tuple(kinds)))
        if group_key is not None:
            statement = statement.where(JobRecord.group_key == group_key)
        counts = dict.fromkeys(JobState, 0)
        async with self._session_factory() as session:
            for state, count in await session.execute(statement):
                counts[JobState(state)] = count
        return counts

    async def list_dead_jobs(
        self, *, kinds: Collection[str] | None = None, limit: int = 100
    ) -> list[Job]:
        """The dead jobs (of these kinds), most recently given up first."""
        statement = (
            select(JobRecord)
            .where(_state_is(JobRecord.state, JobState.dead))
            .order_by(JobRecord.finished_at.desc(), JobRecord.id.desc())
            .limit(limit)
        )
        if kinds is not None:
            statement = statement.where(JobRecord.kind.in_(tuple(kinds)))
        async with self._session_factory() as session:
            return [_job_from_record(record) for record in await session.scalars(statement)]

    async def requeue_dead_job(self, job_id: uuid.UUID) -> bool:
        """Give a dead job a fresh set of tries; False if not dead or its key is taken again."""
        now = self._clock()
        try:
            async with self._session_factory() as session, session.begin():
                requeued = await session.scalar(
                    update(JobRecord)
                    .where(JobRecord.id == job_id, _state_is(JobRecord.state, JobState.dead))
                    .values(
                        state=JobState.queued,
                        attempts=0,
                        run_after=now,
                        lease_owner=None,
                        finished_at=None,
                        updated_at=now,
                    )
                    .returning(JobRecord.id)
                )
                if requeued is not None:
                    session.info[_ENQUEUED_FLAG] = True
        except IntegrityError:
            # A newer job with the same dedupe key is queued or running: that one will do.
            return False
        return requeued is not None

    async def purge_finished_jobs(self, *, finished_before: datetime) -> int:
        """Delete jobs done before this time (dead ones are kept for inspection); how many."""
        async with self._session_factory() as session, session.begin():
            deleted = await session.scalars(
                delete(JobRecord)
                .where(
                    _state_is(JobRecord.state, JobState.done),
                    JobRecord.finished_at < finished_before,
                )
                .returning(JobRecord.id)
            )
            return len(deleted.all())

    async def open(self) -> None:
        """Nothing to open: workers find committed jobs in the table."""

    async def close(self) -> None:
        """Nothing to close: sessions come from the caller's factory."""

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self._session_factory() as session:
            await session.execute(select(literal_column("1")))

    async def relay_unannounced_jobs(self) -> int:
        """Nothing to relay: the table is the queue."""
        return 0


def open_job_queue(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> JobQueue:
    """The job queue of this deployment: JetStream when `bus_url` is set, else the database."""
    if settings.bus_url:
        from encore.bus.jetstream_jobs import JetStreamJobQueue

        return JetStreamJobQueue.from_settings(settings, session_factory)
    return DatabaseJobQueue(session_factory, max_attempts=settings.job_max_attempts)


async def run_noop_job(payload: dict[str, Any], context: JobContext) -> None:
    """Do nothing: the handler of NOOP_JOB_KIND, which checks that workers run."""
    logger.debug("noop_job", job_id=str(context.job.id))


def _describe_failure(exc: BaseException) -> str:
    summary = f"{type(exc).__name__}: {exc}"
    return truncate_error(f"{summary}\n\n{''.join(traceback.format_exception(exc))}")


class WorkerPool:
    """`count` workers in this process: each claims a job, runs its handler, settles it.

    While a handler runs, a heartbeat renews the job's lease every third of the lease; if the
    lease was lost (another worker took the job over), the handler is cancelled. `stop()` lets
    running jobs finish (within `grace`), then cancels them and gives their jobs back.
    """

    def __init__(
        self,
        *,
        queue: JobQueue,
        handlers: Mapping[str, JobHandler],
        count: int,
        lease: timedelta,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        store: BlobStore | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        relay_interval: float = RELAY_INTERVAL,
        purge_interval: float = PURGE_INTERVAL,
        owns_queue: bool = False,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._queue = queue
        self._owns_queue = owns_queue
        self._relay_interval = relay_interval
        self._relay: asyncio.Task[None] | None = None
        self._purge_interval = purge_interval
        self._purge: asyncio.Task[None] | None = None
        self._handlers = dict(handlers)
        self._count = count
        self._lease = lease
        self._settings = settings
        self._session_factory = session_factory
        self._store = store
        self._poll_interval = poll_interval
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(
        cls,
        *,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        handlers: Mapping[str, JobHandler] | None = None,
        count: int | None = None,
        store: BlobStore | None = None,
    ) -> WorkerPool:
        """A pool as configured: `settings.workers` workers, the registered handlers."""
        if handlers is None:
            from encore.jobs_registry import default_handlers

            handlers = default_handlers()
        return cls(
            queue=open_job_queue(settings, session_factory),
            handlers=handlers,
            count=settings.workers if count is None else count,
            lease=timedelta(seconds=settings.job_lease_seconds),
            settings=settings,
            session_factory=session_factory,
            store=store,
            owns_queue=True,
        )

    @property
    def queue(self) -> JobQueue:
        """The queue this pool's workers take their jobs from."""
        return self._queue

    @property
    def worker_ids(self) -> list[str]:
        """The ids the workers of this pool claim jobs under."""
        return [f"{self._name}:{number}" for number in range(self._count)]

    @property
    def kinds(self) -> list[str]:
        """The job kinds this pool runs."""
        return sorted(self._handlers)

    async def start(self) -> None:
        """Open the queue and start the workers (none when `count` is 0 or no handler is
        registered: the queue still carries the jobs this process enqueues)."""
        if self._tasks:
            raise RuntimeError("the worker pool is already running")
        await self._queue.open()
        if self._count <= 0 or not self._handlers:
            return
        if self._store is None:
            from encore.storage import open_blob_store

            self._store = open_blob_store(self._settings)
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        _local_wakeups.add(self.wake)
        for worker_id in self.worker_ids:
            task = asyncio.create_task(self._work(worker_id), name=f"job-worker {worker_id}")
            self._tasks.add(task)
        self._relay = asyncio.create_task(
            self._repeat(self._relay_jobs, self._relay_interval, "job_relay_failed"),
            name=f"job-relay {self._name}",
        )
        # Every worker process purges (an idempotent delete), so it happens even where
        # processes restart more often than daily.
        self._purge = asyncio.create_task(
            self._repeat(self._purge_finished_jobs, self._purge_interval, "job_purge_failed"),
            name=f"job-purge {self._name}",
        )
        logger.info("workers_started", count=self._count, kinds=self.kinds)

    def wake(self) -> None:
        """Make idle workers look for jobs now (safe from any thread)."""
        if self._loop is None:
            return
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def stop(self, *, grace: float | None = None) -> None:
        """Claim no more jobs; wait for running ones (up to `grace` s), then cancel the rest."""
        self._stopping.set()
        self._wakeup.set()
        # Kept in self._tasks while waiting, so that abort() can still cut the wait short.
        tasks = set(self._tasks)
        try:
            if tasks:
                _finished, pending = await asyncio.wait(tasks, timeout=grace)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
        finally:
            for task in tasks:
                task.cancel()
            self._tasks.clear()
            _local_wakeups.discard(self.wake)
            for background in (self._relay, self._purge):
                if background is not None:
                    background.cancel()
                    await asyncio.wait({background})
            self._relay = self._purge = None
            if self._owns_queue:
                await self._queue.close()
        if tasks:
            logger.info("workers_stopped", count=len(tasks))

    def abort(self) -> None:
        """Cancel running jobs now; each is given back to the queue (or left to lease expiry)."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._relay is not None:
            self._relay.cancel()
        if self._purge is not None:
            self._purge.cancel()

    async def __aenter__(self) -> Self:
        """Start the workers."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the workers: running jobs finish, unless the block raised."""
        # Leaving on an error must not hang on a stuck handler: its job goes back at once.
        await self.stop(grace=None if exc is None else 0)

    @staticmethod
    async def _repeat(
        action: Callable[[], Awaitable[None]], interval: float, failure_event: str
    ) -> None:
        # At start, then every interval; a failure is logged and the next round tries again.
        while True:
            try:
                await action()
            except Exception:
                logger.warning(failure_event, exc_info=True)
            await asyncio.sleep(interval)

    async def _purge_finished_jobs(self) -> None:
        retention = timedelta(days=self._settings.jobs_retention_days)
        purged = await self._queue.purge_finished_jobs(finished_before=utcnow() - retention)
        if purged:
            logger.info("finished_jobs_purged", count=purged)

    async def _relay_jobs(self) -> None:
        relayed = await self._queue.relay_unannounced_jobs()
        if relayed:
            logger.info("jobs_relayed", count=relayed)

    async def _idle(self) -> None:
        try:
            async with asyncio.timeout(self._poll_interval):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _work(self, worker_id: str) -> None:
        kinds = self.kinds
        while not self._stopping.is_set():
            try:
                job = await self._queue.claim(worker_id, kinds, self._lease)
            except Exception:
                # The database may be briefly away (restart, failover): try again later.
                logger.exception("job_claim_failed", worker=worker_id)
                job = None
            if job is None:
                await self._idle()
                continue
            await self._run(worker_id, job)

    async def _run(self, worker_id: str, job: Job) -> None:
        log = logger.bind(job_id=str(job.id), kind=job.kind, attempt=job.attempts, worker=worker_id)
        assert self._store is not None  # set by start()
        context = JobContext(
            job=job,
            worker_id=worker_id,
            settings=self._settings,
            session_factory=self._session_factory,
            store=self._store,
        )
        started = time.monotonic()
        handler = asyncio.create_task(self._handlers[job.kind](dict(job.payload), context))
        heartbeat = asyncio.create_task(self._keep_lease(worker_id, job, handler, log))
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # Stopped without waiting: give the job back so another worker starts it now.
                await self._give_back(worker_id, job, log)
                raise
            log.warning("job_interrupted")
        except PermanentJobError as exc:
            log.warning("job_rejected", error=str(exc))
            await self._settle(
                self._queue.fail(job.id, worker_id, _describe_failure(exc), permanent=True), log
            )
        except Exception as exc:
            log.warning("job_failed", exc_info=True)
            await self._settle(self._queue.fail(job.id, worker_id, _describe_failure(exc)), log)
        else:
            log.info("job_done", seconds=round(time.monotonic() - started, 3))
            await self._settle(self._queue.complete(job.id, worker_id), log)
        finally:
            heartbeat.cancel()
            await asyncio.wait({heartbeat})

    async def _settle(self, settling: Awaitable[bool | JobState | None], log: Any) -> None:
        try:
            outcome = await settling
        except Exception:
            # The lease runs out and the job is tried again: handlers are idempotent.
            log.exception("job_settle_failed")
            return
        if outcome is None or outcome is False:
            log.warning("job_lease_lost", detail="another worker took the job over")
        elif outcome is JobState.dead:
            log.error("job_dead")

    async def _give_back(self, worker_id: str, job: Job, log: Any) -> None:
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self._queue.release(job.id, worker_id))
        except (Exception, asyncio.CancelledError):
            log.warning("job_release_failed", detail="it runs again when its lease expires")

    async def _keep_lease(
        self, worker_id: str, job: Job, handler: asyncio.Task[None], log: Any
    ) -> None:
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                kept = await self._queue.extend_lease(job.id, worker_id, self._lease)
            except Exception:
                log.warning("job_lease_extend_failed", exc_info=True)
                continue
            if not kept:
                # Another worker owns the job now; this run's result would not count.
                log.warning("job_lease_lost", detail="cancelling the handler")
                handler.cancel()
                return


async def run_workers(
    *,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    handlers: Mapping[str, JobHandler],
    count: int,
    stop: asyncio.Event,
    grace: float | None = None,
) -> None:
    """Run `count` workers until `stop` is set, then let running jobs finish (up to `grace`)."""
    pool = WorkerPool.from_settings(
        settings=settings, session_factory=session_factory, handlers=handlers, count=count
    )
    await pool.start()
    try:
        await stop.wait()
    finally:
        await pool.stop(grace=grace)

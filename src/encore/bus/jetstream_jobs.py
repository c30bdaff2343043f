"""The job queue's NATS JetStream backend (`ENCORE_BUS_URL=nats://...`).

The jobs table stays the record of every job and its outbox: `enqueue_job` still writes the row
in the producer's transaction, so a job exists if and only if that write commits, and every
introspection call (`get_job`, counts, dead letters, purge) reads the table as before. What
JetStream adds is the delivery: after the commit, each new job is published to the work-queue
stream JOBS on the subject `jobs.<kind>.<job id>`, and workers pull from one durable consumer
per kind instead of polling the table.

- Publishing sets `Nats-Expected-Last-Subject-Sequence: 0` (only if no message for this job is
  waiting) and `Nats-Msg-Id` (the job and when it was queued), so any number of publishers of
  the same job (the commit hook of each queue on that database, a relay) leave one message.
- A worker pool's relay re-publishes queued jobs, and running jobs whose lease has expired, on
  start and then every RELAY_INTERVAL: a process that died between commit and publish loses
  nothing.
- A delivery is claimed by an UPDATE of its row, exactly as the database backend claims, so the
  row says who holds the job; a message whose row is not claimable is settled by the row: a
  finished job's message is terminated, a job not yet due (back-off, scheduled, or held under a
  live lease) is NAKed with the delay left.
- The consumer's ack_wait is the lease: the heartbeat sends `in_progress()` with each renewal,
  a worker killed mid-job stops both and JetStream redelivers after ack_wait; the row's expired
  lease lets the next worker take the job over (a try counted).
- A failed try NAKs with the delay of `retry_delay(attempts)`; after `job_max_attempts` tries,
  or on PermanentJobError, the row goes to `dead` and the message is terminated. JetStream's own
  max_deliver is unlimited: the row counts tries (a released job gives its try back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar

import nats.errors
import structlog
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError
from sqlalchemy import and_, case, func, or_, select, update

from encore.bus.jobs import (
    DatabaseJobQueue,
    Job,
    JobAnnouncement,
    JobState,
    _job_from_record,
    _state_is,
    enqueue_job,
    register_job_announcer,
    retry_delay,
    take_announcements,
)
from encore.bus.nats_connection import connect_bus, ensure_consumer, ensure_stream
from encore.db import utcnow
from encore.jobs_models import JobRecord

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from sqlalchemy.orm import Session

    from encore.config import Settings

logger = structlog.get_logger("encore.bus")

_T = TypeVar("_T")

__all__ = [
    "FETCH_TIMEOUT",
    "JOBS_STREAM",
    "JetStreamJobQueue",
    "job_consumer_name",
    "job_subject",
    "jobs_stream_config",
]

JOBS_STREAM = "JOBS"
"""The work-queue stream that carries job deliveries."""

JOBS_SUBJECT_PREFIX = "jobs"

FETCH_TIMEOUT = 0.25
"""Seconds a claim waits on one kind's consumer for a message before trying the next kind."""

CONNECT_WAIT = 5.0
"""Seconds a call waits for the bus connection before failing (the connecting goes on)."""

PING_TIMEOUT = 2.0
"""Seconds /readyz waits for the bus to answer."""

RELAY_PAGE = 500
RELAY_CONCURRENCY = 32
ANNOUNCE_CLOSE_WAIT = 5.0
STALE_DELIVERIES_PER_CLAIM = 16
# A message held back under another worker's live lease comes back just after that lease ends.
LEASE_MARGIN = timedelta(milliseconds=100)

_WRONG_LAST_SEQUENCE = 10071
_KIND = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def _check_kind(kind: str) -> None:
    if not _KIND.fullmatch(kind):
        raise ValueError(
            f"job kind {kind!r} cannot be a NATS subject: use letters, digits, _ and -, "
            "in tokens separated by dots"
        )


def job_subject(kind: str, job_id: uuid.UUID) -> str:
    """The subject a job's delivery is published on: `jobs.<kind>.<job id>`."""
    _check_kind(kind)
    return f"{JOBS_SUBJECT_PREFIX}.{kind}.{job_id}"


def job_consumer_name(kind: str) -> str:
    """The durable consumer of one kind (names cannot hold dots; the hash keeps them apart)."""
    _check_kind(kind)
    digest = hashlib.sha256(kind.encode()).hexdigest()[:8]
    return f"jobs-{kind.replace('.', '_')}-{digest}"


def jobs_stream_config(replicas: int) -> StreamConfig:
    """The JOBS stream: a work queue (a message leaves once acked or terminated), on disk."""
    return StreamConfig(
        name=JOBS_STREAM,
        description="Encore job deliveries; the jobs table is the record",
        subjects=[f"{JOBS_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
    )


def _message_id(announcement: JobAnnouncement) -> str:
    queued = int(announcement.queued_at.timestamp() * 1_000_000)
    return f"{announcement.id}:{queued}"


def _job_id_of(message: Msg) -> uuid.UUID | None:
    try:
        return uuid.UUID(message.subject.rsplit(".", 1)[-1])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Delivery:
    """The message a worker of this process holds for a job it claimed."""

    worker_id: str
    message: Msg


class JetStreamJobQueue(DatabaseJobQueue):
    """Jobs recorded in the database and delivered to workers through a JetStream work queue."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        settings: Settings,
        max_attempts: int | None = None,
        ack_wait: timedelta | None = None,
        clock: Callable[[], datetime] = utcnow,
        backoff: Callable[[int], timedelta] = retry_delay,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        super().__init__(
            session_factory,
            max_attempts=settings.job_max_attempts if max_attempts is None else max_attempts,
            clock=clock,
            backoff=backoff,
        )
        self._settings = settings
        self._ack_wait = ack_wait or timedelta(seconds=settings.job_lease_seconds)
        self._fetch_timeout = fetch_timeout
        bind = session_factory.kw.get("bind")
        self._database_url = getattr(bind, "url", None)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[JetStreamContext] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unregister: Callable[[], None] | None = None
        self._consumers: set[str] = set()
        self._subscriptions: dict[tuple[str, str], JetStreamContext.PullSubscription] = {}
        self._deliveries: dict[uuid.UUID, _Delivery] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._turns = itertools.count()
        self._relay_cursor: uuid.UUID | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
    ) -> Self:
        """The queue as configured: bus_url, job_lease_seconds (ack_wait), job_max_attempts."""
        return cls(session_factory, settings=settings)

    # -----------------------------------------------------------------------------------------
    # Connection

    async def _connect(self) -> JetStreamContext:
        client = await connect_bus(self._settings, name="encore jobs")
        try:
            js = client.jetstream()
            await ensure_stream(js, jobs_stream_config(self._settings.bus_stream_replicas))
        except BaseException:
            await client.close()
            raise
        self._client, self._js = client, js
        return js

    def _start_connecting(self) -> asyncio.Task[JetStreamContext]:
        if self._connecting is None or (
            self._connecting.done()
            and (self._connecting.cancelled() or self._connecting.exception() is not None)
        ):
            self._connecting = asyncio.create_task(self._connect(), name="encore jobs bus")
            self._connecting.add_done_callback(_log_connect_failure)
        return self._connecting

    async def _jetstream(self, wait: float = CONNECT_WAIT) -> JetStreamContext:
        if self._js is not None:
            return self._js
        connecting = self._start_connecting()
        async with asyncio.timeout(wait):
            # Shielded: a caller that gives up does not stop the connecting for the next one.
            return await asyncio.shield(connecting)

    async def open(self) -> None:
        """Publish the jobs committed in this process from now on; connect in the background."""
        if self._unregister is None:
            self._loop = asyncio.get_running_loop()
            self._unregister = register_job_announcer(self._on_commit)
        # Not awaited: a process starts while the bus is away (/readyz says so meanwhile).
        self._start_connecting()

    async def close(self) -> None:
        """Stop publishing, let go of subscriptions and the connection; open() works again."""
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        if self._background:
            # Publishes of committed jobs and claims given up by cancelled workers finish now.
            _done, pending = await asyncio.wait(self._background, timeout=ANNOUNCE_CLOSE_WAIT)
            for future in pending:
                future.cancel()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        self._connecting = None
        client, self._client, self._js = self._client, None, None
        self._subscriptions.clear()
        self._consumers.clear()
        # Messages still held are redelivered after ack_wait; their rows tell the next worker.
        self._deliveries.clear()
        if client is not None:
            await client.close()

    async def ping(self) -> None:
        """Raise unless the bus answers and the JOBS stream exists."""
        if self._client is not None and not self._client.is_connected:
            # Reconnecting: say so now rather than after a request's timeout.
            raise ConnectionError("the bus connection is down (reconnecting)")
        async with asyncio.timeout(PING_TIMEOUT):
            js = await self._jetstream(wait=PING_TIMEOUT)
            await js.stream_info(JOBS_STREAM)

    # -----------------------------------------------------------------------------------------
    # Publishing (the outbox)

    def _on_commit(self, session: Session, announcements: tuple[JobAnnouncement, ...]) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        if self._database_url is not None:
            bind = session.get_bind()
            if bind.engine.url != self._database_url:
                return  # another database's jobs: another queue announces them
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._spawn_announce(announcements)
        else:
            self._loop.call_soon_threadsafe(self._spawn_announce, announcements)

    def _spawn_announce(self, announcements: tuple[JobAnnouncement, ...]) -> None:
        task = asyncio.get_running_loop().create_task(self._announce(announcements))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce(self, announcements: Collection[JobAnnouncement]) -> None:
        try:
            js = await self._jetstream()
            await _gather_bounded(
                (self._publish(js, announcement) for announcement in announcements),
                RELAY_CONCURRENCY,
            )
        except Exception as exc:
            # Committed all the same: the relay of a worker pool publishes them later.
            logger.warning(
                "job_publish_failed",
                jobs=len(announcements),
                error=type(exc).__name__,
                detail="the worker pool's relay publishes them later",
            )

    async def _publish(self, js: JetStreamContext, announcement: JobAnnouncement) -> bool:
        """Publish a delivery for the job unless one is waiting already; True if published."""
        try:
            ack = await js.publish(
                job_subject(announcement.kind, announcement.id),
                str(announcement.id).encode(),
                stream=JOBS_STREAM,
                headers={
                    Header.MSG_ID: _message_id(announcement),
                    # Only if this job's subject holds no message: at most one waits per job.
                    Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0",
                },
            )
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return False
            raise
        return not ack.duplicate

    async def enqueue(
        self,
        *,
        kind: str,
        payload: Mapping[str, Any],
        dedupe_key: str | None = None,
        group_key: str | None = None,
        run_after: datetime | None = None,
    ) -> uuid.UUID:
        """Add a job in a transaction of its own and publish it; its id."""
        async with self._session_factory() as session, session.begin():
            job_id = await enqueue_job(
                db_session=session,
                kind=kind,
                payload=payload,
                dedupe_key=dedupe_key,
                group_key=group_key,
                run_after=run_after or self._clock(),
            )
            # Published here, awaited: the job is on the stream when this returns.
            announcements = take_announcements(session.info)
        if announcements:
            await self._announce(announcements)
        return job_id

    async def requeue_dead_job(self, job_id: uuid.UUID) -> bool:
        """Give a dead job a fresh set of tries and publish it again."""
        if not await super().requeue_dead_job(job_id):
            return False
        job = await self.get_job(job_id)
        if job is not None:
            await self._announce([JobAnnouncement(job.id, job.kind, job.updated_at)])
        return True

    async def relay_unannounced_jobs(self) -> int:
        """Publish queued jobs (and running ones past their lease) that have no message waiting.

        Each is published only if its subject is empty, so jobs whose message is there are
        left alone; what is published is what a dead process never got to publish.
        """
        js = await self._jetstream()
        relayed = 0
        cursor: uuid.UUID | None = None
        while True:
            now = self._clock()
            statement = (
                select(JobRecord.id, JobRecord.kind, JobRecord.updated_at)
                .where(
                    or_(
                        _state_is(JobRecord.state, JobState.queued),
                        and_(
                            _state_is(JobRecord.state, JobState.running),
                            JobRecord.lease_expires_at < now,
                        ),
                    )
                )
                .order_by(JobRecord.id)
                .limit(RELAY_PAGE)
            )
            if cursor is not None:
                statement = statement.where(JobRecord.id > cursor)
            async with self._session_factory() as session:
                rows = (await session.execute(statement)).all()
            if not rows:
                return relayed
            cursor = rows[-1].id
            published = await _gather_bounded(
                (
                    self._publish(js, JobAnnouncement(row.id, row.kind, row.updated_at))
                    for row in rows
                    if _KIND.fullmatch(row.kind)
                ),
                RELAY_CONCURRENCY,
            )
            relayed += sum(published)
            if len(rows) < RELAY_PAGE:
                return relayed

    # -----------------------------------------------------------------------------------------
    # Claiming and settling

    def _consumer_config(self, kind: str) -> ConsumerConfig:
        name = job_consumer_name(kind)
        return ConsumerConfig(
            name=name,
            durable_name=name,
            description=f"Encore workers for {kind} jobs",
            filter_subject=f"{JOBS_SUBJECT_PREFIX}.{kind}.*",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            # The lease: a worker that stops sending in_progress() loses the message after it.
            ack_wait=self._ack_wait.total_seconds(),
            # Tries are counted on the job row (dead letters there), not by redeliveries.
            max_deliver=-1,
            # Jobs waiting out a back-off are pending acks too; they must not stop delivery.
            max_ack_pending=-1,
        )

    async def _subscription(
        self, js: JetStreamContext, worker_id: str, kind: str
    ) -> JetStreamContext.PullSubscription:
        key = (worker_id, kind)
        subscription = self._subscriptions.get(key)
        if subscription is not None:
            return subscription
        name = job_consumer_name(kind)
        if name not in self._consumers:
            await ensure_consumer(js, JOBS_STREAM, self._consumer_config(kind))
            self._consumers.add(name)
        # One subscription per worker and kind: concurrent fetches never share an inbox.
        subscription = await js.pull_subscribe_bind(durable=name, stream=JOBS_STREAM)
        self._subscriptions[key] = subscription
        return subscription

    async def claim(self, worker_id: str, kinds: Collection[str], lease: timedelta) -> Job | None:
        """Take the next delivery of these kinds and lease its job to `worker_id`; None if none.

        The kinds take turns being asked first, so a busy kind does not starve the others.
        """
        wanted = sorted(set(kinds))
        if not wanted:
            return None
        js = await self._jetstream()
        turn = next(self._turns) % len(wanted)
        for kind in wanted[turn:] + wanted[:turn]:
            claiming = asyncio.ensure_future(self._claim_kind(js, worker_id, kind, lease))
            try:
                # Shielded: a worker cancelled mid-fetch must not strand a message it was
                # about to receive; the callback below gives such a job straight back.
                job = await asyncio.shield(claiming)
            except asyncio.CancelledError:
                self._background.add(claiming)
                claiming.add_done_callback(self._give_back_orphan(worker_id))
                raise
            if job is not None:
                return job
        return None

    def _give_back_orphan(self, worker_id: str) -> Callable[[asyncio.Future[Job | None]], None]:
        def give_back(claiming: asyncio.Future[Job | None]) -> None:
            self._background.discard(claiming)
            if claiming.cancelled() or claiming.exception() is not None:
                return
            job = claiming.result()
            if job is not None:
                task = asyncio.ensure_future(self.release(job.id, worker_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

        return give_back

    async def _claim_kind(
        self, js: JetStreamContext, worker_id: str, kind: str, lease: timedelta
    ) -> Job | None:
        subscription = await self._subscription(js, worker_id, kind)
        # Deliveries of finished jobs (a lost ack) are settled on the way; a few per call.
        for _ in range(STALE_DELIVERIES_PER_CLAIM):
            try:
                (message,) = await subscription.fetch(1, timeout=self._fetch_timeout)
            except nats.errors.TimeoutError:
                return None
            except NotFoundError:
                # The consumer was deleted (by an operator): create it again next time.
                self._consumers.discard(job_consumer_name(kind))
                self._subscriptions.pop((worker_id, kind), None)
                raise
            job = await self._take(message, worker_id, lease)
            if job is not None:
                return job
        return None

    async def _take(self, message: Msg, worker_id: str, lease: timedelta) -> Job | None:
        """Lease the message's job to the worker if its row allows; else settle the message."""
        job_id = _job_id_of(message)
        if job_id is None:
            logger.warning("job_message_unreadable", subject=message.subject)
            await message.term()
            return None
        now = self._clock()
        lease_expired = and_(
            _state_is(JobRecord.state, JobState.running), JobRecord.lease_expires_at <= now
        )
        async with self._session_factory() as session, session.begin():
            record = await session.scalar(
                update(JobRecord)
                .where(
                    JobRecord.id == job_id,
                    or_(
                        and_(
                            _state_is(JobRecord.state, JobState.queued),
                            JobRecord.run_after <= now,
                        ),
                        lease_expired,
                    ),
                )
                .values(
                    state=JobState.running,
                    lease_owner=worker_id,
                    lease_expires_at=now + lease,
                    attempts=JobRecord.attempts + 1,
                    updated_at=now,
                    # SET reads the row as it was: a take-over says whose lease ran out.
                    last_error=case(
                        (
                            _state_is(JobRecord.state, JobState.running),
                            "the lease of worker "
                            + func.coalesce(JobRecord.lease_owner, "?")
                            + " expired before the job settled (worker stopped or stuck)",
                        ),
                        else_=JobRecord.last_error,
                    ),
                )
                .returning(JobRecord)
                .execution_options(synchronize_session=False)
            )
            exhausted = record is not None and record.attempts > self._max_attempts
            if record is not None and exhausted:
                # It used up its tries by losing its worker every time: dead, not handed out.
                await session.execute(
                    update(JobRecord)
                    .where(JobRecord.id == job_id)
                    .values(
                        state=JobState.dead,
                        attempts=record.attempts - 1,
                        lease_expires_at=None,
                        finished_at=now,
                        updated_at=now,
                    )
                )
                logger.warning(
                    "job_dead",
                    job_id=str(job_id),
                    kind=record.kind,
                    attempts=record.attempts - 1,
                    reason="lease expired on every try",
                )
            current = None if record is not None else await session.get(JobRecord, job_id)
        if exhausted:
            await message.term()
            return None
        if record is not None:
            self._deliveries[job_id] = _Delivery(worker_id, message)
            return _job_from_record(record)
        await self._settle_unclaimable(message, current, now)
        return None

    async def _settle_unclaimable(
        self, message: Msg, record: JobRecord | None, now: datetime
    ) -> None:
        if record is None or record.state in (JobState.done, JobState.dead):
            # Finished (its ack was lost), purged, or a stray copy: nothing left to run.
            await message.term()
        elif record.state is JobState.queued:
            # Not due yet: a back-off whose NAK delay was cut short, or a scheduled start.
            await message.nak(delay=max((record.run_after - now).total_seconds(), 0.001))
        else:
            # Held under another worker's live lease: look again when that lease ends.
            until = (record.lease_expires_at or now) - now + LEASE_MARGIN
            await message.nak(delay=max(until.total_seconds(), 0.001))

    def _pop_delivery(self, job_id: uuid.UUID, worker_id: str) -> Msg | None:
        delivery = self._deliveries.get(job_id)
        if delivery is None or delivery.worker_id != worker_id:
            return None
        del self._deliveries[job_id]
        return delivery.message

    async def extend_lease(self, job_id: uuid.UUID, worker_id: str, lease: timedelta) -> bool:
        """Renew the row's lease and the message's ack_wait; False when no longer ours."""
        kept = await super().extend_lease(job_id, worker_id, lease)
        if not kept:
            self._pop_delivery(job_id, worker_id)
            return False
        delivery = self._deliveries.get(job_id)
        if delivery is not None and delivery.worker_id == worker_id:
            await delivery.message.in_progress()
        return True

    async def complete(self, job_id: uuid.UUID, worker_id: str) -> bool:
        """Mark our running job done and ack its message; False when no longer ours."""
        done = await super().complete(job_id, worker_id)
        message = self._pop_delivery(job_id, worker_id)
        if done and message is not None:
            # A lost ack only means a redelivery, which finds the row done and terminates it.
            await message.ack()
        return done

    async def fail(
        self, job_id: uuid.UUID, worker_id: str, error: str, *, permanent: bool = False
    ) -> JobState | None:
        """Record a failed try: NAK with the back-off, or terminate a job now dead."""
        state = await super().fail(job_id, worker_id, error, permanent=permanent)
        message = self._pop_delivery(job_id, worker_id)
        if state is None or message is None:
            return state
        if state is JobState.dead:
            await message.term()
            return state
        job = await self.get_job(job_id)
        delay = (job.run_after - self._clock()).total_seconds() if job is not None else 0.0
        await message.nak(delay=max(delay, 0.001))
        return state

    async def release(self, job_id: uuid.UUID, worker_id: str) -> bool:
        """Give our running job back untried: NAK without delay, the try not counted."""
        released = await super().release(job_id, worker_id)
        message = self._pop_delivery(job_id, worker_id)
        if released and message is not None:
            await message.nak()
        return released


def _log_connect_failure(task: asyncio.Task[JetStreamContext]) -> None:
    # Retrieved here, so a failure nobody awaited is logged once instead of at collection.
    if not task.cancelled() and task.exception() is not None:
        logger.warning("bus_connect_failed", error=type(task.exception()).__name__)


async def _gather_bounded(coroutines: Iterable[Awaitable[_T]], limit: int) -> list[_T]:
    """Await the coroutines with at most `limit` running at once; their results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(coroutine: Awaitable[_T]) -> _T:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(bounded(coroutine) for coroutine in coroutines))

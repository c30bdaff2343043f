"""The job queue's JetStream backend against a real nats-server, on SQLite and on PostgreSQL.

The same guarantees as the database backend (tests/integration/platform/test_bus.py): a job
exists if and only if its producer commits, runs once in effect, retries with back-off, ends
dead after its tries, and survives a worker killed mid-job. Ack waits and back-offs are short
here; every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from encore.bus import (
    DatabaseJobQueue,
    Job,
    JobContext,
    JobHandler,
    JobState,
    PermanentJobError,
    WorkerPool,
    enqueue_job,
    open_job_queue,
    retry_delay,
)
from encore.bus.jetstream_jobs import JOBS_STREAM, JetStreamJobQueue
from encore.bus.jobs import take_announcements
from encore.config import Settings, load_settings
from encore.db import create_engine, create_session_factory, utcnow
from tests.fixtures.nats import NatsCluster, NatsServer
from tests.fixtures.oauth import asgi_client

KIND = "test.work"
ACK_WAIT = timedelta(seconds=2)


def quick_backoff(attempts: int) -> timedelta:
    """The real back-off curve at a tenth of its length (0.1-0.2 s after the first try)."""
    return retry_delay(attempts) / 10


@pytest.fixture
def bus_settings(settings: Settings, nats_server: NatsServer) -> Settings:
    """This test's settings with the bus on this test's nats-server."""
    return settings.model_copy(update={"bus_url": nats_server.url})


@pytest.fixture
async def session_factory(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on this test's database."""
    engine = create_engine(settings)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def queue(
    bus_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[JetStreamJobQueue]:
    """An open JetStream queue that gives up after three tries, with a 2 s ack wait."""
    jobs = JetStreamJobQueue(
        session_factory,
        settings=bus_settings,
        max_attempts=3,
        ack_wait=ACK_WAIT,
        backoff=quick_backoff,
    )
    await jobs.open()
    # Connected, with the JOBS stream in place, before the test looks at it.
    await jobs.ping()
    try:
        yield jobs
    finally:
        await jobs.close()


@pytest.fixture
async def jetstream(nats_server: NatsServer) -> AsyncIterator[Any]:
    """A JetStream context of a client of its own, to look at the JOBS stream."""
    client = await nats.connect(nats_server.url)
    try:
        yield client.jetstream()
    finally:
        await client.close()


def worker_pool(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
    handler: JobHandler,
    *,
    count: int = 1,
    lease: timedelta = ACK_WAIT,
) -> WorkerPool:
    """A pool running `handler` for KIND jobs."""
    return WorkerPool(
        queue=queue,
        handlers={KIND: handler},
        count=count,
        lease=lease,
        settings=settings,
        session_factory=session_factory,
        poll_interval=0.05,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Wait until `check` holds (polling), failing after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def in_state(queue: DatabaseJobQueue, job_id: Any, state: JobState) -> bool:
    """True when the job is in `state`."""
    job = await queue.get_job(job_id)
    return job is not None and job.state is state


async def waiting_messages(jetstream: Any) -> int:
    """Messages in the JOBS stream (a work queue: deliveries not yet acked or terminated)."""
    info = await jetstream.stream_info(JOBS_STREAM)
    messages: int = info.state.messages
    return messages


async def record_payload(payload: dict[str, Any], context: JobContext) -> None:
    """A handler that does nothing (the tests read the jobs' states)."""


# ---------------------------------------------------------------------------------------------
# Choosing the backend, publishing, the relay


async def test_the_bus_url_chooses_the_jetstream_backend(
    settings: Settings,
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    assert type(open_job_queue(settings, session_factory)) is DatabaseJobQueue
    chosen = open_job_queue(bus_settings, session_factory)
    assert isinstance(chosen, JetStreamJobQueue)
    pool = WorkerPool.from_settings(
        settings=bus_settings, session_factory=session_factory, handlers={}, count=0
    )
    assert isinstance(pool.queue, JetStreamJobQueue)
    await pool.start()
    await pool.queue.ping()
    await pool.stop()


async def test_committed_jobs_are_published_once_and_run_once(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
    jetstream: Any,
) -> None:
    ran: list[Any] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        await asyncio.sleep(0)  # let the other workers interleave
        ran.append((context.job.id, payload["n"]))

    async with session_factory() as db_session:
        rolled_back = await enqueue_job(db_session=db_session, kind=KIND, payload={"n": -1})
        await db_session.rollback()
    async with session_factory() as db_session:
        enqueued = [
            await enqueue_job(db_session=db_session, kind=KIND, payload={"n": n}, group_key="g")
            for n in range(40)
        ]
        twin = await enqueue_job(
            db_session=db_session, kind=KIND, payload={"n": 99}, dedupe_key="k"
        )
        assert twin == await enqueue_job(
            db_session=db_session, kind=KIND, payload={"n": 100}, dedupe_key="k"
        )
        await db_session.commit()
    # Published after the commit by the queue's hook, one message per job (the twin is one).
    await eventually(lambda: _equals(waiting_messages(jetstream), 41))
    assert await queue.get_job(rolled_back) is None
    # Publishing again (another process, the relay) adds nothing while a message waits.
    assert await queue.relay_unannounced_jobs() == 0
    assert await waiting_messages(jetstream) == 41

    async with worker_pool(bus_settings, session_factory, queue, record, count=4):

        async def all_done() -> bool:
            counts = await queue.job_counts_by_state(kinds=[KIND])
            return counts[JobState.done] == 41

        await eventually(all_done)

    assert Counter(job_id for job_id, _ in ran) == Counter([*enqueued, twin])
    assert sorted(n for _, n in ran) == [*range(40), 99]
    assert await queue.job_counts_by_state(group_key="g") == {
        JobState.queued: 0,
        JobState.running: 0,
        JobState.done: 40,
        JobState.dead: 0,
    }
    assert await waiting_messages(jetstream) == 0


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_a_job_whose_publish_was_lost_is_relayed_by_the_worker_pool(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
    jetstream: Any,
) -> None:
    # The producer's process dies between its commit and the publish.
    async with session_factory() as db_session:
        lost = await enqueue_job(db_session=db_session, kind=KIND, payload={})
        take_announcements(db_session.info)
        await db_session.commit()
    assert await waiting_messages(jetstream) == 0

    assert await queue.relay_unannounced_jobs() == 1
    assert await queue.relay_unannounced_jobs() == 0
    assert await waiting_messages(jetstream) == 1

    # A pool relays on start too: here a second lost job, run without anyone publishing it.
    async with session_factory() as db_session:
        also_lost = await enqueue_job(db_session=db_session, kind=KIND, payload={})
        take_announcements(db_session.info)
        await db_session.commit()
    async with worker_pool(bus_settings, session_factory, queue, record_payload):
        for job_id in (lost, also_lost):
            await eventually(partial(in_state, queue, job_id, JobState.done))
    assert await waiting_messages(jetstream) == 0


async def test_a_scheduled_job_is_not_run_before_its_time(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
) -> None:
    started: list[Any] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        started.append(utcnow())

    run_after = utcnow() + timedelta(seconds=0.5)
    job_id = await queue.enqueue(kind=KIND, payload={}, run_after=run_after)
    async with worker_pool(bus_settings, session_factory, queue, record):
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    assert len(started) == 1 and started[0] >= run_after


# ---------------------------------------------------------------------------------------------
# Failure, back-off, dead letters


async def test_a_failed_try_is_retried_after_its_back_off(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
) -> None:
    tries: list[tuple[Job, datetime]] = []

    async def flaky(payload: dict[str, Any], context: JobContext) -> None:
        tries.append((context.job, utcnow()))
        if len(tries) == 1:
            raise ValueError("the store blinked")

    job_id = await queue.enqueue(kind=KIND, payload={})
    async with worker_pool(bus_settings, session_factory, queue, flaky):
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    (first, first_started), (retry, retry_started) = tries
    assert (first.attempts, retry.attempts) == (1, 2)
    # The retry's claim kept what the failure recorded: the error and the back-off's end.
    assert retry.last_error is not None
    assert retry.last_error.startswith("ValueError: the store blinked")
    assert retry.run_after - first_started >= timedelta(seconds=0.1)
    # The NAK's delay held the message back until then.
    assert retry_started >= retry.run_after


async def test_after_max_attempts_the_job_is_dead_and_a_requeue_publishes_it_again(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
    jetstream: Any,
) -> None:
    healed = asyncio.Event()
    tries: list[int] = []

    async def broken(payload: dict[str, Any], context: JobContext) -> None:
        tries.append(context.job.attempts)
        if not healed.is_set():
            raise RuntimeError(f"try {context.job.attempts}: " + "x" * 10_000)

    job_id = await queue.enqueue(kind=KIND, payload={})
    async with worker_pool(bus_settings, session_factory, queue, broken):
        await eventually(lambda: in_state(queue, job_id, JobState.dead))
        (dead,) = await queue.list_dead_jobs(kinds=[KIND])
        assert (dead.id, dead.attempts) == (job_id, 3)
        assert dead.last_error is not None and dead.last_error.startswith("RuntimeError: try 3")
        # Terminated: no delivery of a dead job is left to come back.
        assert await waiting_messages(jetstream) == 0

        # An operator fixes the cause and gives it another round of tries.
        healed.set()
        assert await queue.requeue_dead_job(job_id)
        assert not await queue.requeue_dead_job(job_id)
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    assert tries == [1, 2, 3, 1]
    assert await waiting_messages(jetstream) == 0


async def test_a_permanent_error_sends_the_job_to_dead_at_once(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
    jetstream: Any,
) -> None:
    async def reject(payload: dict[str, Any], context: JobContext) -> None:
        raise PermanentJobError(f"track {payload['track']} has no audio")

    job_id = await queue.enqueue(kind=KIND, payload={"track": "t1"})
    async with worker_pool(bus_settings, session_factory, queue, reject):
        await eventually(lambda: in_state(queue, job_id, JobState.dead))

    job = await queue.get_job(job_id)
    assert job is not None and job.attempts == 1
    assert job.last_error is not None
    assert job.last_error.startswith("PermanentJobError: track t1 has no audio")
    assert await waiting_messages(jetstream) == 0


# ---------------------------------------------------------------------------------------------
# Leases: heartbeats, stopped workers, killed workers


async def test_the_heartbeat_keeps_a_long_job_past_the_ack_wait(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
    jetstream: Any,
) -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    async def long_job(payload: dict[str, Any], context: JobContext) -> None:
        runs.append(context.job.attempts)
        started.set()
        await finish.wait()

    job_id = await queue.enqueue(kind=KIND, payload={})
    async with worker_pool(bus_settings, session_factory, queue, long_job, count=2):
        await started.wait()
        claimed = await queue.get_job(job_id)
        assert claimed is not None and claimed.lease_expires_at is not None

        async def renewed_past_the_first_ack_wait() -> bool:
            job = await queue.get_job(job_id)
            assert claimed.lease_expires_at is not None
            return (
                job is not None
                and job.lease_expires_at is not None
                and job.lease_expires_at >= claimed.lease_expires_at + ACK_WAIT * 1.5
            )

        await eventually(renewed_past_the_first_ack_wait)
        (consumer,) = await jetstream.consumers_info(JOBS_STREAM)
        finish.set()
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    # in_progress() kept the message ours: JetStream never redelivered it.
    assert (consumer.num_ack_pending, consumer.num_redelivered) == (1, 0)
    assert runs == [1]


async def test_stopping_without_grace_gives_the_job_back_to_another_worker_at_once(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
) -> None:
    started = asyncio.Event()

    async def stuck(payload: dict[str, Any], context: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job_id = await queue.enqueue(kind=KIND, payload={})
    pool = worker_pool(bus_settings, session_factory, queue, stuck)
    await pool.start()
    await started.wait()
    await pool.stop(grace=0)

    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.lease_expires_at) == (JobState.queued, 0, None)

    ran: list[int] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        ran.append(context.job.attempts)

    # NAKed without delay: well within one ack wait, not after it.
    async with worker_pool(bus_settings, session_factory, queue, record):
        await eventually(
            lambda: in_state(queue, job_id, JobState.done), timeout=ACK_WAIT.total_seconds()
        )
    assert ran == [1]


_KILLED_WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import timedelta

    from encore.bus import WorkerPool
    from encore.bus.jetstream_jobs import JetStreamJobQueue
    from encore.config import load_settings
    from encore.db import create_engine, create_session_factory

    async def hang(payload, context):
        await asyncio.Event().wait()

    async def main():
        settings = load_settings(
            database_url=os.environ["TEST_DATABASE_URL"],
            bus_url=os.environ["TEST_BUS_URL"],
            storage_url=os.environ["TEST_STORAGE_URL"],
            log_level="warning",
        )
        lease = timedelta(seconds=float(os.environ["TEST_ACK_WAIT"]))
        factory = create_session_factory(create_engine(settings))
        queue = JetStreamJobQueue(factory, settings=settings, ack_wait=lease, max_attempts=3)
        pool = WorkerPool(
            queue=queue, handlers={sys.argv[1]: hang}, count=1, lease=lease,
            settings=settings, session_factory=factory, poll_interval=0.05,
        )
        await pool.start()
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_a_worker_process_killed_mid_job_leaves_it_to_another_after_the_ack_wait(
    bus_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: JetStreamJobQueue,
    tmp_path: Path,
) -> None:
    job_id = await queue.enqueue(kind=KIND, payload={})
    log = tmp_path / "worker.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")}
    environment.update(
        TEST_DATABASE_URL=bus_settings.database_url,
        TEST_BUS_URL=str(bus_settings.bus_url),
        TEST_STORAGE_URL=bus_settings.storage_url,
        TEST_ACK_WAIT=str(ACK_WAIT.total_seconds()),
    )
    with log.open("wb") as output:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _KILLED_WORKER,
            KIND,
            env=environment,
            cwd=tmp_path,
            stdout=output,
            stderr=output,
        )
        try:

            async def claimed_by_the_process() -> bool:
                assert worker.returncode is None, log.read_text()
                return await in_state(queue, job_id, JobState.running)

            await eventually(claimed_by_the_process, timeout=30)
        finally:
            # kill -9: no release, no NAK, no more in_progress().
            if worker.returncode is None:
                worker.kill()
            await worker.wait()

    lost = await queue.get_job(job_id)
    assert lost is not None and lost.lease_owner is not None
    ran: list[int] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        ran.append(context.job.attempts)

    async with worker_pool(bus_settings, session_factory, queue, record) as pool:
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    job = await queue.get_job(job_id)
    assert job is not None and job.lease_owner in pool.worker_ids
    assert job.last_error is not None and lost.lease_owner in job.last_error
    assert ran == [2]


# ---------------------------------------------------------------------------------------------
# Readiness


async def test_readyz_reports_the_bus(
    bus_settings: Settings, nats_server: NatsServer, tmp_path: Path
) -> None:
    from encore.app import create_app

    application = create_app(bus_settings)
    async with application.router.lifespan_context(application), asgi_client(application) as http:

        async def ready() -> bool:
            response: httpx.Response = await http.get("/readyz")
            return response.status_code == 200

        await eventually(ready)
        body = (await http.get("/readyz")).json()
        assert body["checks"]["bus"] == "ok"

        nats_server.kill()
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["bus"] == "unreachable"

        nats_server.restart()
        await eventually(ready)


# ---------------------------------------------------------------------------------------------
# A three-node cluster


async def test_jobs_keep_running_when_a_node_of_a_three_replica_cluster_dies(
    nats_cluster: NatsCluster, sqlite_template: Path, tmp_path: Path
) -> None:
    database = tmp_path / "encore.db"
    shutil.copyfile(sqlite_template, database)
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{database}",
        storage_url=f"file://{tmp_path / 'media'}",
        secret_key_file=str(tmp_path / "secret.key"),
        log_level="warning",
        workers=0,
        bus_url=nats_cluster.url,
        bus_stream_replicas=3,
    )
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    queue = JetStreamJobQueue(factory, settings=settings, ack_wait=ACK_WAIT, backoff=quick_backoff)
    ran: list[Any] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        ran.append(context.job.id)

    pool = WorkerPool(
        queue=queue,
        handlers={KIND: record},
        count=3,
        lease=ACK_WAIT,
        settings=settings,
        session_factory=factory,
        poll_interval=0.05,
        # Jobs whose publish fails while the cluster re-elects are relayed within the test.
        relay_interval=0.5,
    )
    try:
        async with pool:
            before = [await queue.enqueue(kind=KIND, payload={"n": n}) for n in range(20)]

            async def done(count: int) -> bool:
                return (await queue.job_counts_by_state())[JobState.done] >= count

            await eventually(partial(done, 5))
            nats_cluster.kill(0)
            during = await asyncio.gather(
                *(queue.enqueue(kind=KIND, payload={"n": n}) for n in range(20, 30))
            )
            await eventually(partial(done, 30), timeout=45)
            nats_cluster.restart(0)
    finally:
        await queue.close()
        await engine.dispose()

    assert Counter(ran) == Counter(before + during)

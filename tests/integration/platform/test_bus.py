"""The durable job queue (database backend) and its workers, on SQLite and on PostgreSQL.

Time is a clock the tests move by hand (leases, back-off), never a sleep: a wait here is for
a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from encore.bus import (
    MAX_ERROR_LENGTH,
    RETRY_DELAY_CAP,
    DatabaseJobQueue,
    JobContext,
    JobHandler,
    JobState,
    PermanentJobError,
    WorkerPool,
    enqueue_job,
    retry_delay,
)
from encore.config import Settings, load_settings
from encore.db import create_engine, create_session_factory, utcnow

KIND = "test.work"
LEASE = timedelta(seconds=30)


class Clock:
    """A clock the test moves by hand; it starts ahead of the real one, so new jobs are due."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(**delta)


@pytest.fixture
async def session_factory(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on this test's database."""
    engine = create_engine(settings)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    """The queue's clock."""
    return Clock()


@pytest.fixture
def queue(session_factory: async_sessionmaker[AsyncSession], clock: Clock) -> DatabaseJobQueue:
    """A queue on this test's database that gives up after three tries."""
    return DatabaseJobQueue(session_factory, max_attempts=3, clock=clock)


def worker_pool(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
    handler: JobHandler,
    *,
    count: int = 1,
    lease: timedelta = LEASE,
    poll_interval: float = 0.05,
) -> WorkerPool:
    """A pool running `handler` for KIND jobs."""
    return WorkerPool(
        queue=queue,
        handlers={KIND: handler},
        count=count,
        lease=lease,
        settings=settings,
        session_factory=session_factory,
        poll_interval=poll_interval,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    """Wait until `check` holds (polling), failing after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def in_state(queue: DatabaseJobQueue, job_id: Any, state: JobState) -> bool:
    """True when the job is in `state`."""
    job = await queue.get_job(job_id)
    return job is not None and job.state is state


# ---------------------------------------------------------------------------------------------
# Enqueueing


async def test_a_job_exists_only_if_the_callers_transaction_commits(
    session_factory: async_sessionmaker[AsyncSession], queue: DatabaseJobQueue
) -> None:
    async with session_factory() as db_session:
        rolled_back = await enqueue_job(db_session=db_session, kind=KIND, payload={"n": 1})
        await db_session.rollback()
    async with session_factory() as db_session:
        committed = await enqueue_job(db_session=db_session, kind=KIND, payload={"n": 2})
        await db_session.commit()

    assert await queue.get_job(rolled_back) is None
    job = await queue.get_job(committed)
    assert job is not None
    assert (job.kind, job.payload, job.state, job.attempts) == (KIND, {"n": 2}, JobState.queued, 0)
    assert (await queue.job_counts_by_state())[JobState.queued] == 1


async def test_a_dedupe_key_holds_while_its_job_is_queued_or_running(
    session_factory: async_sessionmaker[AsyncSession], queue: DatabaseJobQueue, clock: Clock
) -> None:
    first = await queue.enqueue(kind=KIND, payload={"n": 1}, dedupe_key="track:1")
    # In the caller's transaction too, beside a job of its own.
    async with session_factory() as db_session:
        again = await enqueue_job(
            db_session=db_session, kind=KIND, payload={"n": 2}, dedupe_key="track:1"
        )
        other = await enqueue_job(
            db_session=db_session,
            kind=KIND,
            payload={"n": 3},
            dedupe_key="track:2",
            run_after=clock.now + timedelta(hours=1),
        )
        await db_session.commit()
    other_kind = await queue.enqueue(kind="test.other", payload={}, dedupe_key="track:1")

    assert again == first
    assert len({first, other, other_kind}) == 3

    claimed = await queue.claim("w1", [KIND], LEASE)
    assert claimed is not None and claimed.id == first
    assert await queue.enqueue(kind=KIND, payload={}, dedupe_key="track:1") == first
    assert await queue.complete(first, "w1")

    after_done = await queue.enqueue(kind=KIND, payload={"n": 4}, dedupe_key="track:1")
    assert after_done != first
    job = await queue.get_job(after_done)
    assert job is not None and job.payload == {"n": 4}


async def test_bad_keys_are_refused(queue: DatabaseJobQueue) -> None:
    with pytest.raises(ValueError, match="kind"):
        await queue.enqueue(kind="", payload={})
    with pytest.raises(ValueError, match="dedupe_key"):
        await queue.enqueue(kind=KIND, payload={}, dedupe_key="x" * 201)


# ---------------------------------------------------------------------------------------------
# Claiming


async def test_claim_takes_the_longest_due_job_of_the_wanted_kinds(
    queue: DatabaseJobQueue, clock: Clock
) -> None:
    now = clock.now
    ids = {
        name: await queue.enqueue(kind=kind, payload={"name": name}, run_after=now + offset)
        for name, kind, offset in [
            ("a", KIND, timedelta(seconds=-1)),
            ("b", KIND, timedelta(seconds=-3)),
            ("c", KIND, timedelta(seconds=-2)),
            ("later", KIND, timedelta(hours=1)),
            ("other kind", "test.other", timedelta(seconds=-10)),
        ]
    }

    claimed = [await queue.claim("w1", [KIND], LEASE) for _ in range(4)]

    assert [job.payload["name"] if job else None for job in claimed] == ["b", "c", "a", None]
    first = claimed[0]
    assert first is not None
    assert first.state is JobState.running
    assert first.attempts == 1
    assert first.lease_owner == "w1"
    assert first.lease_expires_at == now + LEASE
    assert await queue.claim("w1", [], LEASE) is None

    for job in claimed[:3]:
        assert job is not None and await queue.complete(job.id, "w1")
    clock.advance(hours=2)
    later = await queue.claim("w1", [KIND], LEASE)
    assert later is not None and later.id == ids["later"]


async def test_concurrent_claims_never_hand_out_a_job_twice(queue: DatabaseJobQueue) -> None:
    enqueued = {await queue.enqueue(kind=KIND, payload={"n": n}) for n in range(30)}

    async def claim_all(worker_id: str) -> list[Any]:
        claimed = []
        while (job := await queue.claim(worker_id, [KIND], LEASE)) is not None:
            claimed.append(job.id)
        return claimed

    results = await asyncio.gather(*(claim_all(f"w{n}") for n in range(5)))

    every_claim = [job_id for claimed in results for job_id in claimed]
    assert sorted(every_claim) == sorted(enqueued)


async def test_many_workers_run_each_job_exactly_once(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    queue = DatabaseJobQueue(session_factory)
    ran: list[Any] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        await asyncio.sleep(0)  # let the other workers interleave
        ran.append((context.job.id, payload["n"]))

    async with session_factory() as db_session:
        enqueued = {
            await enqueue_job(db_session=db_session, kind=KIND, payload={"n": n}, group_key="g")
            for n in range(50)
        }
        await db_session.commit()

    pool = worker_pool(settings, session_factory, queue, record, count=4)
    await pool.start()
    try:

        async def all_done() -> bool:
            return (await queue.job_counts_by_state(group_key="g"))[JobState.done] == 50

        await eventually(all_done, timeout=25)
    finally:
        await pool.stop()

    assert Counter(job_id for job_id, _ in ran) == Counter(enqueued)
    assert sorted(n for _, n in ran) == list(range(50))
    assert await queue.job_counts_by_state(kinds=[KIND]) == {
        JobState.queued: 0,
        JobState.running: 0,
        JobState.done: 50,
        JobState.dead: 0,
    }


# ---------------------------------------------------------------------------------------------
# Failure, retry, dead letters


def test_retry_delay_doubles_with_jitter_up_to_a_cap() -> None:
    for attempts in range(1, 16):
        ceiling = min(2.0**attempts, RETRY_DELAY_CAP.total_seconds())
        delays = {retry_delay(attempts).total_seconds() for _ in range(20)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1


async def test_a_failed_try_waits_its_back_off_then_succeeds(
    queue: DatabaseJobQueue, clock: Clock
) -> None:
    job_id = await queue.enqueue(kind=KIND, payload={})
    assert await queue.claim("w1", [KIND], LEASE) is not None

    assert await queue.fail(job_id, "w1", "ValueError: flaky") is JobState.queued

    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.last_error) == (JobState.queued, 1, "ValueError: flaky")
    assert clock.now + timedelta(seconds=1) <= job.run_after <= clock.now + timedelta(seconds=2)
    assert job.lease_expires_at is None
    assert await queue.claim("w1", [KIND], LEASE) is None

    clock.advance(seconds=2)
    retried = await queue.claim("w2", [KIND], LEASE)
    assert retried is not None and (retried.id, retried.attempts) == (job_id, 2)
    assert await queue.complete(job_id, "w2")

    done = await queue.get_job(job_id)
    assert done is not None
    assert (done.state, done.finished_at, done.lease_owner) == (JobState.done, clock.now, "w2")


async def test_after_max_attempts_the_job_is_dead_with_its_last_error(
    queue: DatabaseJobQueue, clock: Clock
) -> None:
    job_id = await queue.enqueue(kind=KIND, payload={})
    states = []
    for attempt in range(1, 4):
        claimed = await queue.claim("w1", [KIND], LEASE)
        assert claimed is not None and claimed.attempts == attempt
        states.append(await queue.fail(job_id, "w1", f"try {attempt}: " + "x" * 10_000))
        clock.advance(hours=1)

    assert states == [JobState.queued, JobState.queued, JobState.dead]
    assert await queue.claim("w1", [KIND], LEASE) is None
    (dead,) = await queue.list_dead_jobs(kinds=[KIND])
    assert dead.id == job_id
    assert dead.attempts == 3
    assert dead.last_error is not None
    assert dead.last_error.startswith("try 3: xxx")
    assert len(dead.last_error) == MAX_ERROR_LENGTH
    assert (await queue.job_counts_by_state())[JobState.dead] == 1

    # An operator fixes the cause and gives it another round of tries.
    assert await queue.requeue_dead_job(job_id)
    assert not await queue.requeue_dead_job(job_id)
    retried = await queue.claim("w1", [KIND], LEASE)
    assert retried is not None and (retried.id, retried.attempts) == (job_id, 1)


async def test_a_permanent_error_sends_the_job_to_dead_at_once(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
) -> None:
    async def reject(payload: dict[str, Any], context: JobContext) -> None:
        raise PermanentJobError(f"track {payload['track']} has no audio")

    job_id = await queue.enqueue(kind=KIND, payload={"track": "t1"})
    async with worker_pool(settings, session_factory, queue, reject):
        await eventually(lambda: in_state(queue, job_id, JobState.dead))

    job = await queue.get_job(job_id)
    assert job is not None
    assert job.attempts == 1
    assert job.last_error is not None
    assert job.last_error.startswith("PermanentJobError: track t1 has no audio")


async def test_a_handler_error_is_retried_after_the_back_off(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
    clock: Clock,
) -> None:
    tries: list[int] = []

    async def flaky(payload: dict[str, Any], context: JobContext) -> None:
        tries.append(context.job.attempts)
        if len(tries) == 1:
            raise ValueError("the store blinked")

    job_id = await queue.enqueue(kind=KIND, payload={})
    async with worker_pool(settings, session_factory, queue, flaky) as pool:

        async def failed_once() -> bool:
            job = await queue.get_job(job_id)
            return job is not None and job.state is JobState.queued and job.attempts == 1

        await eventually(failed_once)
        job = await queue.get_job(job_id)
        assert job is not None and job.last_error is not None
        assert job.last_error.startswith("ValueError: the store blinked")
        assert "Traceback" in job.last_error

        clock.advance(minutes=1)
        pool.wake()
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    assert tries == [1, 2]


# ---------------------------------------------------------------------------------------------
# Leases: lost workers, stale workers, heartbeats


async def test_a_lost_workers_job_is_taken_over_after_its_lease_and_the_stale_worker_is_refused(
    queue: DatabaseJobQueue, clock: Clock
) -> None:
    job_id = await queue.enqueue(kind=KIND, payload={})
    assert await queue.claim("crashed", [KIND], LEASE) is not None
    assert await queue.claim("w2", [KIND], LEASE) is None

    clock.advance(seconds=31)
    taken = await queue.claim("w2", [KIND], LEASE)

    assert taken is not None and (taken.id, taken.attempts) == (job_id, 2)
    assert taken.last_error is not None and "crashed" in taken.last_error
    assert not await queue.complete(job_id, "crashed")
    assert await queue.fail(job_id, "crashed", "late failure") is None
    assert not await queue.extend_lease(job_id, "crashed", LEASE)
    assert not await queue.release(job_id, "crashed")
    job = await queue.get_job(job_id)
    assert job is not None and (job.state, job.lease_owner) == (JobState.running, "w2")

    assert await queue.complete(job_id, "w2")


async def test_a_job_that_loses_its_worker_on_every_try_ends_dead(
    queue: DatabaseJobQueue, clock: Clock
) -> None:
    job_id = await queue.enqueue(kind=KIND, payload={})
    for attempt in range(3):
        claimed = await queue.claim(f"w{attempt}", [KIND], LEASE)
        assert claimed is not None and claimed.id == job_id
        clock.advance(minutes=1)

    assert await queue.claim("w9", [KIND], LEASE) is None
    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts) == (JobState.dead, 3)
    assert job.last_error is not None and "w2" in job.last_error


async def test_workers_finish_the_job_of_a_worker_that_died_mid_job(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
    clock: Clock,
) -> None:
    ran: list[int] = []

    async def record(payload: dict[str, Any], context: JobContext) -> None:
        ran.append(context.job.attempts)

    job_id = await queue.enqueue(kind=KIND, payload={})
    # Claimed by a worker that then died: it never completes nor renews the lease.
    assert await queue.claim("killed", [KIND], timedelta(seconds=5)) is not None
    async with worker_pool(settings, session_factory, queue, record) as pool:
        clock.advance(seconds=6)
        pool.wake()
        await eventually(lambda: in_state(queue, job_id, JobState.done))

    job = await queue.get_job(job_id)
    assert job is not None and job.lease_owner in pool.worker_ids
    assert ran == [2]


async def test_the_heartbeat_renews_the_lease_and_a_lost_lease_stops_the_handler(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
    clock: Clock,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def long_job(payload: dict[str, Any], context: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    lease = timedelta(seconds=0.3)
    job_id = await queue.enqueue(kind=KIND, payload={})
    async with worker_pool(settings, session_factory, queue, long_job, lease=lease):
        await started.wait()
        clock.advance(seconds=10)

        async def renewed() -> bool:
            job = await queue.get_job(job_id)
            return job is not None and job.lease_expires_at == clock.now + lease

        await eventually(renewed)

        # The worker stalls past its lease and another one takes the job over.
        clock.advance(seconds=10)
        assert await queue.claim("thief", [KIND], LEASE) is not None
        async with asyncio.timeout(15):
            await cancelled.wait()

    job = await queue.get_job(job_id)
    assert job is not None and (job.state, job.lease_owner) == (JobState.running, "thief")


# ---------------------------------------------------------------------------------------------
# Stopping, waking, progress


async def test_a_graceful_stop_lets_the_running_job_finish_and_claims_no_more(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
) -> None:
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow(payload: dict[str, Any], context: JobContext) -> None:
        started.set()
        await finish.wait()

    first = await queue.enqueue(kind=KIND, payload={}, run_after=utcnow() - timedelta(seconds=1))
    second = await queue.enqueue(kind=KIND, payload={})
    pool = worker_pool(settings, session_factory, queue, slow)
    await pool.start()
    await started.wait()

    stopping = asyncio.create_task(pool.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()
    finish.set()
    await stopping

    assert await in_state(queue, first, JobState.done)
    assert await in_state(queue, second, JobState.queued)


async def test_stopping_without_grace_gives_the_running_job_back(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
) -> None:
    started = asyncio.Event()

    async def stuck(payload: dict[str, Any], context: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job_id = await queue.enqueue(kind=KIND, payload={})
    pool = worker_pool(settings, session_factory, queue, stuck)
    await pool.start()
    await started.wait()
    await pool.stop(grace=0)

    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.lease_expires_at) == (JobState.queued, 0, None)


async def test_a_job_enqueued_in_this_process_wakes_idle_workers(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
) -> None:
    async def record(payload: dict[str, Any], context: JobContext) -> None:
        pass

    # Polling once a minute: only the wake-up on commit can run these jobs within the test.
    async with worker_pool(settings, session_factory, queue, record, poll_interval=60):
        for _ in range(2):
            async with session_factory() as db_session:
                job_id = await enqueue_job(db_session=db_session, kind=KIND, payload={})
                await db_session.commit()
            await eventually(lambda job_id=job_id: in_state(queue, job_id, JobState.done), 10)


async def test_counts_follow_a_group_and_finished_jobs_can_be_purged(
    queue: DatabaseJobQueue, clock: Clock
) -> None:
    batch = [await queue.enqueue(kind=KIND, payload={}, group_key="import:1") for _ in range(3)]
    await queue.enqueue(kind="test.other", payload={})
    claimed = await queue.claim("w1", [KIND], LEASE)
    assert claimed is not None and claimed.id == batch[0]
    assert await queue.complete(batch[0], "w1")
    assert await queue.claim("w1", [KIND], LEASE) is not None

    assert await queue.job_counts_by_state(group_key="import:1") == {
        JobState.queued: 1,
        JobState.running: 1,
        JobState.done: 1,
        JobState.dead: 0,
    }
    assert (await queue.job_counts_by_state(kinds=["test.other"]))[JobState.queued] == 1

    assert await queue.purge_finished_jobs(finished_before=clock.now) == 0
    assert await queue.purge_finished_jobs(finished_before=clock.now + timedelta(seconds=1)) == 1
    assert await queue.get_job(batch[0]) is None


async def test_workers_delete_jobs_finished_longer_ago_than_the_retention(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    queue: DatabaseJobQueue,
    clock: Clock,
) -> None:
    retention = timedelta(days=settings.jobs_retention_days)

    async def finish_one_at(moment: datetime) -> uuid.UUID:
        clock.now = moment
        job_id = await queue.enqueue(kind=KIND, payload={})
        claimed = await queue.claim("w1", [KIND], LEASE)
        assert claimed is not None and claimed.id == job_id
        assert await queue.complete(job_id, "w1")
        return job_id

    old = await finish_one_at(utcnow() - retention - timedelta(hours=1))
    recent = await finish_one_at(utcnow() - retention + timedelta(hours=1))
    clock.now = utcnow()
    dead = await queue.enqueue(kind=KIND, payload={})
    assert await queue.claim("w1", [KIND], LEASE) is not None
    assert await queue.fail(dead, "w1", "broken", permanent=True) is JobState.dead

    async def ignore(payload: dict[str, Any], context: JobContext) -> None:
        pass

    # The pool purges as it starts (and then every day).
    async with WorkerPool(
        queue=queue,
        handlers={"test.nothing": ignore},
        count=1,
        lease=LEASE,
        settings=settings,
        session_factory=session_factory,
        poll_interval=60,
    ):
        await eventually(lambda: _is_gone(queue, old), 10)
    assert await queue.get_job(recent) is not None
    dead_job = await queue.get_job(dead)
    assert dead_job is not None and dead_job.state is JobState.dead


async def _is_gone(queue: DatabaseJobQueue, job_id: uuid.UUID) -> bool:
    return await queue.get_job(job_id) is None


# ---------------------------------------------------------------------------------------------
# `encore worker`


async def test_encore_worker_runs_jobs_until_sigterm(sqlite_template: Path, tmp_path: Path) -> None:
    database = tmp_path / "encore.db"
    shutil.copyfile(sqlite_template, database)
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{database}")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")}
    environment.update(
        ENCORE_DATABASE_URL=settings.database_url,
        ENCORE_STORAGE_URL=f"file://{tmp_path / 'media'}",
        ENCORE_LOG_LEVEL="info",
    )
    engine = create_engine(settings)
    queue = DatabaseJobQueue(create_session_factory(engine))
    log = tmp_path / "worker.log"
    try:
        with log.open("wb") as output:
            worker = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("encore")),
                "worker",
                "--count",
                "2",
                env=environment,
                cwd=tmp_path,
                stdout=output,
                stderr=output,
            )
            try:
                job_id = await queue.enqueue(kind="noop", payload={})

                async def done() -> bool:
                    assert worker.returncode is None, log.read_text()
                    return await in_state(queue, job_id, JobState.done)

                await eventually(done, timeout=30)
                worker.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    returncode = await worker.wait()
            finally:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
    finally:
        await engine.dispose()

    printed = log.read_text()
    assert returncode == 0, printed
    assert "2 workers running jobs of kinds" in printed
    assert "media.process_track" in printed and "noop" in printed
    assert "encore worker: stopped" in printed

"""The bus: the durable job queue and the listening-event log, each with a database backend
(the embedded default) and a NATS JetStream backend (`ENCORE_BUS_URL=nats://...`).

Callers import from `encore.bus` only; the modules behind it are the backends.
"""

from __future__ import annotations

from encore.bus.jobs import (
    DEFAULT_POLL_INTERVAL,
    MAX_ERROR_LENGTH,
    NOOP_JOB_KIND,
    RETRY_DELAY_CAP,
    DatabaseJobQueue,
    Job,
    JobContext,
    JobHandler,
    JobQueue,
    JobState,
    PermanentJobError,
    WorkerPool,
    enqueue_job,
    open_job_queue,
    retry_delay,
    run_noop_job,
    run_workers,
    truncate_error,
)

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "MAX_ERROR_LENGTH",
    "NOOP_JOB_KIND",
    "RETRY_DELAY_CAP",
    "DatabaseJobQueue",
    "Job",
    "JobContext",
    "JobHandler",
    "JobQueue",
    "JobState",
    "PermanentJobError",
    "WorkerPool",
    "enqueue_job",
    "open_job_queue",
    "retry_delay",
    "run_noop_job",
    "run_workers",
    "truncate_error",
]

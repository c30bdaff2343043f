"""The jobs table behind the database backend of the durable job queue (see `encore.bus`)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base, Timestamped, UUIDPrimaryKey, utcnow


class JobState(enum.StrEnum):
    """Where a job is in its life: waiting, leased to a worker, finished, or given up on."""

    queued = "queued"
    running = "running"
    done = "done"
    dead = "dead"


# A dedupe key is taken only while its job may still run; once done or dead it can be reused.
# The partial indexes below and `enqueue_job`'s ON CONFLICT target must spell this identically.
ACTIVE_JOB_PREDICATE = "state IN ('queued', 'running')"
_QUEUED_PREDICATE = "state = 'queued'"
_RUNNING_PREDICATE = "state = 'running'"

MAX_KIND_LENGTH = 100
MAX_KEY_LENGTH = 200


class JobRecord(UUIDPrimaryKey, Timestamped, Base):
    """One job: a kind, a JSON payload and the bookkeeping of its tries and lease."""

    __tablename__ = "jobs"

    kind: Mapped[str] = mapped_column(String(MAX_KIND_LENGTH))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Stored as a plain string with a CHECK (no PostgreSQL ENUM type to alter later).
    state: Mapped[JobState] = mapped_column(
        Enum(
            JobState,
            name="job_state",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda members: [m.value for m in members],
        ),
        default=JobState.queued,
    )
    # Same kind and key while the job is queued or running: enqueueing again adds nothing.
    dedupe_key: Mapped[str | None] = mapped_column(String(MAX_KEY_LENGTH))
    # Lets a caller follow a batch of its jobs (an import's progress bar).
    group_key: Mapped[str | None] = mapped_column(String(MAX_KEY_LENGTH))
    # Tries started so far: claim adds one, so a worker lost mid-job still counts.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A queued job is not claimed before this: the retry back-off, or a scheduled start.
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(MAX_KEY_LENGTH))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        # claim(): the next due queued job, read in run_after order and stopped at the first
        # row; partial, so the ever-growing finished jobs do not weigh on it.
        Index(
            "ix_jobs_queued_run_after",
            "run_after",
            "id",
            sqlite_where=text(_QUEUED_PREDICATE),
            postgresql_where=text(_QUEUED_PREDICATE),
        ),
        # claim(): running jobs whose worker stopped renewing the lease.
        Index(
            "ix_jobs_running_lease_expires_at",
            "lease_expires_at",
            sqlite_where=text(_RUNNING_PREDICATE),
            postgresql_where=text(_RUNNING_PREDICATE),
        ),
        Index(
            "uq_jobs_active_kind_dedupe_key",
            "kind",
            "dedupe_key",
            unique=True,
            sqlite_where=text(ACTIVE_JOB_PREDICATE),
            postgresql_where=text(ACTIVE_JOB_PREDICATE),
        ),
        # Progress counts and dead-letter listings, by kind or by group.
        Index("ix_jobs_kind_state", "kind", "state"),
        Index("ix_jobs_group_key_state", "group_key", "state"),
    )

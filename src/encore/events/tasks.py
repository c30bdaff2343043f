"""The consumers of the event log that the workers run: listening counts and the lake."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from encore import bus
from encore.bus.event_log import EventConsumer, LoggedEvent, prune_consumed_events
from encore.config import Settings
from encore.db import utcnow
from encore.events import service
from encore.events.lake import LakeWriter
from encore.recommend import service as recommend_service
from encore.recommend.tasks import RecommendConsumer
from encore.storage import BlobStore

logger = structlog.get_logger("encore.events")

LISTENING_CONSUMER = "listening"
"""History, play counts and daily rollups, in the database."""

LAKE_CONSUMER = "lake"
"""Hourly Parquet files in the blob store."""


PRUNE_JOB = "events_prune_dedupe_records"
SCHEDULED_PRUNE = "scheduled"
"""Dedupe key of the next pruning run: at most one is ever queued."""
PRUNE_INTERVAL = timedelta(days=1)


class ListeningConsumer:
    """Applies events to history, counts and rollups; keeps a daily pruning of the records
    that make redeliveries harmless queued while events arrive."""

    async def __call__(self, batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        """Apply a batch (each event once) in the consumer's transaction."""
        await service.apply_listening_events(batch, db_session)
        await bus.enqueue_job(
            db_session=db_session,
            kind=PRUNE_JOB,
            payload={},
            dedupe_key=SCHEDULED_PRUNE,
            run_after=utcnow() + PRUNE_INTERVAL,
        )


async def prune_dedupe_records(payload: dict[str, Any], context: bus.JobContext) -> None:
    """The daily pruning job: forget applied and written events no copy of which can come
    again, and drop the database log's events older than its retention that every consumer
    has applied (with a JetStream log the stream's max age does that, and the table is empty).
    """
    now = utcnow()
    retention_days = context.settings.events_retention_days
    older_than = service.dedupe_record_horizon(now=now, log_retention_days=retention_days)
    async with context.session_factory() as db_session:
        deleted = await service.prune_dedupe_records(db_session=db_session, older_than=older_than)
        deleted["recommend_applied_events"] = await recommend_service.prune_applied_events(
            db_session=db_session, older_than=older_than
        )
    consumers = event_consumers(settings=context.settings, store=context.store, log_source="db")
    deleted["event_log"] = await prune_consumed_events(
        context.session_factory,
        consumers=[consumer.name for consumer in consumers],
        received_before=now - timedelta(days=retention_days),
    )
    logger.info("events_dedupe_records_pruned", older_than=older_than.isoformat(), **deleted)


def event_consumers(
    *, settings: Settings, store: BlobStore, log_source: str
) -> list[EventConsumer]:
    """The consumers every deployment runs, configured from settings."""
    return [
        EventConsumer(
            name=LISTENING_CONSUMER,
            handler=ListeningConsumer(),
            batch_size=settings.events_consumer_batch,
        ),
        EventConsumer(
            name=LAKE_CONSUMER,
            handler=LakeWriter(store=store, log_source=log_source),
            batch_size=settings.lake_batch_events,
            linger_seconds=settings.lake_flush_seconds,
        ),
        EventConsumer(name="recommend", handler=RecommendConsumer(settings=settings)),
    ]

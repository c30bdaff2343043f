"""The consumers of the event log that the workers run: listening counts and the lake."""

from __future__ import annotations

from encore.bus.event_log import EventConsumer
from encore.config import Settings
from encore.events import service
from encore.events.lake import LakeWriter
from encore.recommend.tasks import RecommendConsumer
from encore.storage import BlobStore

LISTENING_CONSUMER = "listening"
"""History, play counts and daily rollups, in the database."""

LAKE_CONSUMER = "lake"
"""Hourly Parquet files in the blob store."""


def event_consumers(
    *, settings: Settings, store: BlobStore, log_source: str
) -> list[EventConsumer]:
    """The consumers every deployment runs, configured from settings."""
    return [
        EventConsumer(
            name=LISTENING_CONSUMER,
            handler=service.apply_listening_events,
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

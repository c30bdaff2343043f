"""Recommend workers: the event consumer, the scheduled training and playlist refresh jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from encore import bus
from encore.bus.event_log import LoggedEvent
from encore.config import Settings
from encore.db import utcnow
from encore.recommend import generated, service
from encore.recommend.model_store import load_newest_model

logger = structlog.get_logger("encore.recommend")

RECOMMEND_CONSUMER = "recommend"
"""Per-listener track interactions and radio feedback, in the database."""

TRAIN_JOB = "recommend_train"
SCHEDULED_TRAINING = "scheduled"
"""Dedupe key of the next scheduled training run: at most one is ever queued."""
REFRESH_PLAYLISTS_JOB = "recommend_refresh_playlists"
SCHEDULED_REFRESH = "scheduled"
"""Dedupe key of the next scheduled playlist refresh: at most one is ever queued."""


class RecommendConsumer:
    """Applies events to the interaction table and schedules the next training after news."""

    def __init__(self, *, settings: Settings) -> None:
        self._interval = timedelta(seconds=settings.recommend_train_interval_seconds)
        self._refresh_interval = timedelta(
            seconds=settings.recommend_playlists_refresh_interval_seconds
        )

    async def __call__(self, batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        """Apply a batch (each event once) in the consumer's transaction."""
        if await service.apply_recommend_events(batch, db_session):
            # New listening: a training run becomes due one interval from now (or stays at
            # the time an already queued run has).
            await bus.enqueue_job(
                db_session=db_session,
                kind=TRAIN_JOB,
                payload={},
                dedupe_key=SCHEDULED_TRAINING,
                run_after=utcnow() + self._interval,
            )
            # Generated playlists are refreshed on the same terms, on their own interval.
            await bus.enqueue_job(
                db_session=db_session,
                kind=REFRESH_PLAYLISTS_JOB,
                payload={},
                dedupe_key=SCHEDULED_REFRESH,
                run_after=utcnow() + self._refresh_interval,
            )


async def train_recommendations(payload: dict[str, Any], context: bus.JobContext) -> None:
    """The training job: train on the window's interactions and publish a model version."""
    async with context.session_factory() as db_session:
        artifact = await service.train_model(
            db_session=db_session, store=context.store, settings=context.settings
        )
    if artifact is None:
        logger.info("recommend_training_skipped", reason="no interactions")
        return
    logger.info(
        "recommend_model_trained",
        version=artifact.version,
        users=artifact.metadata["users"],
        items=artifact.metadata["items"],
        metrics=artifact.metadata["metrics"],
    )


async def refresh_playlists(payload: dict[str, Any], context: bus.JobContext) -> None:
    """The playlist job: refresh every listener's Discover Weekly and Daily Mixes."""
    model = await load_newest_model(
        context.store, ann_min_items=context.settings.recommend_ann_min_items
    )
    await generated.refresh_generated_playlists(
        session_factory=context.session_factory, model=model
    )

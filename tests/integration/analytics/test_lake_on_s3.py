"""A lake in an S3 store: its files are copied to the local cache, and only new ones again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from encore.analytics import lake_queries
from encore.app import create_app
from encore.config import Settings
from encore.db import utcnow
from encore.events.service import record_events
from tests.fixtures.events import drain_events, listening_session, seed_catalog
from tests.fixtures.oauth import create_user, resources_of
from tests.fixtures.seaweedfs import SeaweedS3

LIMITS = lake_queries.LakeLimits(timeout_seconds=10, max_rows=100)


@pytest.fixture
async def s3_app(
    settings: Settings, seaweedfs_s3: SeaweedS3, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    """Encore with its blob store (and so its lake) in SeaweedFS."""
    s3_settings = settings.model_copy(
        update={
            "storage_url": f"s3://{seaweedfs_s3.bucket}/lake-{uuid.uuid4().hex[:8]}",
            "s3_endpoint": seaweedfs_s3.endpoint,
            "s3_region": seaweedfs_s3.region,
            "s3_access_key_id": seaweedfs_s3.access_key_id,
            "s3_secret_access_key": SecretStr(seaweedfs_s3.secret_access_key),
            "s3_allow_http": True,
            "analytics_lake_cache_dir": str(tmp_path / "lake-cache"),
        }
    )
    application = create_app(s3_settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_an_s3_lake_is_queried_through_the_local_cache(s3_app: FastAPI) -> None:
    resources = resources_of(s3_app)
    playable = await seed_catalog(s3_app, artists=1, tracks_per_artist=3)
    listener = await create_user(s3_app, "lena")
    cache = Path(resources.settings.analytics_lake_cache_dir)

    async def listen(hours_ago: int) -> None:
        await record_events(
            event_log=resources.event_log,
            rate_limiter=None,
            user_id=listener.id,
            body=orjson.dumps(
                {
                    "events": listening_session(
                        playable.track_ids, start=utcnow() - timedelta(hours=hours_ago)
                    )
                }
            ),
        )
        await drain_events(s3_app)

    async def count() -> int:
        table = await lake_queries.query_lake(
            store=resources.store,
            cache_dir=cache,
            sql="select count(*) n from events",
            limits=LIMITS,
        )
        return int(table.column("n")[0].as_py())

    await listen(hours_ago=5)
    assert resources.store.local_path("lake/events") is None
    assert await count() == 6
    first_copies = {p: p.stat().st_mtime_ns for p in cache.rglob("*.parquet")}
    assert first_copies
    await listen(hours_ago=2)
    assert await count() == 12
    # The files copied before were not fetched again.
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in first_copies.items())
    assert len(list(cache.rglob("*.parquet"))) > len(first_copies)

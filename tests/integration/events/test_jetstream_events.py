"""The event log on a real NATS JetStream: one node, and a 3-node R3 cluster losing a node."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from fastapi import FastAPI
from nats.errors import Error as NatsError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from encore.app import create_app
from encore.bus.event_log import EventConsumer, LoggedEvent, drain_event_consumers
from encore.bus.jetstream_events import BatchPublisher, JetStreamEventLog, PublishRefused
from encore.config import Settings
from encore.db import utcnow
from encore.events import service as events_service
from encore.events.lake import LAKE_EVENTS_PREFIX
from encore.events.models import DailyTrackStats
from encore.events.tasks import LISTENING_CONSUMER
from tests.fixtures.events import (
    drain_events,
    listener_client,
    listening_session,
    play_end,
    seed_catalog,
)
from tests.fixtures.nats import NatsCluster, NatsServer
from tests.fixtures.oauth import create_user, resources_of


@contextlib.asynccontextmanager
async def _started(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def js_app(settings: Settings, nats_server: NatsServer) -> AsyncIterator[FastAPI]:
    """An app whose event log is a single JetStream node."""
    async with _started(settings.model_copy(update={"bus_url": nats_server.url})) as application:
        yield application


async def _streams(app: FastAPI) -> int:
    async with resources_of(app).session_factory() as db_session:
        return int(await db_session.scalar(select(func.sum(DailyTrackStats.streams))) or 0)


async def test_jetstream_log_counts_each_event_once(js_app: FastAPI) -> None:
    assert isinstance(resources_of(js_app).event_log, JetStreamEventLog)
    playable = await seed_catalog(js_app)
    async with await listener_client(js_app, "ivan") as ivan:
        events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=1))
        first = await ivan.post("/v1/events", json={"events": events})
        assert first.json() == {"accepted": 12, "duplicates": 0, "rejected": []}
        # A client retry inside the stream's duplicate window: JetStream drops every event.
        again = await ivan.post("/v1/events", json={"events": events})
        assert again.json() == {"accepted": 0, "duplicates": 12, "rejected": []}
        assert await drain_events(js_app) > 0
        assert await _streams(js_app) == 6
        history = (await ivan.get("/v1/me/recently-played", params={"limit": 50})).json()
        assert len(history["items"]) == 6
        ready = await ivan.get("/readyz")
        assert ready.status_code == 200


async def test_a_redelivery_after_the_dedupe_window_still_counts_once(js_app: FastAPI) -> None:
    playable = await seed_catalog(js_app, artists=1, tracks_per_artist=1)
    resources = resources_of(js_app)
    user = await create_user(js_app, "judy")
    event = play_end(playable.track_ids[0], at=utcnow() - timedelta(minutes=1))
    await events_service.record_events(
        event_log=resources.event_log,
        rate_limiter=None,
        user_id=user.id,
        body=orjson.dumps({"events": [event]}),
    )
    log = resources.event_log
    assert isinstance(log, JetStreamEventLog)
    # The same event again under another message id: what the stream holds after its
    # duplicate window has passed.
    js = log._js
    body = (await js.get_last_msg("EVENTS", "events.play_end")).data
    assert body is not None
    await js.publish("events.play_end", body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
    applied = await drain_events(js_app)
    assert applied == 6, applied  # two messages, each through the three consumers
    assert await _streams(js_app) == 1
    # The lake holds it once too, though it read both copies.
    lake = Path(resources.settings.storage_url.removeprefix("file://")) / LAKE_EVENTS_PREFIX
    with duckdb.connect() as reader:
        copies = reader.execute(
            "select event_id, count(*) from "
            f"read_parquet('{lake}/**/*.parquet', hive_partitioning = true) group by 1"
        ).fetchall()
    assert copies == [(event["event_id"], 1)]


class ConsumerCrash(Exception):
    """A consumer that dies after its effects and before its acknowledgement."""


async def test_a_consumer_that_dies_mid_batch_gets_the_batch_again(js_app: FastAPI) -> None:
    playable = await seed_catalog(js_app, artists=1, tracks_per_artist=3)
    resources = resources_of(js_app)
    user = await create_user(js_app, "ken")
    events = listening_session(playable.track_ids, start=utcnow() - timedelta(hours=2))
    await events_service.record_events(
        event_log=resources.event_log,
        rate_limiter=None,
        user_id=user.id,
        body=orjson.dumps({"events": events}),
    )

    async def apply_then_die(batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        await events_service.apply_listening_events(batch, db_session)
        raise ConsumerCrash

    with pytest.raises(ConsumerCrash):
        await resources.event_log.consume_once(EventConsumer(LISTENING_CONSUMER, apply_then_die, 4))
    # The batch comes back after a short back-off, from its first message.
    consumer = EventConsumer(LISTENING_CONSUMER, events_service.apply_listening_events, 4)
    async with asyncio.timeout(20):
        while await _streams(js_app) < 3:
            await drain_event_consumers(resources.event_log, [consumer])
    await drain_event_consumers(resources.event_log, [consumer])
    assert await _streams(js_app) == 3


async def _post_with_retries(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> int:
    """Send a batch until the server confirms it, as a client does; the events it confirms
    (recorded now, or by an earlier try that failed after storing part of the batch)."""
    for _attempt in range(60):
        try:
            response = await http.post("/v1/events", json={"events": events})
        except httpx.TransportError:
            await asyncio.sleep(0.25)
            continue
        if response.status_code == 202:
            body = response.json()
            assert not body["rejected"]
            return int(body["accepted"]) + int(body["duplicates"])
        assert response.status_code == 503, response.text
        await asyncio.sleep(0.25)
    raise AssertionError("the batch was never confirmed")


async def test_a_cluster_losing_a_node_under_load_loses_nothing(
    settings: Settings, nats_cluster: NatsCluster
) -> None:
    cluster_settings = settings.model_copy(
        update={
            "bus_url": nats_cluster.url,
            "bus_stream_replicas": 3,
            "events_per_user_per_minute": 1_000_000,
        }
    )
    async with _started(cluster_settings) as app:
        playable = await seed_catalog(app, artists=2, tracks_per_artist=5)
        clients = [await listener_client(app, f"load{number}") for number in range(4)]
        total_events = 20_000
        batches: list[tuple[httpx.AsyncClient, list[dict[str, Any]]]] = []
        start = utcnow() - timedelta(hours=6)
        per_batch = 500
        for number in range(total_events // per_batch):
            batch = [
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "play_start",
                    "track_id": str(playable.track_ids[(number + index) % len(playable.track_ids)]),
                    "occurred_at": (start + timedelta(seconds=number)).isoformat(),
                }
                for index in range(per_batch)
            ]
            batches.append((clients[number % len(clients)], batch))
        killed = asyncio.Event()

        async def send(share: list[tuple[httpx.AsyncClient, list[dict[str, Any]]]]) -> int:
            recorded = 0
            for index, (http, batch) in enumerate(share):
                if index == len(share) // 3 and not killed.is_set():
                    killed.set()
                    nats_cluster.kill(1)
                recorded += await _post_with_retries(http, batch)
            return recorded

        shares = [batches[number::4] for number in range(4)]
        recorded = sum(await asyncio.gather(*(send(share) for share in shares)))
        assert killed.is_set()
        assert recorded == total_events
        # The consumers' leaders may still be moving off the killed node: drain until the
        # counts settle, then check they are exact.
        plays = 0
        async with asyncio.timeout(120):
            while True:
                try:
                    applied = await drain_events(app)
                except (TimeoutError, NatsError):
                    # A consumer's leader is being elected: the workers' pool retries too.
                    await asyncio.sleep(0.2)
                    continue
                async with resources_of(app).session_factory() as db_session:
                    plays = await db_session.scalar(select(func.sum(DailyTrackStats.plays))) or 0
                if plays >= total_events and applied == 0:
                    break
                await asyncio.sleep(0.2)
        assert plays == total_events
        for http in clients:
            await http.aclose()


async def test_batch_publisher_reports_duplicates_and_refusals(nats_server: NatsServer) -> None:
    import nats
    from nats.js.api import StreamConfig

    client = await nats.connect(nats_server.url)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="PUBTEST", subjects=["pubtest.>"], max_msg_size=512))
        publisher = BatchPublisher(client)
        messages = [(f"pubtest.{n % 3}", b"x" * 100, f"id-{n}") for n in range(250)]
        assert await publisher.publish(messages) == 0
        # The same ids again, mixed with new ones: only the repeats are duplicates.
        again = messages[:40] + [("pubtest.0", b"y", f"new-{n}") for n in range(10)]
        assert await publisher.publish(again) == 40
        assert (await js.stream_info("PUBTEST")).state.messages == 260
        # A message the stream refuses (over its size limit) fails the batch it is in.
        with pytest.raises(PublishRefused):
            await publisher.publish([("pubtest.0", b"z", "ok-1"), ("pubtest.0", b"z" * 600, "big")])
        # A subject no stream takes fails at once, rather than waiting for a timeout.
        async with asyncio.timeout(5):
            with pytest.raises(PublishRefused):
                await publisher.publish([("nostream.play_end", b"z", "lost-1")])
        # The publisher goes on working after refusals.
        assert await publisher.publish([("pubtest.1", b"after", "after-1")]) == 0
        assert (await js.stream_info("PUBTEST")).state.messages == 262
    finally:
        await client.close()


async def test_events_without_a_stream_are_refused_with_503(js_app: FastAPI) -> None:
    playable = await seed_catalog(js_app, artists=1, tracks_per_artist=1)
    log = resources_of(js_app).event_log
    assert isinstance(log, JetStreamEventLog)
    await log._js.delete_stream("EVENTS")
    async with await listener_client(js_app, "lena") as lena:
        event = play_end(playable.track_ids[0], at=utcnow() - timedelta(minutes=1))
        response = await lena.post("/v1/events", json={"events": [event]})
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"

"""POST /v1/events and what the consumers make of it: history, counts, rollups (both databases)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from encore.app import create_app
from encore.config import Settings
from encore.db import utcnow
from encore.events.models import (
    DailyArtistListener,
    DailyArtistStats,
    DailyTrackListener,
    DailyTrackStats,
    ListeningHistoryEntry,
)
from tests.fixtures.events import (
    PlayableCatalog,
    drain_events,
    listener_client,
    listening_session,
    play_end,
    seed_catalog,
)
from tests.fixtures.oauth import asgi_client, resources_of


@pytest.fixture
async def playable(app: FastAPI) -> PlayableCatalog:
    """Two artists with three 4-minute tracks each."""
    return await seed_catalog(app)


@pytest.fixture
async def alice(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A listener allowed to post events and read her history."""
    async with await listener_client(app, "alice") as http:
        yield http


@pytest.fixture
async def bob(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Another listener."""
    async with await listener_client(app, "bob") as http:
        yield http


async def _post(http: httpx.AsyncClient, events: list[Any]) -> httpx.Response:
    return await http.post("/v1/events", json={"events": events})


async def _count(app: FastAPI, column: Any, *where: Any) -> int:
    async with resources_of(app).session_factory() as db_session:
        value = await db_session.scalar(select(func.coalesce(func.sum(column), 0)).where(*where))
        return int(value or 0)


async def test_streams_reach_history_counts_and_rollups(
    app: FastAPI, alice: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    start = utcnow() - timedelta(hours=1)
    first, second, third = playable.track_ids[:3]
    events = listening_session([first, second], start=start)
    # A 10-second play: heard, but not a stream.
    events.append(play_end(third, at=start + timedelta(minutes=9), ms_played=10_000))
    response = await _post(alice, events)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 5, "duplicates": 0, "rejected": []}

    assert await drain_events(app) > 0
    history = await alice.get("/v1/me/recently-played")
    assert history.status_code == 200
    assert history.headers["cache-control"] == "private, no-store"
    items = history.json()["items"]
    assert [item["track"]["id"] for item in items] == [str(second), str(first)]
    assert items[0]["context"] == {"type": "album", "id": "album-1"}
    assert items[0]["track"]["stream_count"] == 1
    played_at = [item["played_at"] for item in items]
    assert played_at == sorted(played_at, reverse=True)

    track = (await alice.get(f"/v1/tracks/{first}")).json()
    assert track["stream_count"] == 1
    artist = (await alice.get(f"/v1/artists/{playable.artist_of[first]}")).json()
    assert artist["stream_count"] == 2
    short = (await alice.get(f"/v1/tracks/{third}")).json()
    assert short["stream_count"] == 0

    assert await _count(app, DailyTrackStats.streams, DailyTrackStats.track_id == first) == 1
    assert await _count(app, DailyTrackStats.plays, DailyTrackStats.track_id == first) == 1
    assert await _count(app, DailyTrackStats.ms_played, DailyTrackStats.track_id == third) == 10_000
    artist_id = playable.artist_of[first]
    assert await _count(app, DailyArtistStats.streams, DailyArtistStats.artist_id == artist_id) == 2
    assert (
        await _count(app, DailyArtistStats.ms_played, DailyArtistStats.artist_id == artist_id)
        == 2 * 200_000 + 10_000
    )
    assert await _count(app, DailyTrackListener.streams, DailyTrackListener.track_id == first) == 1
    assert (
        await _count(app, DailyArtistListener.streams, DailyArtistListener.artist_id == artist_id)
        == 2
    )
    async with resources_of(app).session_factory() as db_session:
        dims = (
            await db_session.execute(
                select(
                    DailyTrackStats.country, DailyTrackStats.device, DailyTrackStats.source
                ).where(DailyTrackStats.track_id == first)
            )
        ).all()
    assert [tuple(row) for row in dims] == [("SE", "phone", "album")]


async def test_a_resent_batch_records_nothing_twice(
    app: FastAPI, alice: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    events = listening_session(playable.track_ids[:3], start=utcnow() - timedelta(hours=2))
    first = await _post(alice, events)
    assert first.json()["accepted"] == 6
    await drain_events(app)
    again = await _post(alice, events)
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 6, "rejected": []}
    # The same event twice inside one batch is recorded once too.
    extra = play_end(playable.track_ids[3], at=utcnow() - timedelta(minutes=1))
    twice = await _post(alice, [extra, extra])
    assert twice.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    await drain_events(app)
    streams = await _count(app, DailyTrackStats.streams)
    assert streams == 4
    history = (await alice.get("/v1/me/recently-played", params={"limit": 50})).json()
    assert len(history["items"]) == 4


async def test_each_invalid_event_is_listed_and_the_valid_ones_recorded(
    app: FastAPI, alice: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    now = utcnow()
    track = playable.track_ids[0]
    valid = play_end(track, at=now - timedelta(minutes=5))
    offline_old = play_end(track, at=now - timedelta(days=29), offline=True)
    batch: list[Any] = [
        valid,
        {**play_end(track), "user_id": str(uuid.uuid4())},  # the user comes from the token
        play_end(track, at=now + timedelta(minutes=10)),
        play_end(track, at=now - timedelta(days=31), offline=True),
        play_end(track, at=now - timedelta(days=2)),
        {k: v for k, v in play_end(track).items() if k != "track_id"},
        {**play_end(track), "type": "teleport"},
        {**play_end(track), "occurred_at": "2026-11-26T10:00:00"},  # no offset
        {**play_end(track), "ms_played": -1},
        {**play_end(track), "context": {"type": "album", "id": "x", "extra": 1}},
        {"type": "like", "event_id": str(uuid.uuid4()), "occurred_at": now.isoformat()},
        "not an object",
        offline_old,
        # A NUL would stop the consumer that stores the context on PostgreSQL.
        {**play_end(track), "context": {"type": "album", "id": "a\u0000b"}},
    ]
    response = await _post(alice, batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    rejected = {item["index"]: item for item in body["rejected"]}
    assert sorted(rejected) == [*range(1, 12), 13]
    assert "control characters" in rejected[13]["errors"][0]
    assert "user_id" in rejected[1]["errors"][0]
    assert "future" in rejected[2]["errors"][0]
    assert "30 days" in rejected[3]["errors"][0]
    assert "offline=true" in rejected[4]["errors"][0]
    assert "track_id" in rejected[5]["errors"][0]
    assert rejected[6]["event_id"] is not None
    assert any("timezone" in error for error in rejected[7]["errors"])
    assert rejected[11]["event_id"] is None
    await drain_events(app)
    assert await _count(app, DailyTrackStats.streams) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),
        (b'{"events": []}', "application/json", 422),
        (b'{"events": {}}', "application/json", 422),
        (b'{"events": [], "user_id": "x"}', "application/json", 422),
        (b"[]", "application/json", 422),
        (b'{"events": []}', "text/plain", 415),
        (b'{"events": [' + b'"x",' * 700_000 + b'"x"]}', "application/json", 413),
    ],
    ids=["not-json", "empty", "not-a-list", "extra-field", "array", "content-type", "too-big"],
)
async def test_a_malformed_batch_is_a_problem_and_records_nothing(
    app: FastAPI, alice: httpx.AsyncClient, body: bytes, content_type: str, status: int
) -> None:
    response = await alice.post("/v1/events", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert await drain_events(app) == 0


async def test_more_than_a_thousand_events_is_refused(
    app: FastAPI, alice: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    events = [play_end(playable.track_ids[0]) for _ in range(1001)]
    response = await _post(alice, events)
    assert response.status_code == 422
    assert "1000" in response.json()["detail"]
    assert await drain_events(app) == 0


async def test_events_need_a_user_token_with_the_scope(
    app: FastAPI, anonymous_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    batch = {"events": [play_end(uuid.uuid4())]}
    assert (await anonymous_client.post("/v1/events", json=batch)).status_code == 401
    # A client-credentials token belongs to no listener.
    assert (await client.post("/v1/events", json=batch)).status_code == 403
    async with await listener_client(app, "carol", scope="user-read") as carol:
        refused = await carol.post("/v1/events", json=batch)
        assert refused.status_code == 403
        assert "events-write" in refused.json()["detail"]
    assert (await anonymous_client.get("/v1/me/recently-played")).status_code == 401


async def test_history_is_private_and_paginated(
    app: FastAPI, alice: httpx.AsyncClient, bob: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    await _post(alice, listening_session(playable.track_ids, start=utcnow() - timedelta(hours=3)))
    await drain_events(app)
    assert (await bob.get("/v1/me/recently-played")).json()["items"] == []
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await alice.get("/v1/me/recently-played", params=params)).json()
        seen += [item["track"]["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(track) for track in reversed(playable.track_ids)]
    for bad in ({"cursor": "garbage"}, {"limit": 0}, {"limit": 51}):
        refused = await alice.get("/v1/me/recently-played", params=bad)
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"


async def test_replaying_a_track_a_thousand_times_counts_once(
    app: FastAPI, alice: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    track = playable.track_ids[0]
    at = utcnow() - timedelta(minutes=2)
    # A script claims 1000 complete plays of a 4-minute track within one minute.
    replays = [
        play_end(track, at=at + timedelta(milliseconds=60 * index), ms_played=240_000)
        for index in range(1000)
    ]
    response = await _post(alice, replays)
    assert response.json()["accepted"] == 1000
    await drain_events(app)
    assert (await alice.get(f"/v1/tracks/{track}")).json()["stream_count"] == 1
    assert await _count(app, DailyTrackStats.streams, DailyTrackStats.track_id == track) == 1
    assert (
        await _count(app, DailyTrackStats.flagged_plays, DailyTrackStats.track_id == track) == 999
    )
    async with resources_of(app).session_factory() as db_session:
        flagged = await db_session.scalar(
            select(func.count()).where(ListeningHistoryEntry.flag.is_not(None))
        )
    assert flagged == 999
    history = (await alice.get("/v1/me/recently-played")).json()["items"]
    assert len(history) == 1
    # A later, honest play after the flagged ones still counts.
    later = play_end(playable.track_ids[1], at=utcnow(), ms_played=60_000)
    await _post(alice, [later])
    await drain_events(app)
    assert await _count(app, DailyTrackStats.streams) == 2


@pytest.fixture
async def throttled_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app that lets one account post at most 1000 events a minute."""
    application = create_app(settings.model_copy(update={"events_per_user_per_minute": 1000}))
    async with application.router.lifespan_context(application):
        yield application


async def test_an_account_over_its_rate_gets_429_and_nothing_recorded(
    throttled_app: FastAPI,
) -> None:
    playable = await seed_catalog(throttled_app, artists=1, tracks_per_artist=1)
    track = playable.track_ids[0]
    async with await listener_client(throttled_app, "dave") as dave:
        first = await _post(dave, [play_end(track, at=utcnow()) for _ in range(1000)])
        assert first.status_code == 202
        refused = await _post(dave, [play_end(track, at=utcnow()) for _ in range(10)])
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
    async with asgi_client(throttled_app):
        assert await drain_events(throttled_app) >= 1000
    assert await _count(throttled_app, DailyTrackStats.flagged_plays) == 999


async def test_events_about_unknown_tracks_count_nowhere(
    app: FastAPI, alice: httpx.AsyncClient, playable: PlayableCatalog
) -> None:
    response = await _post(alice, [play_end(uuid.uuid4(), at=utcnow())])
    assert response.json()["accepted"] == 1
    await drain_events(app)
    assert await _count(app, DailyTrackStats.plays) == 0
    assert (await alice.get("/v1/me/recently-played")).json()["items"] == []

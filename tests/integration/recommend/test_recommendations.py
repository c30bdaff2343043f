"""Recommendations end to end: events → interactions → model → endpoints, on both databases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from encore.bus.event_log import EventConsumer, drain_event_consumers
from encore.catalog.models import Track, TrackStatus
from encore.config import Settings, load_settings
from encore.db import utcnow
from encore.events.service import record_events
from encore.recommend import service
from encore.recommend.models import TrackInteraction
from encore.recommend.tasks import RECOMMEND_CONSUMER, RecommendConsumer
from tests.fixtures.events import PlayableCatalog, drain_events, listening_session, seed_catalog
from tests.fixtures.oauth import asgi_client, create_user, resources_of, service_token, user_token

CLUSTERS = 3
SCOPE = "user-read streaming"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Small, fast models and no exploration, so planted clusters show exactly."""
    return load_settings(
        database_url=database_url,
        storage_url=f"file://{tmp_path / 'media'}",
        log_level="warning",
        secret_key_file=str(tmp_path / "secret.key"),
        workers=0,
        recommend_factors=8,
        recommend_iterations=15,
        recommend_regularization=3.0,
        recommend_exploration_share=0.0,
        recommend_model_poll_seconds=3600,
    )


async def _ready(app: FastAPI) -> None:
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(update(Track).values(status=TrackStatus.ready))
        await db_session.commit()


def _cluster_of(playable: PlayableCatalog) -> dict[uuid.UUID, int]:
    artists = sorted(set(playable.artist_of.values()), key=str)
    artist_cluster = {artist: number % CLUSTERS for number, artist in enumerate(artists)}
    return {track: artist_cluster[artist] for track, artist in playable.artist_of.items()}


async def _listen(
    app: FastAPI, user_id: uuid.UUID, tracks: list[uuid.UUID], hours_ago: int
) -> None:
    events = listening_session(tracks, start=utcnow() - timedelta(hours=hours_ago))
    result = await record_events(
        event_log=resources_of(app).event_log,
        rate_limiter=None,
        user_id=user_id,
        body=orjson.dumps({"events": events}),
    )
    assert not result.rejected, result.rejected


async def _planted_world(app: FastAPI) -> tuple[PlayableCatalog, dict[uuid.UUID, int], list[Any]]:
    """12 artists in 3 taste clusters; 10 listeners per cluster play within their cluster."""
    playable = await seed_catalog(app, artists=12, tracks_per_artist=4)
    await _ready(app)
    cluster_of = _cluster_of(playable)
    users = []
    for cluster in range(CLUSTERS):
        tracks = [t for t in playable.track_ids if cluster_of[t] == cluster]
        # Interleaved by artist, so every slice spans the cluster's artists.
        tracks = sorted(tracks, key=lambda t: tracks.index(t) % 4)
        for number in range(10):
            user = await create_user(app, f"c{cluster}u{number}")
            # Each listener hears 8 of the cluster's 16 tracks, a different slice each.
            mine = [tracks[(number * 3 + k) % len(tracks)] for k in range(8)]
            await _listen(app, user.id, mine, hours_ago=20)
            users.append((user, cluster))
    await drain_events(app)
    return playable, cluster_of, users


async def _train(app: FastAPI) -> None:
    resources = resources_of(app)
    async with resources.session_factory() as db_session:
        artifact = await service.train_model(
            db_session=db_session, store=resources.store, settings=resources.settings
        )
    assert artifact is not None
    assert await resources.recommend_models.refresh()


async def _get(app: FastAPI, token: str, path: str, **params: Any) -> httpx.Response:
    async with asgi_client(app) as http:
        return await http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


async def test_recommendations_and_similar_tracks_follow_planted_clusters(app: FastAPI) -> None:
    playable, cluster_of, users = await _planted_world(app)
    await _train(app)
    metadata = resources_of(app).recommend_models.current.artifact.metadata  # type: ignore[union-attr]
    assert metadata["metrics"]["holdout"] == "time"
    assert set(metadata["parameters"]) >= {"factors", "alpha", "iterations"}
    for user, cluster in users[::10]:
        token = await user_token(app, user.username, SCOPE)
        response = await _get(app, token, "/v1/me/recommendations", limit=6)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["source"] == "model"
        ids = [uuid.UUID(item["id"]) for item in body["items"]]
        assert len(ids) == 6
        in_cluster = sum(cluster_of[t] == cluster for t in ids)
        assert in_cluster >= 5, (cluster, [cluster_of[t] for t in ids])
        artists = [playable.artist_of[t] for t in ids]
        assert max(artists.count(a) for a in artists) <= 2
        async with resources_of(app).session_factory() as db_session:
            played = set(
                (
                    await db_session.scalars(
                        select(TrackInteraction.track_id).where(TrackInteraction.user_id == user.id)
                    )
                ).all()
            )
        assert not played & set(ids)
    seed = playable.track_ids[0]
    response = await _get(app, token, f"/v1/tracks/{seed}/similar", limit=5)
    assert response.status_code == 200
    similar = [uuid.UUID(item["id"]) for item in response.json()["items"]]
    assert seed not in similar
    assert sum(cluster_of[t] == cluster_of[seed] for t in similar) >= 4
    artist = playable.artist_of[seed]
    response = await _get(app, token, f"/v1/artists/{artist}/related", limit=3)
    assert response.status_code == 200
    related = [uuid.UUID(item["id"]) for item in response.json()["items"]]
    artist_cluster = {a: cluster_of[t] for t, a in playable.artist_of.items()}
    assert artist not in related
    assert all(artist_cluster[a] == artist_cluster[artist] for a in related)


async def test_fold_in_moves_a_new_listener_after_five_plays(app: FastAPI) -> None:
    playable, cluster_of, _users = await _planted_world(app)
    await _train(app)
    newcomer = await create_user(app, "newcomer")
    token = await user_token(app, "newcomer", SCOPE)
    before = (await _get(app, token, "/v1/me/recommendations", limit=6)).json()
    assert before["source"] == "popularity"
    cluster_two = [t for t in playable.track_ids if cluster_of[t] == 2][:5]
    await _listen(app, newcomer.id, cluster_two, hours_ago=1)
    await drain_events(app)  # no training: the listener is folded in at request time
    after = (await _get(app, token, "/v1/me/recommendations", limit=6)).json()
    assert after["source"] == "model"
    ids = [uuid.UUID(item["id"]) for item in after["items"]]
    assert sum(cluster_of[t] == 2 for t in ids) >= 5
    assert not set(cluster_two) & set(ids)


async def test_endpoints_work_before_any_model_and_hide_unplayable_tracks(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=3, tracks_per_artist=3)
    await _ready(app)
    hidden = playable.track_ids[0]
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            update(Track)
            .where(Track.id == hidden)
            .values(status=TrackStatus.processing, stream_count=1000)
        )
        await db_session.commit()
    user = await create_user(app, "early")
    token = await user_token(app, "early", SCOPE)
    response = await _get(app, token, "/v1/me/recommendations", limit=10)
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "popularity" and body["model_version"] is None
    ids = [uuid.UUID(item["id"]) for item in body["items"]]
    assert hidden not in ids and len(ids) == 6  # 2 per artist of 3 artists
    similar = await _get(app, token, f"/v1/tracks/{playable.track_ids[1]}/similar")
    assert similar.status_code == 200
    assert hidden not in {uuid.UUID(i["id"]) for i in similar.json()["items"]}
    related = await _get(app, token, f"/v1/artists/{playable.artist_of[hidden]}/related")
    assert related.status_code == 200 and len(related.json()["items"]) == 2
    radio = await _get(app, token, "/v1/radio", seed_track=str(playable.track_ids[1]))
    assert radio.status_code == 200
    assert hidden not in {uuid.UUID(i["id"]) for i in radio.json()["items"]}
    assert user.id


async def test_access_rules(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    await create_user(app, "owner")
    await create_user(app, "other")
    async with asgi_client(app) as http:
        assert (await http.get("/v1/me/recommendations")).status_code == 401
        assert (
            await http.get("/v1/radio", params={"seed_artist": str(uuid.uuid4())})
        ).status_code == 401
        service_bearer = await service_token(app, http)
    assert (await _get(app, service_bearer, "/v1/me/recommendations")).status_code == 403
    reader = await user_token(app, "owner", "user-read")
    assert (
        await _get(app, reader, "/v1/radio", seed_track=str(playable.track_ids[0]))
    ).status_code == 403
    owner = await user_token(app, "owner", SCOPE)
    other = await user_token(app, "other", SCOPE)
    station = await _get(app, owner, "/v1/radio", seed_track=str(playable.track_ids[0]))
    assert station.status_code == 200
    stolen = await _get(app, other, "/v1/radio", cursor=station.json()["next_cursor"])
    assert stolen.status_code == 404
    assert stolen.headers["content-type"].startswith("application/problem+json")
    for path, params in (
        (f"/v1/tracks/{uuid.uuid4()}/similar", {}),
        (f"/v1/artists/{uuid.uuid4()}/related", {}),
        ("/v1/radio", {"seed_genre": str(uuid.uuid4())}),
    ):
        assert (await _get(app, owner, path, **params)).status_code == 404
    for params in ({}, {"seed_track": "x"}, {"cursor": "garbage"}, {"limit": 0}):
        response = await _get(app, owner, "/v1/radio", **params)
        assert response.status_code == 422, (params, response.text)


async def test_radio_rules_hold_over_200_tracks_and_skips_steer(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=25, tracks_per_artist=10)
    await _ready(app)
    user = await create_user(app, "radio")
    token = await user_token(app, "radio", SCOPE)
    heard: list[uuid.UUID] = []
    cursor = None
    station_id = None
    for _batch in range(10):
        params: dict[str, Any] = {"limit": 20}
        if cursor is None:
            params["seed_artist"] = str(playable.artist_of[playable.track_ids[0]])
        else:
            params["cursor"] = cursor
        response = await _get(app, token, "/v1/radio", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        station_id = station_id or body["station_id"]
        assert body["station_id"] == station_id
        heard += [uuid.UUID(item["id"]) for item in body["items"]]
        cursor = body["next_cursor"]
    assert len(heard) == 200
    assert len(set(heard)) == 200
    artists = [playable.artist_of[t] for t in heard]
    for start in range(len(artists) - 2):
        window = artists[start : start + 3]
        assert len(set(window)) == 3, (start, window)
    # Skipping every track of one artist on this station pushes that artist out of it.
    steered = await _get(app, token, "/v1/radio", seed_artist=str(artists[0]))
    station = steered.json()["station_id"]
    first = [uuid.UUID(item["id"]) for item in steered.json()["items"]]
    victim = playable.artist_of[first[1]]
    skips = [
        {
            "event_id": str(uuid.uuid4()),
            "type": "skip",
            "track_id": str(track),
            "occurred_at": (utcnow() - timedelta(minutes=5)).isoformat(),
            "ms_played": 5000,
            "reason_end": "fwdbtn",
            "context": {"type": "radio", "id": station},
        }
        for track in first
        if playable.artist_of[track] == victim
    ]
    await record_events(
        event_log=resources_of(app).event_log,
        rate_limiter=None,
        user_id=user.id,
        body=orjson.dumps({"events": skips}),
    )
    await drain_events(app)
    following = await _get(app, token, "/v1/radio", cursor=steered.json()["next_cursor"])
    later = [playable.artist_of[uuid.UUID(i["id"])] for i in following.json()["items"]]
    assert victim not in later


async def test_consumer_applies_each_event_once(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    user = await create_user(app, "once")
    await _listen(app, user.id, playable.track_ids, hours_ago=2)
    resources = resources_of(app)
    consumer = EventConsumer(
        name=RECOMMEND_CONSUMER, handler=RecommendConsumer(settings=resources.settings)
    )
    await drain_event_consumers(resources.event_log, [consumer])
    # The same events handed over again (a JetStream redelivery) change nothing.
    from encore.bus.event_log import logged_event_from_body
    from encore.event_log_models import EventLogEntry

    async with resources.session_factory() as db_session:
        rows = (await db_session.execute(select(EventLogEntry.position, EventLogEntry.body))).all()
        batch = [logged_event_from_body(position, body.encode()) for position, body in rows]
        assert await service.apply_recommend_events(batch, db_session) == 0
        await db_session.commit()
        streams = await db_session.scalar(select(func.sum(TrackInteraction.streams)))
    assert streams == 2


async def test_hot_swap_under_concurrent_requests(app: FastAPI) -> None:
    _playable, _cluster_of, users = await _planted_world(app)
    await _train(app)
    holder = resources_of(app).recommend_models
    first = holder.current
    token = await user_token(app, users[0][0].username, SCOPE)

    async def ask() -> int:
        return (await _get(app, token, "/v1/me/recommendations", limit=5)).status_code

    async def swap() -> None:
        await _train(app)

    results = await asyncio.gather(*(ask() for _ in range(20)), swap(), *(ask() for _ in range(20)))
    assert all(status == 200 for status in results if status is not None)
    assert holder.current is not None and holder.current.version != first.version  # type: ignore[union-attr]

"""Generated playlists (Discover Weekly, Daily Mix): content, refresh in place, access rules."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from encore.auth import service as auth_service
from encore.catalog.models import Track, TrackStatus
from encore.jobs_models import JobRecord
from encore.jobs_registry import default_handlers
from encore.recommend.generated import refresh_generated_playlists
from encore.recommend.models import TrackInteraction
from encore.recommend.tasks import REFRESH_PLAYLISTS_JOB
from tests.fixtures.events import drain_events, seed_catalog
from tests.fixtures.oauth import asgi_client, create_user, resources_of, user_token
from tests.integration.recommend.test_recommendations import (
    _listen,
    _planted_world,
    _ready,
    _train,
    settings,
)

__all__ = ["settings"]  # the module's small-model settings fixture, used here too

SCOPE = "user-read streaming playlist-read playlist-modify"


async def _call(app: FastAPI, token: str, method: str, path: str, **options: Any) -> httpx.Response:
    async with asgi_client(app) as http:
        return await http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **options
        )


async def _generated(app: FastAPI, token: str) -> dict[str, dict[str, Any]]:
    """The caller's playlists owned by the system account, by name."""
    response = await _call(app, token, "GET", "/v1/me/playlists", params={"limit": 50})
    assert response.status_code == 200, response.text
    async with resources_of(app).session_factory() as db_session:
        system = await auth_service.ensure_system_user(db_session=db_session)
    return {p["name"]: p for p in response.json()["items"] if p["owner_id"] == str(system)}


async def _tracks(app: FastAPI, token: str, playlist_id: str) -> list[uuid.UUID]:
    response = await _call(app, token, "GET", f"/v1/playlists/{playlist_id}/tracks?limit=100")
    assert response.status_code == 200, response.text
    return [uuid.UUID(item["track"]["id"]) for item in response.json()["items"]]


async def _heard(app: FastAPI, user_id: uuid.UUID) -> set[uuid.UUID]:
    async with resources_of(app).session_factory() as db_session:
        return set(
            (
                await db_session.scalars(
                    select(TrackInteraction.track_id).where(TrackInteraction.user_id == user_id)
                )
            ).all()
        )


async def _refresh(app: FastAPI, *, with_model: bool) -> int:
    resources = resources_of(app)
    return await refresh_generated_playlists(
        session_factory=resources.session_factory,
        model=resources.recommend_models.current if with_model else None,
    )


async def test_generated_playlists_follow_taste_refresh_in_place_and_stay_private(
    app: FastAPI,
) -> None:
    playable, cluster_of, users = await _planted_world(app)
    # A listener of two tastes: clusters 0 and 1, six tracks each.
    listener = await create_user(app, "twotastes")
    both = [t for c in (0, 1) for t in [t for t in playable.track_ids if cluster_of[t] == c][:6]]
    await _listen(app, listener.id, both, hours_ago=10)
    await drain_events(app)
    await _train(app)
    hidden = next(t for t in playable.track_ids if cluster_of[t] == 0 and t not in both)
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            update(Track).where(Track.id == hidden).values(status=TrackStatus.processing)
        )
        await db_session.commit()
    assert await _refresh(app, with_model=True) == len(users) + 1

    token = await user_token(app, "twotastes", SCOPE)
    generated = await _generated(app, token)
    mixes = sorted(name for name in generated if name.startswith("Daily Mix"))
    assert "Discover Weekly" in generated and 1 <= len(mixes) <= 3
    heard = await _heard(app, listener.id)
    weekly = await _tracks(app, token, generated["Discover Weekly"]["id"])
    assert 0 < len(weekly) <= 30 and not heard & set(weekly) and hidden not in weekly
    mix_clusters = set()
    for name in mixes:
        tracks = await _tracks(app, token, generated[name]["id"])
        assert hidden not in tracks and len(tracks) <= 30
        known = [t for t in tracks if t in heard]
        new = [t for t in tracks if t not in heard]
        assert known and new  # a mix mixes the familiar and the new
        clusters = {cluster_of[t] for t in known}
        assert len(clusters) == 1, [cluster_of[t] for t in tracks]
        (cluster,) = clusters
        # Its new tracks start with the rest of that taste (the planted catalog is small, so
        # the tail of a 30-track mix runs into other clusters).
        assert all(cluster_of[t] == cluster for t in new[:4]), [cluster_of[t] for t in new]
        mix_clusters.add(cluster)
    assert mix_clusters == {0, 1}

    # Refreshed in place: same ids, new snapshots.
    before = {name: (p["id"], p["snapshot_id"]) for name, p in generated.items()}
    await _refresh(app, with_model=True)
    after = await _generated(app, token)
    assert {name: p["id"] for name, p in after.items()} == {n: i for n, (i, _) in before.items()}
    assert all(after[name]["snapshot_id"] != snap for name, (_, snap) in before.items())

    # Another listener: 404 for all of it.
    other, _cluster = users[0]
    other_token = await user_token(app, other.username, SCOPE)
    weekly_id = generated["Discover Weekly"]["id"]
    assert weekly_id not in {p["id"] for p in (await _generated(app, other_token)).values()}
    for path in (f"/v1/playlists/{weekly_id}", f"/v1/playlists/{weekly_id}/tracks"):
        assert (await _call(app, other_token, "GET", path)).status_code == 404

    # The listener: read-only (403 for every change).
    track = str(playable.track_ids[0])
    changes: list[tuple[str, str, dict[str, Any]]] = [
        ("PATCH", f"/v1/playlists/{weekly_id}", {"json": {"name": "mine now"}}),
        ("DELETE", f"/v1/playlists/{weekly_id}", {}),
        ("POST", f"/v1/playlists/{weekly_id}/tracks", {"json": {"track_ids": [track]}}),
        ("DELETE", f"/v1/playlists/{weekly_id}/collaborators/{listener.id}", {}),
    ]
    for method, path, options in changes:
        response = await _call(app, token, method, path, **options)
        assert response.status_code == 403, (method, path, response.text)
    assert (await _call(app, token, "GET", f"/v1/playlists/{weekly_id}")).status_code == 200


async def test_generated_playlists_before_any_model_and_the_system_account(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=3, tracks_per_artist=4)
    await _ready(app)
    listener = await create_user(app, "early")
    played = playable.track_ids[:2]
    await _listen(app, listener.id, played, hours_ago=2)
    await drain_events(app)
    async with resources_of(app).session_factory() as db_session:
        queued = await db_session.scalar(
            select(JobRecord.id).where(JobRecord.kind == REFRESH_PLAYLISTS_JOB)
        )
    assert queued is not None  # new listening scheduled a refresh
    assert REFRESH_PLAYLISTS_JOB in default_handlers()

    assert await _refresh(app, with_model=False) == 1
    token = await user_token(app, "early", SCOPE)
    generated = await _generated(app, token)
    weekly = await _tracks(app, token, generated["Discover Weekly"]["id"])
    assert weekly and not set(played) & set(weekly) and len(weekly) <= 30
    mixes = [name for name in generated if name.startswith("Daily Mix")]
    assert 1 <= len(mixes) <= 3
    mix = await _tracks(app, token, generated["Daily Mix 1"]["id"])
    assert set(played) & set(mix) and set(mix) - set(played)

    async with resources_of(app).session_factory() as db_session:
        system = await auth_service.ensure_system_user(db_session=db_session)
        assert await auth_service.ensure_system_user(db_session=db_session) == system
        user = await auth_service.get_user(db_session=db_session, user_id=system)
        assert user.disabled
        for password in ("", "!", user.password_hash):
            assert (
                await auth_service.authenticate_user(
                    db_session=db_session, username=user.username, password=password
                )
                is None
            )
        listed = await auth_service.list_users(db_session=db_session, limit=100, cursor=None)
        assert system not in {u.id for u in listed.items}
    assert generated["Discover Weekly"]["owner_id"] == str(system)
    assert not generated["Discover Weekly"]["public"]

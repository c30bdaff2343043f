"""Who may read which insight: no token 401, another scope 403, another artist's data 404."""

from __future__ import annotations

import uuid

from fastapi import FastAPI

from encore.auth.models import Role
from encore.catalog import service as catalog_service
from tests.fixtures.events import seed_catalog
from tests.fixtures.oauth import asgi_client, create_user, resources_of, service_token, user_token

ANALYTICS_ROUTES = (
    ("GET", "/v1/analytics/engagement"),
    ("GET", "/v1/analytics/engagement/chart.png"),
    ("GET", "/v1/analytics/retention?cohort=week"),
    ("GET", "/v1/analytics/charts"),
    ("POST", "/v1/analytics/query"),
)


def _artist_routes(artist_id: uuid.UUID, track_id: uuid.UUID) -> tuple[tuple[str, str], ...]:
    return (
        ("GET", f"/v1/artists/{artist_id}/stats"),
        ("GET", f"/v1/artists/{artist_id}/stats/chart.png"),
        ("GET", f"/v1/tracks/{track_id}/stats"),
    )


async def test_every_insight_route_checks_who_asks(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=2, tracks_per_artist=1)
    mine_track, theirs_track = playable.track_ids
    mine, theirs = playable.artist_of[mine_track], playable.artist_of[theirs_track]
    artist = await create_user(app, "vega", roles=(Role.artist,))
    await create_user(app, "otto", roles=(Role.artist,))
    await create_user(app, "lena")
    await create_user(app, "ana", roles=(Role.analyst,))
    await create_user(app, "root", roles=(Role.admin,))
    async with resources_of(app).session_factory() as db_session:
        await catalog_service.set_artist_owner(
            db_session=db_session, artist_id=mine, user_id=artist.id
        )
        await db_session.commit()
    tokens = {
        "artist": await user_token(app, "vega", "artist-stats"),
        "other artist": await user_token(app, "otto", "artist-stats"),
        "listener": await user_token(app, "lena", "user-read"),
        "analyst": await user_token(app, "ana", "analytics"),
        "admin": await user_token(app, "root", "admin"),
    }
    body = {"sql": "select count(*) from events"}
    async with asgi_client(app) as http:
        service = await service_token(app, http, scope="analytics")

        async def ask(method: str, path: str, token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            answer = await http.request(
                method, path, headers=headers, json=body if method == "POST" else None
            )
            if answer.status_code >= 400:
                assert answer.headers["content-type"] == "application/problem+json", path
            return answer.status_code

        for method, path in (*ANALYTICS_ROUTES, *_artist_routes(mine, mine_track)):
            assert await ask(method, path, None) == 401, path
            assert await ask(method, path, tokens["listener"]) == 403, path
        for method, path in ANALYTICS_ROUTES:
            assert await ask(method, path, tokens["artist"]) == 403, path
            assert await ask(method, path, tokens["analyst"]) == 200, path
            assert await ask(method, path, service) == 200, path
        for method, path in _artist_routes(mine, mine_track):
            assert await ask(method, path, tokens["artist"]) == 200, path
            assert await ask(method, path, tokens["analyst"]) == 403, path
            assert await ask(method, path, tokens["other artist"]) == 404, path
        for method, path in _artist_routes(theirs, theirs_track):
            assert await ask(method, path, tokens["artist"]) == 404, path
        for method, path in _artist_routes(uuid.uuid4(), uuid.uuid4()):
            assert await ask(method, path, tokens["artist"]) == 404, path

        royalties = "/v1/analytics/royalties?month=2026-11"
        assert await ask("GET", royalties, None) == 401
        assert await ask("GET", royalties, tokens["listener"]) == 403
        assert await ask("GET", royalties, tokens["artist"]) == 403
        assert await ask("GET", royalties, tokens["analyst"]) == 200
        assert await ask("GET", royalties, tokens["admin"]) == 200


async def test_bad_windows_and_parameters_are_422_problems(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=1, tracks_per_artist=1)
    track = playable.track_ids[0]
    artist = playable.artist_of[track]
    owner = await create_user(app, "vega", roles=(Role.artist,))
    await create_user(app, "ana", roles=(Role.analyst,))
    async with resources_of(app).session_factory() as db_session:
        await catalog_service.set_artist_owner(
            db_session=db_session, artist_id=artist, user_id=owner.id
        )
        await db_session.commit()
    artist_headers = {"Authorization": f"Bearer {await user_token(app, 'vega', 'artist-stats')}"}
    analyst_headers = {"Authorization": f"Bearer {await user_token(app, 'ana', 'analytics')}"}
    async with asgi_client(app) as http:
        for path in (f"/v1/artists/{artist}/stats", f"/v1/tracks/{track}/stats"):
            for params in (
                {"from": "2026-02-01", "to": "2026-01-01"},
                {"from": "2020-01-01", "to": "2026-01-01"},
                {"from": "2026-02-30"},
                {"to": "yesterday"},
                {"granularity": "hour"},
            ):
                answer = await http.get(path, params=params, headers=artist_headers)
                assert answer.status_code == 422, (path, params)
                assert answer.headers["content-type"] == "application/problem+json"
        for path, params in (
            ("/v1/analytics/engagement", {"from": "2026-03-01", "to": "2026-01-01"}),
            ("/v1/analytics/engagement", {"from": "2024-01-01", "to": "2026-01-01"}),
            ("/v1/analytics/retention", {"cohort": "fortnight"}),
            ("/v1/analytics/charts", {"country": "sweden"}),
            ("/v1/analytics/charts", {"date": "2026-13-01"}),
            ("/v1/analytics/royalties", {"month": "2026-13"}),
            ("/v1/analytics/royalties", {"month": "November"}),
            ("/v1/analytics/royalties", {}),
        ):
            answer = await http.get(path, params=params, headers=analyst_headers)
            assert answer.status_code == 422, (path, params)
            assert answer.headers["content-type"] == "application/problem+json"
        empty = await http.get(
            "/v1/analytics/royalties", params={"month": "2026-01"}, headers=analyst_headers
        )
        assert empty.json() == {"month": "2026-01", "total_streams": 0, "pool": None, "artists": []}

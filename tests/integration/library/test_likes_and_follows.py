"""Likes and follows from the outside, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.library import PROBLEM, Listener, SmallCatalog, add_releases, listener
from tests.fixtures.oauth import asgi_client

UNKNOWN = uuid.UUID("01890000-0000-7000-8000-000000000001")


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client."""
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
async def catalog(app: FastAPI) -> SmallCatalog:
    """Two artists, two albums, four tracks."""
    return await add_releases(
        app,
        [
            ("Daft Punk", "Discovery", ["One More Time", "Aerodynamic", "Digital Love"]),
            ("Björk", "Homogenic", ["Jóga"]),
        ],
    )


@pytest.fixture
async def ada(app: FastAPI) -> Listener:
    """A listener."""
    return await listener(app, "ada")


async def test_likes_are_idempotent_newest_first_and_paginated(
    http: httpx.AsyncClient, catalog: SmallCatalog, ada: Listener
) -> None:
    order = ["Digital Love", "One More Time", "Jóga", "Aerodynamic"]
    for title in order:
        response = await http.put(
            f"/v1/me/likes/tracks/{catalog.tracks[title]}", headers=ada.headers
        )
        assert response.status_code == 204
    again = await http.put(f"/v1/me/likes/tracks/{catalog.tracks['Jóga']}", headers=ada.headers)
    assert again.status_code == 204

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/v1/me/likes/tracks", params=params, headers=ada.headers)).json()
        seen += [item["track"]["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(order))

    ids = ",".join(str(catalog.tracks[t]) for t in ["Jóga", "Aerodynamic"]) + f",{uuid.uuid4()}"
    contains = await http.get(
        "/v1/me/likes/tracks/contains", params={"ids": ids}, headers=ada.headers
    )
    assert contains.json() == [True, True, False]

    for _ in range(2):
        removed = await http.delete(
            f"/v1/me/likes/tracks/{catalog.tracks['Jóga']}", headers=ada.headers
        )
        assert removed.status_code == 204
    contains = await http.get(
        "/v1/me/likes/tracks/contains", params={"ids": ids}, headers=ada.headers
    )
    assert contains.json() == [False, True, False]


async def test_album_likes_and_artist_follows(
    http: httpx.AsyncClient, catalog: SmallCatalog, ada: Listener
) -> None:
    assert (
        await http.put(f"/v1/me/likes/albums/{catalog.albums['Homogenic']}", headers=ada.headers)
    ).status_code == 204
    albums = (await http.get("/v1/me/likes/albums", headers=ada.headers)).json()
    assert [item["album"]["title"] for item in albums["items"]] == ["Homogenic"]

    for name in ["Björk", "Daft Punk"]:
        followed = await http.put(
            f"/v1/me/following/artists/{catalog.artists[name]}", headers=ada.headers
        )
        assert followed.status_code == 204
    artists = (await http.get("/v1/me/following/artists", headers=ada.headers)).json()
    assert [item["artist"]["name"] for item in artists["items"]] == ["Daft Punk", "Björk"]
    contains = await http.get(
        "/v1/me/following/artists/contains",
        params={"ids": str(catalog.artists["Björk"])},
        headers=ada.headers,
    )
    assert contains.json() == [True]


async def test_playlist_follows_respect_access(
    app: FastAPI, http: httpx.AsyncClient, catalog: SmallCatalog, ada: Listener
) -> None:
    grace = await listener(app, "grace")
    public = (
        await http.post(
            "/v1/me/playlists", json={"name": "Open", "public": True}, headers=grace.headers
        )
    ).json()
    private = (
        await http.post("/v1/me/playlists", json={"name": "Closed"}, headers=grace.headers)
    ).json()
    assert (
        await http.put(f"/v1/me/following/playlists/{public['id']}", headers=ada.headers)
    ).status_code == 204
    hidden = await http.put(f"/v1/me/following/playlists/{private['id']}", headers=ada.headers)
    assert hidden.status_code == 404
    followed = (await http.get("/v1/me/following/playlists", headers=ada.headers)).json()
    assert [item["playlist"]["name"] for item in followed["items"]] == ["Open"]
    mine = (await http.get("/v1/me/playlists", headers=ada.headers)).json()
    assert [p["name"] for p in mine["items"]] == ["Open"]
    # Made private: it drops out of the follower's lists.
    await http.patch(f"/v1/playlists/{public['id']}", json={"public": False}, headers=grace.headers)
    assert (await http.get("/v1/me/following/playlists", headers=ada.headers)).json()["items"] == []


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("PUT", f"/v1/me/likes/tracks/{UNKNOWN}", 404),
        ("PUT", f"/v1/me/likes/albums/{UNKNOWN}", 404),
        ("PUT", f"/v1/me/following/artists/{UNKNOWN}", 404),
        ("PUT", f"/v1/me/following/playlists/{UNKNOWN}", 404),
        ("PUT", "/v1/me/likes/tracks/not-a-uuid", 422),
        ("GET", "/v1/me/likes/tracks/contains?ids=", 422),
        ("GET", "/v1/me/likes/tracks/contains?ids=nope", 422),
        ("GET", "/v1/me/likes/tracks/contains?ids=" + ",".join([str(UNKNOWN)] * 51), 422),
        ("GET", "/v1/me/likes/tracks?cursor=garbage", 422),
        ("GET", "/v1/me/likes/tracks?limit=0", 422),
    ],
)
async def test_bad_library_requests_are_problems(
    http: httpx.AsyncClient, ada: Listener, method: str, url: str, status: int
) -> None:
    response = await http.request(method, url, headers=ada.headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_library_needs_a_user_token_with_the_scope(
    app: FastAPI, http: httpx.AsyncClient, client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    url = f"/v1/me/likes/tracks/{catalog.tracks['Jóga']}"
    assert (await http.put(url)).status_code == 401
    assert (await client.put(url)).status_code == 403
    reader = await listener(app, "reader", scope="library-read")
    assert (await http.put(url, headers=reader.headers)).status_code == 403
    assert (await http.get("/v1/me/likes/tracks", headers=reader.headers)).status_code == 200

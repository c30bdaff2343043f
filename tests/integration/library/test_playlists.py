"""Playlists from the outside, on SQLite and PostgreSQL: access, items, snapshots, covers."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import insert

from encore.db import new_id, utcnow
from encore.library.models import PlaylistItem
from encore.library.schemas import MAX_PLAYLIST_ITEMS
from tests.fixtures.library import PROBLEM, Listener, SmallCatalog, add_releases, listener
from tests.fixtures.oauth import asgi_client, resources_of


@dataclass
class World:
    """Two listeners and a few tracks."""

    alice: Listener
    bob: Listener
    catalog: SmallCatalog

    def track(self, title: str) -> str:
        """A track's id as a string."""
        return str(self.catalog.tracks[title])


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client; each request names its user's token."""
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
async def world(app: FastAPI) -> World:
    """alice and bob, and a catalog of five tracks A-E."""
    catalog = await add_releases(app, [("Daft Punk", "Discovery", ["A", "B", "C", "D", "E"])])
    return World(
        alice=await listener(app, "alice"), bob=await listener(app, "bob"), catalog=catalog
    )


async def _create(http: httpx.AsyncClient, owner: Listener, **fields: Any) -> dict[str, Any]:
    response = await http.post(
        "/v1/me/playlists", json={"name": "Road trip", **fields}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _tracks(http: httpx.AsyncClient, who: Listener, playlist_id: str) -> list[str]:
    titles: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        response = await http.get(
            f"/v1/playlists/{playlist_id}/tracks", params=params, headers=who.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        for expected, item in enumerate(page["items"], start=len(titles)):
            assert item["position"] == expected
        titles += [item["track"]["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return titles


async def _add(
    http: httpx.AsyncClient,
    who: Listener,
    playlist_id: str,
    track_ids: list[str],
    position: int | None = None,
    if_match: str | None = None,
) -> httpx.Response:
    headers = dict(who.headers)
    if if_match is not None:
        headers["If-Match"] = if_match
    body: dict[str, Any] = {"track_ids": track_ids}
    if position is not None:
        body["position"] = position
    return await http.post(f"/v1/playlists/{playlist_id}/tracks", json=body, headers=headers)


async def test_create_read_update_delete_with_snapshots(
    http: httpx.AsyncClient, world: World
) -> None:
    created = await _create(http, world.alice, description="<b>loud</b> & fast", public=True)
    assert created["owner_id"] == str(world.alice.user_id)
    assert created["description"] == "<b>loud</b> & fast"  # plain text, stored as given
    assert created["public"] is True and created["collaborative"] is False
    assert created["track_count"] == 0 and created["cover_url"] is None

    read = await http.get(f"/v1/playlists/{created['id']}", headers=world.alice.headers)
    assert read.status_code == 200
    assert read.headers["etag"] == f'"{created["snapshot_id"]}"'

    changed = await http.patch(
        f"/v1/playlists/{created['id']}",
        json={"name": "  Night drive ", "collaborative": True},
        headers={**world.alice.headers, "If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Night drive"
    assert changed.json()["collaborative"] is True
    assert changed.json()["snapshot_id"] != created["snapshot_id"]
    assert changed.headers["etag"] == f'"{changed.json()["snapshot_id"]}"'

    stale = await http.patch(
        f"/v1/playlists/{created['id']}",
        json={"name": "Lost edit"},
        headers={**world.alice.headers, "If-Match": read.headers["etag"]},
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == PROBLEM
    assert stale.json()["snapshot_id"] == changed.json()["snapshot_id"]

    mine = await http.get("/v1/me/playlists", headers=world.alice.headers)
    assert [p["id"] for p in mine.json()["items"]] == [created["id"]]

    deleted = await http.delete(f"/v1/playlists/{created['id']}", headers=world.alice.headers)
    assert deleted.status_code == 204
    gone = await http.get(f"/v1/playlists/{created['id']}", headers=world.alice.headers)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "   "},
        {"name": "ok", "description": "d" * 1001},
        {"name": "nul\x00byte"},
        {"name": "ok", "owner_id": str(uuid.uuid4())},
        {"name": "ok", "snapshot_id": "v99"},
        {"name": "ok", "id": str(uuid.uuid4())},
        {"name": "ok", "track_count": 5},
        {"name": 5},
    ],
)
async def test_bad_playlist_bodies_are_problems(
    http: httpx.AsyncClient, world: World, body: dict[str, Any]
) -> None:
    response = await http.post("/v1/me/playlists", json=body, headers=world.alice.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_a_patch_cannot_change_the_owner(http: httpx.AsyncClient, world: World) -> None:
    created = await _create(http, world.alice)
    response = await http.patch(
        f"/v1/playlists/{created['id']}",
        json={"owner_id": str(world.bob.user_id)},
        headers=world.alice.headers,
    )
    assert response.status_code == 422
    read = await http.get(f"/v1/playlists/{created['id']}", headers=world.alice.headers)
    assert read.json()["owner_id"] == str(world.alice.user_id)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 30, 60)).save(out, format="PNG")
    return out.getvalue()


def _routes(playlist_id: str, track_id: str, user_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    # Every playlist route, with a body that would be valid for someone allowed to use it.
    base = f"/v1/playlists/{playlist_id}"
    return [
        ("GET", base, {}),
        ("PATCH", base, {"json": {"name": "Mine now"}}),
        ("DELETE", base, {}),
        ("GET", f"{base}/tracks", {}),
        ("POST", f"{base}/tracks", {"json": {"track_ids": [track_id]}}),
        ("DELETE", f"{base}/tracks", {"json": {"items": [{"position": 0, "track_id": track_id}]}}),
        ("PUT", f"{base}/tracks", {"json": {"range_start": 0, "insert_before": 2}}),
        ("PUT", f"{base}/cover", {"content": _png(), "headers": {"Content-Type": "image/png"}}),
        ("GET", f"{base}/cover", {}),
        ("GET", f"{base}/collaborators", {}),
        ("POST", f"{base}/collaborators", {"json": {"username": "alice"}}),
        ("DELETE", f"{base}/collaborators/{user_id}", {}),
        ("PUT", f"/v1/me/following/playlists/{playlist_id}", {}),
    ]


async def _playlist_with_cover_and_tracks(
    http: httpx.AsyncClient, world: World, *, public: bool
) -> str:
    created = await _create(http, world.alice, public=public)
    added = await _add(http, world.alice, created["id"], [world.track("A"), world.track("B")])
    assert added.status_code == 201
    cover = await http.put(
        f"/v1/playlists/{created['id']}/cover",
        content=_png(),
        headers={**world.alice.headers, "Content-Type": "image/png"},
    )
    assert cover.status_code == 200, cover.text
    return str(created["id"])


async def test_another_users_private_playlist_is_404_on_every_route(
    http: httpx.AsyncClient, world: World
) -> None:
    playlist_id = await _playlist_with_cover_and_tracks(http, world, public=False)
    for method, url, options in _routes(playlist_id, world.track("A"), str(world.bob.user_id)):
        extra_headers = options.pop("headers", {})
        response = await http.request(
            method, url, headers={**world.bob.headers, **extra_headers}, **options
        )
        assert response.status_code == 404, (method, url, response.text)
        assert response.headers["content-type"] == PROBLEM
    # Nothing changed for the owner.
    assert await _tracks(http, world.alice, playlist_id) == ["A", "B"]
    read = await http.get(f"/v1/playlists/{playlist_id}", headers=world.alice.headers)
    assert read.json()["name"] == "Road trip"


async def test_others_read_a_public_playlist_but_may_not_change_it(
    http: httpx.AsyncClient, world: World
) -> None:
    playlist_id = await _playlist_with_cover_and_tracks(http, world, public=True)
    reads = {"GET"}
    for method, url, options in _routes(playlist_id, world.track("A"), str(world.alice.user_id)):
        extra_headers = options.pop("headers", {})
        response = await http.request(
            method, url, headers={**world.bob.headers, **extra_headers}, **options
        )
        if url.endswith("/collaborators") and method == "GET":
            expected = 403  # only the owner and collaborators see who collaborates
        elif method in reads or url.startswith("/v1/me/following"):
            expected = 200 if method in reads else 204
        else:
            expected = 403
        assert response.status_code == expected, (method, url, response.text)
    assert await _tracks(http, world.alice, playlist_id) == ["A", "B"]


async def test_a_service_token_reads_public_playlists_only(
    http: httpx.AsyncClient, client: httpx.AsyncClient, world: World
) -> None:
    public_id = await _playlist_with_cover_and_tracks(http, world, public=True)
    private = await _create(http, world.alice)
    assert (await client.get(f"/v1/playlists/{public_id}")).status_code == 200
    assert (await client.get(f"/v1/playlists/{public_id}/tracks")).status_code == 200
    assert (await client.get(f"/v1/playlists/{private['id']}")).status_code == 404
    changed = await client.post(
        f"/v1/playlists/{public_id}/tracks", json={"track_ids": [world.track("C")]}
    )
    assert changed.status_code == 403


async def test_invited_collaborators_edit_tracks_while_collaborative(
    http: httpx.AsyncClient, world: World
) -> None:
    created = await _create(http, world.alice, collaborative=True)
    playlist_id = created["id"]
    invited = await http.post(
        f"/v1/playlists/{playlist_id}/collaborators",
        json={"username": "bob"},
        headers=world.alice.headers,
    )
    assert invited.status_code == 201, invited.text
    assert invited.json()["username"] == "bob"

    assert (await _add(http, world.bob, playlist_id, [world.track("A")])).status_code == 201
    assert (await _add(http, world.alice, playlist_id, [world.track("B")])).status_code == 201
    items = (
        await http.get(f"/v1/playlists/{playlist_id}/tracks", headers=world.alice.headers)
    ).json()["items"]
    assert [item["added_by"] for item in items] == [
        str(world.bob.user_id),
        str(world.alice.user_id),
    ]
    moved = await http.put(
        f"/v1/playlists/{playlist_id}/tracks",
        json={"range_start": 1, "insert_before": 0},
        headers=world.bob.headers,
    )
    assert moved.status_code == 200
    assert await _tracks(http, world.bob, playlist_id) == ["B", "A"]
    # Collaborators edit tracks, not the playlist itself.
    renamed = await http.patch(
        f"/v1/playlists/{playlist_id}", json={"name": "bob's"}, headers=world.bob.headers
    )
    assert renamed.status_code == 403
    listed = await http.get("/v1/me/playlists", headers=world.bob.headers)
    assert [p["id"] for p in listed.json()["items"]] == [playlist_id]

    # No longer collaborative: the invitation stays, the editing stops.
    await http.patch(
        f"/v1/playlists/{playlist_id}", json={"collaborative": False}, headers=world.alice.headers
    )
    refused = await _add(http, world.bob, playlist_id, [world.track("C")])
    assert refused.status_code == 403
    assert (
        await http.get(f"/v1/playlists/{playlist_id}", headers=world.bob.headers)
    ).status_code == 200

    # Bob leaves: the private playlist disappears for him.
    left = await http.delete(
        f"/v1/playlists/{playlist_id}/collaborators/{world.bob.user_id}", headers=world.bob.headers
    )
    assert left.status_code == 204
    assert (
        await http.get(f"/v1/playlists/{playlist_id}", headers=world.bob.headers)
    ).status_code == 404


async def test_a_playlist_may_hold_a_track_twice_and_removal_names_position_and_track(
    http: httpx.AsyncClient, world: World
) -> None:
    created = await _create(http, world.alice)
    playlist_id = created["id"]
    a, b = world.track("A"), world.track("B")
    assert (await _add(http, world.alice, playlist_id, [a, b, a])).status_code == 201
    assert await _tracks(http, world.alice, playlist_id) == ["A", "B", "A"]

    mismatch = await http.request(
        "DELETE",
        f"/v1/playlists/{playlist_id}/tracks",
        json={"items": [{"position": 1, "track_id": a}]},
        headers=world.alice.headers,
    )
    assert mismatch.status_code == 409
    assert mismatch.headers["content-type"] == PROBLEM
    assert await _tracks(http, world.alice, playlist_id) == ["A", "B", "A"]

    removed = await http.request(
        "DELETE",
        f"/v1/playlists/{playlist_id}/tracks",
        json={"items": [{"position": 2, "track_id": a}]},
        headers=world.alice.headers,
    )
    assert removed.status_code == 200
    assert removed.json()["snapshot_id"] == removed.headers["etag"].strip('"')
    assert await _tracks(http, world.alice, playlist_id) == ["A", "B"]

    inserted = await _add(http, world.alice, playlist_id, [world.track("C"), a], position=1)
    assert inserted.status_code == 201
    assert await _tracks(http, world.alice, playlist_id) == ["A", "C", "A", "B"]
    both = await http.request(
        "DELETE",
        f"/v1/playlists/{playlist_id}/tracks",
        json={"items": [{"position": 0, "track_id": a}, {"position": 2, "track_id": a}]},
        headers=world.alice.headers,
    )
    assert both.status_code == 200
    assert await _tracks(http, world.alice, playlist_id) == ["C", "B"]
    read = await http.get(f"/v1/playlists/{playlist_id}", headers=world.alice.headers)
    assert read.json()["track_count"] == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"track_ids": []}, 422),
        ({"track_ids": ["not-a-uuid"]}, 422),
        ({"track_ids": [str(uuid.uuid4())]}, 422),
        ({"track_ids": None}, 422),
        ({"position": 9}, 422),
        ({"position": -1}, 422),
        ({"added_by": "someone"}, 422),
    ],
)
async def test_bad_additions_are_problems(
    http: httpx.AsyncClient, world: World, body: dict[str, Any], status: int
) -> None:
    created = await _create(http, world.alice)
    payload = {"track_ids": [world.track("A")], **body}
    response = await http.post(
        f"/v1/playlists/{created['id']}/tracks", json=payload, headers=world.alice.headers
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "body",
    [
        {"range_start": 5, "insert_before": 0},
        {"range_start": 0, "range_length": 6, "insert_before": 0},
        {"range_start": 0, "insert_before": 6},
        {"range_start": 0, "range_length": 0, "insert_before": 2},
        {"range_start": -1, "insert_before": 2},
        {"insert_before": 2},
    ],
)
async def test_bad_reorders_are_problems(
    http: httpx.AsyncClient, world: World, body: dict[str, Any]
) -> None:
    created = await _create(http, world.alice)
    await _add(http, world.alice, created["id"], [world.track(t) for t in "ABCDE"])
    response = await http.put(
        f"/v1/playlists/{created['id']}/tracks", json=body, headers=world.alice.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_a_playlist_holds_at_most_ten_thousand_tracks(
    app: FastAPI, http: httpx.AsyncClient, world: World
) -> None:
    created = await _create(http, world.alice)
    async with resources_of(app).session_factory() as db_session:
        now = utcnow()
        await db_session.execute(
            insert(PlaylistItem),
            [
                {
                    "id": new_id(),
                    "playlist_id": uuid.UUID(created["id"]),
                    "position": position,
                    "track_id": world.catalog.tracks["A"],
                    "added_by_user_id": world.alice.user_id,
                    "added_at": now,
                }
                for position in range(MAX_PLAYLIST_ITEMS - 1)
            ],
        )
        await db_session.commit()
    over = await _add(http, world.alice, created["id"], [world.track("B"), world.track("C")])
    assert over.status_code == 413
    assert over.headers["content-type"] == PROBLEM
    last = await _add(http, world.alice, created["id"], [world.track("B")])
    assert last.status_code == 201
    full = await _add(http, world.alice, created["id"], [world.track("C")])
    assert full.status_code == 413


async def test_concurrent_additions_without_if_match_all_land_in_order(
    http: httpx.AsyncClient, world: World
) -> None:
    created = await _create(http, world.alice)
    titles = ["A", "B", "C", "D", "E"] * 2
    responses = await asyncio.gather(
        *(
            _add(http, world.alice, created["id"], [world.track(title)], position=0)
            for title in titles
        )
    )
    assert [r.status_code for r in responses] == [201] * len(titles)
    snapshots = {r.json()["snapshot_id"] for r in responses}
    assert len(snapshots) == len(titles)  # each edit got its own snapshot
    listed = await _tracks(http, world.alice, created["id"])
    assert sorted(listed) == sorted(titles)
    read = await http.get(f"/v1/playlists/{created['id']}", headers=world.alice.headers)
    assert read.json()["track_count"] == len(titles)


async def test_concurrent_edits_with_the_same_if_match_let_exactly_one_through(
    http: httpx.AsyncClient, world: World
) -> None:
    created = await _create(http, world.alice)
    await _add(http, world.alice, created["id"], [world.track(t) for t in "ABCDE"])
    etag = (await http.get(f"/v1/playlists/{created['id']}", headers=world.alice.headers)).headers[
        "etag"
    ]
    responses = await asyncio.gather(
        *(
            _add(http, world.alice, created["id"], [world.track("A")], position=2, if_match=etag)
            for _ in range(6)
        ),
        http.put(
            f"/v1/playlists/{created['id']}/tracks",
            json={"range_start": 0, "insert_before": 5},
            headers={**world.alice.headers, "If-Match": etag},
        ),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(412) == len(responses) - 1, statuses
    assert all(r.headers["content-type"] == PROBLEM for r in responses if r.status_code == 412)
    listed = await _tracks(http, world.alice, created["id"])
    assert len(listed) in (5, 6)


async def test_cover_is_re_encoded_and_served(http: httpx.AsyncClient, world: World) -> None:
    created = await _create(http, world.alice, public=True)
    response = await http.put(
        f"/v1/playlists/{created['id']}/cover",
        content=_png(),
        headers={**world.alice.headers, "Content-Type": "image/png"},
    )
    assert response.status_code == 200, response.text
    cover_url = response.json()["cover_url"]
    assert cover_url.startswith(f"/v1/playlists/{created['id']}/cover?v=")
    image = await http.get(cover_url, headers=world.bob.headers)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    small = await http.get(cover_url + "&size=64", headers=world.bob.headers)
    assert Image.open(io.BytesIO(small.content)).size == (64, 48)

    for content in (b"", b"GIF89a not really", b"<svg></svg>"):
        bad = await http.put(
            f"/v1/playlists/{created['id']}/cover",
            content=content,
            headers={**world.alice.headers, "Content-Type": "image/png"},
        )
        assert bad.status_code == 422, bad.text
        assert bad.headers["content-type"] == PROBLEM
    huge = await http.put(
        f"/v1/playlists/{created['id']}/cover",
        content=b"\x89PNG" + b"\x00" * (11 * 1024 * 1024),
        headers={**world.alice.headers, "Content-Type": "image/png"},
    )
    assert huge.status_code == 413

"""Reordering against a reference list model (hypothesis), through the API on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.library import Listener, add_releases, listener
from tests.fixtures.oauth import asgi_client

TITLES = [f"Song {letter}" for letter in "ABCDEFG"]


def reference_reorder(items: list[str], start: int, length: int, before: int) -> list[str]:
    """Spotify's reorder, the plain way: take the range out, put it back before `before`."""
    if start <= before <= start + length:
        return list(items)
    block = items[start : start + length]
    kept = [item for index, item in enumerate(items) if not start <= index < start + length]
    target = before if before < start else before - length
    return kept[:target] + block + kept[target:]


@st.composite
def _moves(draw: st.DrawFn, size: int) -> list[tuple[int, int, int]]:
    moves = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        start = draw(st.integers(min_value=0, max_value=size - 1))
        length = draw(st.integers(min_value=1, max_value=size - start))
        before = draw(st.integers(min_value=0, max_value=size))
        moves.append((start, length, before))
    return moves


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client."""
    async with asgi_client(app) as client:
        yield client


async def _titles(http: httpx.AsyncClient, owner: Listener, playlist_id: str) -> list[str]:
    response = await http.get(
        f"/v1/playlists/{playlist_id}/tracks", params={"limit": 100}, headers=owner.headers
    )
    items: list[dict[str, Any]] = response.json()["items"]
    assert [item["position"] for item in items] == list(range(len(items)))
    return [item["track"]["title"] for item in items]


async def test_reorder_matches_the_reference_model(app: FastAPI, http: httpx.AsyncClient) -> None:
    catalog = await add_releases(app, [("The Testers", "Orderings", TITLES)])
    owner = await listener(app, "orderer")
    created = await http.post("/v1/me/playlists", json={"name": "Shuffle"}, headers=owner.headers)
    playlist_id = created.json()["id"]
    # A track twice, so moves of equal neighbours are exercised too.
    track_ids = [str(catalog.tracks[title]) for title in [*TITLES, TITLES[0]]]
    added = await http.post(
        f"/v1/playlists/{playlist_id}/tracks", json={"track_ids": track_ids}, headers=owner.headers
    )
    assert added.status_code == 201
    model = [*TITLES, TITLES[0]]
    loop = asyncio.get_running_loop()

    def run(coroutine: Any) -> Any:
        # Hypothesis drives examples synchronously from a worker thread; each API call runs on
        # the test's event loop.
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(moves=_moves(len(model)))
    def check(moves: list[tuple[int, int, int]]) -> None:
        nonlocal model
        for start, length, before in moves:
            response = run(
                http.put(
                    f"/v1/playlists/{playlist_id}/tracks",
                    json={"range_start": start, "range_length": length, "insert_before": before},
                    headers=owner.headers,
                )
            )
            assert response.status_code == 200, response.text
            model = reference_reorder(model, start, length, before)
            assert run(_titles(http, owner, playlist_id)) == model, (start, length, before)

    await asyncio.to_thread(check)

"""Playback and signed media serving, from the outside: the API, Range and caching rules,
and real players (FFmpeg's HLS demuxer and progressive reader) over a loopback server."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from encore.app import create_app
from encore.auth.models import Role
from encore.catalog import service as catalog_service
from encore.config import Settings
from encore.media.synthesis import Tone, synthesize_audio
from tests.fixtures.jobs import run_queued_jobs
from tests.fixtures.oauth import asgi_client, create_user, resources_of, service_token, user_token

PROBLEM = "application/problem+json"
TRACK_SECONDS = 14.0


@dataclass
class Played:
    """A ready track and a listener allowed to stream it."""

    track_id: str
    listener: dict[str, str]
    artist: dict[str, str]


async def _ready_track(app: FastAPI, tmp_path: Path, *, process: bool = True) -> Played:
    user = await create_user(app, "nova", roles=(Role.artist,))
    async with resources_of(app).session_factory() as db_session:
        artist = await catalog_service.get_or_create_artist(db_session=db_session, name="Nova")
        await catalog_service.assign_artist_owner(
            db_session=db_session, artist_names=["Nova"], user_id=user.id
        )
        await db_session.commit()
    artist_headers = {"Authorization": f"Bearer {await user_token(app, 'nova', 'upload')}"}
    source = synthesize_audio(tmp_path / "song.flac", Tone(seconds=TRACK_SECONDS))
    async with asgi_client(app) as http:
        accepted = await http.post(
            "/v1/uploads",
            headers=artist_headers,
            data={"title": "Song", "artist_id": str(artist.id), "album_title": "Album"},
            files={"file": ("song.flac", source.read_bytes())},
        )
    assert accepted.status_code == 202, accepted.text
    if process:
        await run_queued_jobs(app)
    await create_user(app, "lee")
    listener = {"Authorization": f"Bearer {await user_token(app, 'lee', 'streaming')}"}
    return Played(accepted.json()["track_id"], listener, artist_headers)


async def _playback_of(http: httpx.AsyncClient, played: Played) -> dict[str, Any]:
    """The listener's playback answer for the track (its URLs and renditions)."""
    answer = await http.get(f"/v1/tracks/{played.track_id}/playback", headers=played.listener)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path


async def test_playback_lists_signed_urls_for_the_whole_ladder(
    app: FastAPI, anonymous_client: httpx.AsyncClient, tmp_path: Path, settings: Settings
) -> None:
    played = await _ready_track(app, tmp_path)
    http = anonymous_client

    answer = await http.get(f"/v1/tracks/{played.track_id}/playback", headers=played.listener)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["track_id"] == played.track_id
    assert abs(body["duration_ms"] - TRACK_SECONDS * 1000) < 200
    assert body["hls"]["url"].startswith(f"{settings.public_url}/media/t/")
    assert body["hls"]["url"].endswith("/master.m3u8")
    assert [p["bitrate"] for p in body["progressive"]] == [128_000, 256_000, 64_000]
    assert body["normalization"]["track_gain_db"] is not None
    assert answer.headers["cache-control"] == "private, no-store"

    high = await http.get(
        f"/v1/tracks/{played.track_id}/playback?quality=high", headers=played.listener
    )
    saving = await http.get(
        f"/v1/tracks/{played.track_id}/playback",
        headers={**played.listener, "Save-Data": "on"},
    )
    assert high.json()["progressive"][0]["bitrate"] == 256_000
    assert saving.json()["progressive"][0]["bitrate"] == 64_000

    master = await http.get(_path(body["hls"]["url"]))
    assert master.status_code == 200
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert master.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "aac_128/index.m3u8" in master.text
    peaks = await http.get(_path(body["waveform_url"]))
    assert peaks.json()["peaks"]


async def test_playback_rules(
    app: FastAPI, anonymous_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    played = await _ready_track(app, tmp_path, process=False)
    http = anonymous_client

    processing = await http.get(f"/v1/tracks/{played.track_id}/playback", headers=played.listener)
    unknown = await http.get(f"/v1/tracks/{uuid.uuid4()}/playback", headers=played.listener)
    bad_quality = await http.get(
        f"/v1/tracks/{played.track_id}/playback?quality=ultra", headers=played.listener
    )
    service = {"Authorization": f"Bearer {await service_token(app, http)}"}
    as_service = await http.get(f"/v1/tracks/{played.track_id}/playback", headers=service)
    no_scope = await http.get(f"/v1/tracks/{played.track_id}/playback", headers=played.artist)

    assert processing.status_code == 409 and processing.headers["content-type"] == PROBLEM
    assert unknown.status_code == 404
    assert bad_quality.status_code == 422
    assert as_service.status_code == 403
    assert no_scope.status_code == 403


async def test_media_serving_honours_ranges_conditions_and_tokens(
    app: FastAPI, anonymous_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    played = await _ready_track(app, tmp_path)
    http = anonymous_client
    body = await _playback_of(http, played)
    progressive = _path(body["progressive"][0]["url"])

    whole = await http.get(progressive)
    part = await http.get(progressive, headers={"Range": "bytes=100-199"})
    tail = await http.get(progressive, headers={"Range": "bytes=-50"})
    beyond = await http.get(progressive, headers={"Range": f"bytes={len(whole.content) + 10}-"})
    again = await http.get(progressive, headers={"If-None-Match": whole.headers["etag"]})
    head = await http.head(progressive)
    post = await http.post(progressive)

    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert "last-modified" in whole.headers
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert tail.status_code == 206 and tail.content == whole.content[-50:]
    assert beyond.status_code == 416
    assert again.status_code == 304
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(whole.content)
    assert post.status_code == 405

    token = progressive.split("/")[3]
    forged = progressive.replace(token, token[:-4] + "AAAA")
    assert (await http.get(forged)).status_code == 403
    other_track = progressive.replace(played.track_id, str(uuid.uuid4()))
    assert (await http.get(other_track)).status_code == 403
    encoded = progressive.rsplit("/", 2)[0] + "/%2e%2e/%2e%2e/secret.key"
    assert (await http.get(encoded)).status_code == 404
    prefix = "/".join(progressive.split("/")[4:7])
    signer = resources_of(app).media_signer
    expired = signer.url(
        prefix=prefix, user_id=uuid.uuid4(), expires=int(time.time()) - 5, file="aac_128/audio.m4a"
    )
    assert (await http.get(expired)).status_code == 410
    assert (await http.get("/media/t/garbage")).status_code == 404


async def test_media_answered_from_memory_keeps_every_rule(
    app: FastAPI, anonymous_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Repeated plain GETs are answered from the in-memory cache of verified tokens and
    # files; what they get must be what the full media handler gives, rule for rule.
    played = await _ready_track(app, tmp_path)
    http = anonymous_client
    body = await _playback_of(http, played)
    master = _path(body["hls"]["url"])
    segment = master.rsplit("/", 1)[0] + "/aac_64/segment_00001.m4s"
    route = 'encore_http_requests_total{method="GET",route="/media/t/{token}/{file}",status="200"}'

    def served(metrics: str) -> float:
        line = next((row for row in metrics.splitlines() if row.startswith(route)), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = served((await http.get("/metrics")).text)
    answers = [await http.get(segment) for _ in range(5)]
    ranged = await http.get(segment, headers={"Range": "bytes=0-"})
    after = served((await http.get("/metrics")).text)

    key = "/".join(segment.split("/")[4:])
    on_disk = resources_of(app).store.local_path(key)
    assert on_disk is not None
    assert all(answer.status_code == 200 for answer in answers)
    assert all(answer.content == on_disk.read_bytes() for answer in answers)
    assert ranged.status_code == 206 and ranged.content == answers[0].content
    for name in ("etag", "last-modified", "cache-control", "content-type", "accept-ranges"):
        assert {answer.headers[name] for answer in answers} == {ranged.headers[name]}, name
    assert answers[-1].headers["content-length"] == str(len(answers[0].content))
    assert answers[-1].headers["content-type"] == "audio/mp4"
    assert after - before == 5  # every answer counted, the 206 under its own status
    head = await http.head(segment)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(answers[0].content))

    # Names no rendition can have, under a valid token: 404, never a server error.
    rendition = segment.rsplit("/", 1)[0]
    for odd in ("a:b", "it's(1)", "x*y;z", "!"):
        for method in ("GET", "HEAD"):
            refused = await http.request(method, f"{rendition}/{odd}")
            assert refused.status_code == 404, (odd, method, refused.status_code)

    # A token remembered as valid stops working when it expires, and a tampered one never does.
    token = segment.split("/")[3]
    assert (await http.get(segment.replace(token, token[:-4] + "AAAA"))).status_code == 403
    prefix = "/".join(segment.split("/")[4:7])
    short_lived = resources_of(app).media_signer.url(
        prefix=prefix, user_id=uuid.uuid4(), expires=int(time.time()) + 2, file="aac_64/index.m3u8"
    )
    assert (await http.get(short_lived)).status_code == 200
    await asyncio.sleep(max(0.0, int(short_lived.split("/")[3].split(".")[1]) - time.time()) + 0.2)
    assert (await http.get(short_lived)).status_code == 410

    # A file removed from the store stops being served from memory within a second.
    on_disk.unlink()
    await asyncio.sleep(1.1)
    gone = await http.get(segment)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == PROBLEM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def live_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    """The app served by uvicorn on a loopback port (public URL set to it)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    application = create_app(settings.model_copy(update={"public_url": base}))
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            await asyncio.sleep(0.05)
    try:
        yield application, base
    finally:
        server.should_exit = True
        await task


_PLAYER_OPTIONS = {"protocol_whitelist": "http,tcp", "allowed_extensions": "ALL"}


def _decoded_seconds(url: str) -> float:
    with av.open(url, options=_PLAYER_OPTIONS, timeout=10) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / (stream.codec_context.sample_rate or 1)


def _seek_and_decode(url: str, seconds: float) -> float:
    with av.open(url, options=_PLAYER_OPTIONS, timeout=10) as container:
        stream = container.streams.audio[0]
        assert stream.time_base is not None
        container.seek(int(seconds / stream.time_base), stream=stream)
        frame = next(container.decode(stream))
        assert frame.time is not None
        return float(frame.time)


async def test_real_players_play_the_signed_urls_over_loopback(
    live_app: tuple[FastAPI, str], tmp_path: Path
) -> None:
    application, base = live_app
    played = await _ready_track(application, tmp_path)
    async with httpx.AsyncClient(base_url=base) as http:
        body = await _playback_of(http, played)

    hls_seconds = await asyncio.to_thread(_decoded_seconds, body["hls"]["url"])
    assert abs(hls_seconds - TRACK_SECONDS) < 0.5
    for link in body["progressive"]:
        seconds = await asyncio.to_thread(_decoded_seconds, link["url"])
        assert abs(seconds - TRACK_SECONDS) < 0.5
        landed = await asyncio.to_thread(_seek_and_decode, link["url"], TRACK_SECONDS / 2)
        assert abs(landed - TRACK_SECONDS / 2) < 1.0

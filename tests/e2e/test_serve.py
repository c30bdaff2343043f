"""`encore demo` then `encore serve`, as `make run` does, checked over real loopback HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from sqlalchemy.engine import make_url

ENCORE = [sys.executable, "-m", "encore.cli"]
PLAYER_OPTIONS = {"protocol_whitelist": "http,tcp", "allowed_extensions": "ALL"}
DEMO_USERNAMES = ("demo-listener", "demo-artist", "demo-analyst")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def environment(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Process environment of an Encore on this test's database, in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")}
    env.update(
        ENCORE_DATABASE_URL=database_url,
        ENCORE_SECRET_KEY_FILE=str(tmp_path / "secret.key"),
        ENCORE_STORAGE_URL=f"file://{tmp_path / 'media'}",
        ENCORE_HOST="127.0.0.1",
        ENCORE_PORT=str(_free_port()),
        ENCORE_LOG_LEVEL="info",
        ENCORE_IMPORT_WORKERS="2",
    )
    return env


def run_encore(
    environment: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run an `encore` command to its end, as someone at a terminal would."""
    return subprocess.run(
        [*ENCORE, *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def demo_credentials_file(environment: dict[str, str], cwd: Path) -> Path:
    """Where `encore demo` keeps the demo passwords: beside the SQLite file, else in ./var."""
    url = make_url(environment["ENCORE_DATABASE_URL"])
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).parent / "demo-credentials.txt"
    return cwd / "var" / "demo-credentials.txt"


@pytest.fixture(params=["uvicorn", "granian"])
def served(
    request: pytest.FixtureRequest, environment: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    """Base URL of `encore serve` (on each HTTP server it offers) running after
    `encore demo --if-empty`."""
    environment["ENCORE_HTTP_SERVER"] = request.param
    environment["ENCORE_PUBLIC_URL"] = f"http://127.0.0.1:{environment['ENCORE_PORT']}"
    demo = run_encore(environment, tmp_path, "demo", "--if-empty")
    assert demo.returncode == 0, demo.stderr
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [*ENCORE, "serve"], env=environment, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{environment['ENCORE_PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("encore serve did not start:\n" + (tmp_path / "serve.log").read_text())
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        # A clean stop within the grace period: exit status 0, or the signal passed on.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM), (
            tmp_path / "serve.log"
        ).read_text()[-3000:]
        log.close()


def service_token(base: str, environment: dict[str, str], cwd: Path) -> str:
    """An access token got the real way: `encore clients create`, then POST /oauth/token."""
    created = run_encore(
        environment, cwd, "clients", "create", "e2e", "--confidential",
        "--grant", "client_credentials", "--scope", "analytics",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    printed = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)
    response = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(printed["client_id"], printed["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"].lower() == "bearer"
    token: str = response.json()["access_token"]
    return token


def test_demo_catalog_is_served_over_http(
    served: str, environment: dict[str, str], tmp_path: Path
) -> None:
    with httpx.Client(base_url=served, timeout=10) as http:
        assert http.get("/readyz").json()["status"] == "ready"

        anonymous = http.get("/v1/browse/new-releases")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.headers["content-type"] == "application/problem+json"

        http.headers["Authorization"] = f"Bearer {service_token(served, environment, tmp_path)}"
        releases = http.get("/v1/browse/new-releases").json()["items"]
        assert len(releases) >= 3
        album = http.get(f"/v1/albums/{releases[0]['id']}").json()
        assert album["tracks"], album
        assert all(t["duration_ms"] > 0 for t in album["tracks"])

        with_art = [a for a in releases if a["artwork_url"]]
        assert with_art, "the demo albums have cover art"
        image = http.get(with_art[0]["artwork_url"])
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        assert image.content.startswith(b"\xff\xd8\xff")

        missing = http.get("/v1/tracks/00000000-0000-7000-8000-000000000000")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

    log_lines = (tmp_path / "serve.log").read_text().splitlines()
    assert any('"event": "request"' in line and '"request_id"' in line for line in log_lines)


def listener_token(environment: dict[str, str], username: str) -> str:
    """A streaming access token of a demo account, issued with the server's own keys."""
    from sqlalchemy import select

    from encore.auth.models import User
    from encore.auth.runtime import AuthRuntime
    from encore.auth.secrets import load_master_key
    from encore.config import load_settings
    from encore.db import create_engine, create_session_factory

    settings = load_settings(
        **{
            name.removeprefix("ENCORE_").lower(): value
            for name, value in environment.items()
            if name.startswith("ENCORE_")
        }
    )

    async def issue() -> str:
        engine = create_engine(settings)
        try:
            session_factory = create_session_factory(engine)
            async with session_factory() as db_session:
                user = (
                    await db_session.scalars(select(User).where(User.username == username))
                ).one()
            runtime = await AuthRuntime.start(settings, session_factory, load_master_key(settings))
            issuer = await runtime.issuer()
            token: str = issuer.access_token(
                subject=str(user.id),
                client_id="encore-web",
                scopes={"streaming"},
                roles={"listener"},
                session_id=None,
            )[0]
            return token
        finally:
            await engine.dispose()

    return asyncio.run(issue())


def test_tracks_play_over_http(served: str, environment: dict[str, str], tmp_path: Path) -> None:
    # Whatever the server: playlists and segments (small, from memory), a large progressive
    # file (sent by path where the server can) whole and by range, and a real player.
    from encore.media.synthesis import TagSpec, Tone, write_tagged_track

    library = tmp_path / "library"
    write_tagged_track(
        library / "long.flac",
        Tone(seconds=24.0),
        TagSpec(title="Longplay Serenade", artists=("Loopback Band",), album="Loopback"),
    )
    imported = run_encore(environment, tmp_path, "import", str(library))
    assert imported.returncode == 0, imported.stderr
    token = listener_token(environment, "demo-listener")
    with httpx.Client(base_url=served, timeout=30) as http:
        http.headers["Authorization"] = f"Bearer {token}"
        found = http.get("/v1/search", params={"q": "Longplay Serenade", "type": "track"})
        assert found.status_code == 200, found.text
        track_id = found.json()["tracks"]["items"][0]["id"]
        playback = http.get(f"/v1/tracks/{track_id}/playback")
        assert playback.status_code == 200, playback.text
        body = playback.json()
        del http.headers["Authorization"]  # media URLs carry their own token

        largest = max(body["progressive"], key=lambda rendition: rendition["bitrate"])
        whole = http.get(largest["url"])
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/mp4"
        assert int(whole.headers["content-length"]) == len(whole.content) > 512 * 1024
        middle = len(whole.content) // 2
        part = http.get(largest["url"], headers={"Range": f"bytes={middle}-{middle + 999}"})
        assert part.status_code == 206 and part.content == whole.content[middle : middle + 1000]

        master = http.get(body["hls"]["url"])
        assert master.status_code == 200
        assert master.headers["content-type"] == "application/vnd.apple.mpegurl"

    for url in (body["hls"]["url"], largest["url"]):
        with av.open(url, options=PLAYER_OPTIONS, timeout=10) as container:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
        seconds = samples / (stream.codec_context.sample_rate or 1)
        assert abs(seconds * 1000 - body["duration_ms"]) < 1000, url

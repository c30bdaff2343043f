"""`encore demo` then `encore serve`, as `make run` does, checked over real loopback HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ENCORE = [sys.executable, "-m", "encore.cli"]


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
        ENCORE_STORAGE_URL=f"file://{tmp_path / 'media'}",
        ENCORE_HOST="127.0.0.1",
        ENCORE_PORT=str(_free_port()),
        ENCORE_LOG_LEVEL="info",
        ENCORE_IMPORT_WORKERS="2",
    )
    return env


@pytest.fixture
def served(environment: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Base URL of `encore serve` running after `encore demo --if-empty`."""
    demo = subprocess.run(
        [*ENCORE, "demo", "--if-empty"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
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
        server.wait(timeout=15)
        log.close()


def test_demo_catalog_is_served_over_http(served: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=served, timeout=10) as http:
        assert http.get("/readyz").json()["status"] == "ready"

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


def test_demo_is_loaded_only_once(environment: dict[str, str], tmp_path: Path) -> None:
    first = subprocess.run(
        [*ENCORE, "demo", "--if-empty"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        [*ENCORE, "demo", "--if-empty"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "already has" in second.stderr + second.stdout

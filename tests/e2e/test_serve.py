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
from sqlalchemy.engine import make_url

ENCORE = [sys.executable, "-m", "encore.cli"]
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


@pytest.fixture
def served(environment: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Base URL of `encore serve` running after `encore demo --if-empty`."""
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
        server.wait(timeout=15)
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


def test_demo_is_loaded_only_once(environment: dict[str, str], tmp_path: Path) -> None:
    first = run_encore(environment, tmp_path, "demo", "--if-empty")
    assert first.returncode == 0, first.stderr
    for username in DEMO_USERNAMES:
        assert username in first.stdout + first.stderr
    credentials = demo_credentials_file(environment, tmp_path)
    assert credentials.exists()
    assert credentials.stat().st_mode & 0o777 == 0o600
    saved = credentials.read_text()
    assert all(username in saved for username in DEMO_USERNAMES)

    second = run_encore(environment, tmp_path, "demo", "--if-empty")
    assert second.returncode == 0, second.stderr
    assert "already has" in second.stderr + second.stdout
    assert str(credentials) in second.stderr + second.stdout
    assert credentials.read_text() == saved, "existing demo accounts keep their passwords"

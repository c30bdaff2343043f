"""`encore serve` killed with SIGKILL in the middle of event batches: clients retry, and every
event is recorded exactly once (real loopback HTTP, both databases)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from encore.app import create_app
from encore.config import Settings
from encore.db import utcnow
from encore.events.models import DailyTrackStats
from tests.e2e.test_serve import ENCORE, _free_port
from tests.fixtures.events import drain_events, seed_catalog
from tests.fixtures.oauth import create_user, resources_of, user_token

BATCHES = 3
EVENTS_PER_BATCH = 1000


class Server:
    """An `encore serve` process that can be killed and started again on the same port."""

    def __init__(self, environment: dict[str, str], workdir: Path) -> None:
        self.environment = environment
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{environment['ENCORE_PORT']}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until /healthz answers."""
        log = (self.workdir / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [*ENCORE, "serve"],
            env=self.environment,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "serve.log").read_text()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("encore serve did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Terminate if still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
async def local_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An in-process app on the same database: seeds the catalog, issues tokens, drains."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def server(settings: Settings, local_app: FastAPI, tmp_path: Path) -> Iterator[Server]:
    """`encore serve` on this test's database and secret key, consumers off."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")}
    environment.update(
        ENCORE_DATABASE_URL=settings.database_url,
        ENCORE_STORAGE_URL=settings.storage_url,
        ENCORE_SECRET_KEY_FILE=str(settings.secret_key_file),
        ENCORE_HOST="127.0.0.1",
        ENCORE_PORT=str(_free_port()),
        ENCORE_LOG_LEVEL="warning",
        ENCORE_WORKERS="0",
    )
    running = Server(environment, tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def _send_until_confirmed(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> int:
    for _attempt in range(200):
        try:
            response = await http.post("/v1/events", json={"events": events}, timeout=30)
        except httpx.TransportError:
            await asyncio.sleep(0.1)
            continue
        assert response.status_code == 202, response.text
        body = response.json()
        return int(body["accepted"]) + int(body["duplicates"])
    raise AssertionError("the batch was never confirmed")


async def test_kill_9_mid_batch_then_retry_records_every_event_once(
    local_app: FastAPI, server: Server
) -> None:
    playable = await seed_catalog(local_app, artists=1, tracks_per_artist=4)
    await create_user(local_app, "mallory")
    token = await user_token(local_app, "mallory", "events-write")
    start = utcnow() - timedelta(hours=5)
    batches = [
        [
            {
                "event_id": str(uuid.uuid4()),
                "type": "play_start",
                "track_id": str(playable.track_ids[index % 4]),
                "occurred_at": (start + timedelta(seconds=number * 1000 + index)).isoformat(),
            }
            for index in range(EVENTS_PER_BATCH)
        ]
        for number in range(BATCHES)
    ]
    async with httpx.AsyncClient(
        base_url=server.base, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        for number, batch in enumerate(batches):
            sending = asyncio.create_task(_send_until_confirmed(http, batch))
            # Kill at a different moment of each batch: before, during and after its commit.
            await asyncio.sleep(0.01 * number)
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            confirmed = await sending
            assert confirmed == EVENTS_PER_BATCH
    await drain_events(local_app)
    async with resources_of(local_app).session_factory() as db_session:
        plays = await db_session.scalar(select(func.sum(DailyTrackStats.plays)))
    assert plays == BATCHES * EVENTS_PER_BATCH

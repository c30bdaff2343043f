"""`encore report engagement|artist NAME`: the API's figures, as tables in a terminal."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from encore.app import create_app
from encore.cli import app as cli
from encore.config import Settings
from encore.db import utcnow
from encore.events.service import record_events
from tests.fixtures.events import drain_events, listening_session, seed_catalog
from tests.fixtures.oauth import create_user, resources_of


async def _listen(settings: Settings) -> None:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        playable = await seed_catalog(application, artists=1, tracks_per_artist=3)
        listener = await create_user(application, "lena")
        start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        await record_events(
            event_log=resources_of(application).event_log,
            rate_limiter=None,
            user_id=listener.id,
            body=orjson.dumps({"events": listening_session(playable.track_ids, start=start)}),
        )
        await drain_events(application)


def _row(printed: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with first_cell (Unicode or ASCII borders)."""
    for line in printed.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|┃]", line)][1:-1]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{printed}")


def test_reports_print_the_figures(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asyncio.run(_listen(settings))
    for name in list(os.environ):
        if name.startswith("ENCORE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCORE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ENCORE_STORAGE_URL", settings.storage_url)
    monkeypatch.setenv("ENCORE_SECRET_KEY_FILE", settings.secret_key_file)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    today = (utcnow() - timedelta(hours=3)).date().isoformat()

    engagement = runner.invoke(
        cli, ["report", "engagement", "--from", today, "--to", today], env={"COLUMNS": "200"}
    )
    assert engagement.exit_code == 0, engagement.output
    cells = _row(engagement.stdout, today)
    # day, DAU, WAU, MAU, DAU/MAU, new, returning, sessions, avg session, streams, per listener
    assert cells[1:8] == ["1", "1", "1", "100.0%", "1", "0", "1"]
    assert cells[9:] == ["3", "3.00"]

    artist = runner.invoke(
        cli,
        ["report", "artist", "artist 0", "--from", today, "--to", today],
        env={"COLUMNS": "200"},
    )
    assert artist.exit_code == 0, artist.output
    assert "Artist 0" in artist.stdout
    assert "Top tracks" in artist.stdout and "Song 1" in artist.stdout
    assert _row(artist.stdout, "total")[1:3] == ["3", "1"]

    missing = runner.invoke(cli, ["report", "artist", "Nobody"])
    assert missing.exit_code == 1
    assert "no artist named 'Nobody'" in missing.output

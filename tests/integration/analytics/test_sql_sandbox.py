"""The analysts' SQL endpoint: read-only SELECTs over the lake's view, everything else refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI

from encore.config import Settings
from encore.db import utcnow
from encore.events.service import record_events
from tests.fixtures.events import drain_events, listening_session, seed_catalog
from tests.fixtures.oauth import asgi_client, create_user, resources_of, user_token


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Tight limits, so the time limit and the row cap are reached in a moment."""
    return settings.model_copy(
        update={"analytics_query_timeout_seconds": 1.0, "analytics_query_max_rows": 1000}
    )


@pytest.fixture
async def analyst(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An analyst's client, with a few events in the lake."""
    playable = await seed_catalog(app, artists=1, tracks_per_artist=3)
    listener = await create_user(app, "lena")
    result = await record_events(
        event_log=resources_of(app).event_log,
        rate_limiter=None,
        user_id=listener.id,
        body=orjson.dumps(
            {"events": listening_session(playable.track_ids, start=utcnow() - timedelta(hours=2))}
        ),
    )
    assert result.accepted == 6
    await drain_events(app)
    await create_user(app, "ana", roles=("analyst",))  # type: ignore[arg-type]
    async with asgi_client(app) as http:
        http.headers["Authorization"] = f"Bearer {await user_token(app, 'ana', 'analytics')}"
        yield http


async def test_a_select_over_the_events_view_answers(analyst: httpx.AsyncClient) -> None:
    answer = await analyst.post(
        "/v1/analytics/query",
        json={"sql": "select type, count(*) n from events group by type order by type;"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [["play_end", 3], ["play_start", 3]]
    assert answer.headers["x-row-count"] == "2"


REFUSALS = [
    pytest.param("select * from read_csv('/etc/passwd')", 403, "query-not-allowed", id="file"),
    pytest.param("select * from read_text('/etc/hostname')", 403, "query-not-allowed", id="text"),
    pytest.param(
        "select * from read_parquet('https://example.com/x.parquet')",
        403,
        "query-not-allowed",
        id="network",
    ),
    pytest.param("attach '/tmp/other.db' as other", 403, "query-not-allowed", id="attach"),
    pytest.param("install httpfs", 403, "query-not-allowed", id="install"),
    pytest.param("load httpfs", 403, "query-not-allowed", id="load"),
    pytest.param(
        "copy (select * from events) to 'lake/events/stolen.csv'",
        403,
        "query-not-allowed",
        id="copy",
    ),
    pytest.param("create table t as select 1", 403, "query-not-allowed", id="create"),
    pytest.param("drop view events", 403, "query-not-allowed", id="drop"),
    pytest.param("set enable_external_access = true", 403, "query-not-allowed", id="set"),
    pytest.param("select 1; select 2", 403, "query-not-allowed", id="two-statements"),
    pytest.param("selec 1", 422, "query-error", id="syntax"),
    pytest.param("select * from users", 422, "query-error", id="no-such-table"),
    pytest.param(
        "select count(*) from range(100000000) a, range(100000000) b",
        422,
        "query-timeout",
        id="forever",
    ),
    pytest.param("select * from range(5000000)", 422, "query-result-too-large", id="rows"),
]


async def test_the_sandbox_refuses_files_network_extensions_writes_and_runaways(
    app: FastAPI, analyst: httpx.AsyncClient
) -> None:
    lake = Path(resources_of(app).settings.storage_url.removeprefix("file://")) / "lake"
    files_before = sorted(lake.rglob("*"))
    for case in REFUSALS:
        sql, status, slug = case.values
        answer = await analyst.post("/v1/analytics/query", json={"sql": sql})
        assert answer.status_code == status, (case.id, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert str(problem["type"]).endswith(str(slug)), (case.id, problem)
        assert problem["detail"]
    # Nothing was written, not even into the lake's own directory (which DuckDB may read).
    assert sorted(lake.rglob("*")) == files_before
    still = await analyst.post("/v1/analytics/query", json={"sql": "select count(*) from events"})
    assert still.json()["rows"] == [[6]]

"""Cross-cutting HTTP behaviour: problem+json errors, request ids, metrics and health checks."""

from __future__ import annotations

import re
import socket

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from encore.app import create_app
from encore.config import Settings

PROBLEM = "application/problem+json"


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "https://encore.dev/problems/not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no resource at /v1/nothing-here",
        "instance": "/v1/nothing-here",
    }


async def test_an_unexpected_failure_is_a_500_problem_without_internals(app: FastAPI) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internal state: password=hunter2")

    app.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://encore.test") as http:
        response = await http.get("/explode")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 500
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert re.fullmatch(r"[0-9a-f]{12}-[0-9]{12}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_plain_client_request_id_is_echoed_and_a_hostile_one_replaced(
    client: httpx.AsyncClient,
) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-Id": "abc-123.retry_2"})
    assert echoed.headers["x-request-id"] == "abc-123.retry_2"

    hostile = await client.get("/healthz", headers={"X-Request-Id": 'x" injected="1'})
    assert hostile.headers["x-request-id"] != 'x" injected="1'
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9]{12}", hostile.headers["x-request-id"])


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.get("/v1/albums/0190f1c2-0000-7000-8000-000000000000")
    await client.get("/v1/no/such/route")

    metrics = await client.get("/metrics")

    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'encore_http_requests_total{method="GET",route="/v1/albums/{album_id}",status="404"} 3.0'
        in text
    )
    assert 'route="<unmatched>"' in text
    assert "0190f1c2" not in text
    assert "encore_http_request_duration_seconds_bucket" in text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_readiness_fails_with_a_503_problem_when_the_store_is_unreachable(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(
        update={
            "storage_url": "s3://encore-media",
            "s3_endpoint": f"http://127.0.0.1:{_closed_port()}",
            "s3_allow_http": True,
            "s3_access_key_id": "test",
            "s3_secret_access_key": SecretStr("test"),
        }
    )
    app = create_app(unreachable)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://encore.test") as http:
            response = await http.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["checks"] == {"database": "ok", "storage": "unreachable"}


async def test_openapi_documents_the_catalog(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/artists/{artist_id}",
        "/v1/artists/{artist_id}/albums",
        "/v1/albums/{album_id}",
        "/v1/tracks/{track_id}",
        "/v1/genres",
        "/v1/browse/new-releases",
    ):
        assert "get" in schema["paths"][path], path

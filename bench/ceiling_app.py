"""The ceiling: a bare Starlette app answering GET /v1/albums/{album_id} with pre-rendered bytes.

Run under the same uvicorn settings as Encore, it measures what the HTTP stack alone costs:
no database, no validation, no serialization, no middleware.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODIES_ENV = "ENCORE_BENCH_BODIES"
NOT_FOUND = b'{"title":"Not found","status":404}'


def load_bodies(path: Path) -> dict[str, bytes]:
    """Album id to response body, from a JSON object of id to body text."""
    bodies: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return {album_id: body.encode("utf-8") for album_id, body in bodies.items()}


def create_ceiling_app(bodies: dict[str, bytes] | None = None) -> Starlette:
    """A Starlette app serving these bodies (the file named by $ENCORE_BENCH_BODIES if None)."""
    if bodies is None:
        bodies = load_bodies(Path(os.environ[BODIES_ENV]))

    async def get_album(request: Request) -> Response:
        body = bodies.get(request.path_params["album_id"])
        if body is None:
            return Response(NOT_FOUND, status_code=404, media_type="application/problem+json")
        return Response(body, media_type="application/json")

    async def healthz(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/albums/{album_id}", get_album), Route("/healthz", healthz)])

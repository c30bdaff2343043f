"""What verifying an access token costs per request, in-process, against the ASGI ceiling.

Measured in one run, each as µs per call over many calls:

- reference: one call of the bare Starlette ceiling app (`bench.ceiling_app`) answering
  pre-rendered bytes through ASGI, no HTTP;
- cold verification: `TokenVerifier.verify` of a token it has not seen (ES256 signature,
  header and claims checks);
- cached verification: the same token again (what every request after a client's first pays);
- a cached album through Encore's whole ASGI stack, token checked, no HTTP.

Run with `python -m bench.token_verify`; results go to bench/results/token_verify.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ceiling_app import create_ceiling_app
from bench.machine import cpu_model
from bench.synthetic_catalog import fill_synthetic_catalog
from encore.app import create_app
from encore.auth.tokens import TokenVerifier
from encore.config import load_settings
from encore.observability import configure_logging

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "token_verify.json"


async def per_call_us(call: Callable[[], Awaitable[object]], calls: int) -> float:
    """Mean µs per awaited call, after a short warm-up."""
    for _ in range(min(200, calls)):
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


def asgi_get(
    app: Any, path: str, headers: list[tuple[bytes, bytes]]
) -> Callable[[], Awaitable[int]]:
    """A function that sends one GET through an ASGI app and returns the status."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call() -> int:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await app(scope, receive, send)
        assert status == 200, status
        return status

    return call


async def run(calls: int, workdir: Path) -> dict[str, Any]:
    """Build a small catalog, start Encore in-process, and time the four calls."""
    database_url = f"sqlite+aiosqlite:///{workdir / 'catalog.db'}"
    album_ids = await fill_synthetic_catalog(database_url, tracks=2_000, artists=200)
    settings = load_settings(
        database_url=database_url,
        storage_url="memory://",
        log_level="warning",
        secret_key_file=str(workdir / "secret.key"),
    )
    configure_logging(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        resources = app.state.resources
        issuer = await resources.auth.issuer()
        token, _ = issuer.access_token(
            subject="client:bench",
            client_id="bench",
            scopes={"analytics"},
            roles=(),
            session_id=None,
        )
        fresh = TokenVerifier(
            issuer=settings.issuer,
            audience=settings.public_url,
            reload_keys=_no_reload,
            cache_size=1,  # every token is new: this measures the signature check
        )
        fresh.use_keys([issuer.key])
        tokens = [
            issuer.access_token(
                subject="client:bench",
                client_id="bench",
                scopes={"analytics"},
                roles=(),
                session_id=None,
            )[0]
            for _ in range(calls + 200)
        ]
        cold_tokens = iter(tokens)

        async def cold() -> object:
            return await fresh.verify(next(cold_tokens))

        async def cached() -> object:
            return await resources.auth.verifier.verify(token)

        path = f"/v1/albums/{album_ids[0]}"
        auth = [(b"authorization", f"Bearer {token}".encode())]
        encore_album = asgi_get(app, path, auth)
        await encore_album()  # renders it into the cache
        ceiling = create_ceiling_app({str(album_ids[0]): b"x" * 3000})
        figures = {
            "ceiling_asgi_us": await per_call_us(asgi_get(ceiling, path, auth), calls),
            "verify_cold_us": await per_call_us(cold, calls),
            "verify_cached_us": await per_call_us(cached, calls),
            "encore_cached_album_with_token_us": await per_call_us(encore_album, calls),
        }
    reference = figures["ceiling_asgi_us"]
    return {
        "benchmark": "token_verify",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "python": platform.python_version(),
        "calls": calls,
        "us_per_call": {name: round(value, 2) for name, value in figures.items()},
        "ratio_to_ceiling_call": {
            name: round(value / reference, 2) for name, value in figures.items()
        },
    }


async def _no_reload() -> list[Any]:
    return []


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print a table, write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="encore-bench-token-") as scratch:
        result = asyncio.run(run(args.calls, Path(scratch)))
    print("| call | µs | ratio to ceiling call |\n|---|---:|---:|")
    for name, value in result["us_per_call"].items():
        print(f"| {name} | {value:.2f} | {result['ratio_to_ceiling_call'][name]:.2f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

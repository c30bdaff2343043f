"""Time to start playing: N listeners each do playback → master playlist → media playlist →
init segment → first segment against `encore serve` on loopback; p50/p99 of the sequence.

Listeners press play at uniformly random moments over `--window` seconds (an open arrival
model: a service's listeners do not all press play in the same millisecond). The reference,
in the same run and under the same arrivals, is a bare Starlette app answering the very same
five responses from memory: what the HTTP stack and the client cost by themselves.

Run with `python -m bench.playback_start`; results go to bench/results/playback_start.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.catalog_api import _cpu_split, free_port, running_server
from bench.machine import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "playback_start.json"
GOAL_P99_MS = 30.0
WARMUP_LISTENERS = 20
"""A first, unmeasured round on each server: first-use costs (imports, caches, connection
pools) are not what a listener of a running service meets."""
RESPONSES_ENV = "ENCORE_BENCH_PLAYBACK_RESPONSES"


async def _prepare(
    workdir: Path, listeners: int, public_url: str
) -> tuple[dict[str, str], str, list[str]]:
    """A catalog with one processed track; the server's environment, track id, and tokens."""
    from encore.auth.runtime import AuthRuntime
    from encore.catalog.importer import ImportReport, import_library, process_imported_tracks
    from encore.config import load_settings
    from encore.db import create_engine, create_session_factory, upgrade_database
    from encore.media.synthesis import TagSpec, Tone, write_tagged_track
    from encore.storage import open_blob_store

    env = {
        "ENCORE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'encore.db'}",
        "ENCORE_STORAGE_URL": f"file://{workdir / 'media'}",
        "ENCORE_SECRET_KEY_FILE": str(workdir / "secret.key"),
        "ENCORE_LOG_LEVEL": "warning",
        "ENCORE_WORKERS": "0",
        # Tokens name their audience and signed URLs their host: this server's address.
        "ENCORE_PUBLIC_URL": public_url,
    }
    settings = load_settings(**{k.removeprefix("ENCORE_").lower(): v for k, v in env.items()})
    library = workdir / "library"
    write_tagged_track(
        library / "song.flac",
        Tone(seconds=60.0),
        TagSpec(title="Bench", artists=("Bench Band",), album="Bench"),
    )
    engine = create_engine(settings)
    try:
        await upgrade_database(engine)
        session_factory = create_session_factory(engine)
        store = open_blob_store(settings)
        report: ImportReport = await import_library(
            root=library, session_factory=session_factory, store=store, workers=1
        )
        await process_imported_tracks(
            settings=settings,
            session_factory=session_factory,
            store=store,
            report=report,
            progress=lambda _done: None,
        )
        from sqlalchemy import select

        from encore.catalog.models import Track

        async with session_factory() as db_session:
            found = await db_session.scalar(select(Track.id))
        if found is None or report.imported != 1:
            raise RuntimeError(f"the benchmark track was not imported: {report.failed}")
        track_id = str(found)
        runtime = await AuthRuntime.start(settings, session_factory)
        issuer = await runtime.issuer()
        tokens = [
            issuer.access_token(
                subject=str(uuid.uuid4()),
                client_id="encore-web",
                scopes={"streaming"},
                roles={"listener"},
                session_id=None,
            )[0]
            for _ in range(listeners)
        ]
    finally:
        await engine.dispose()
    return env, track_id, tokens


async def _listen(
    http: httpx.AsyncClient, start_at: float, playback_path: str, token: str
) -> float:
    """One listener: wait for its moment, then the five requests; seconds it took."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    started = time.perf_counter()
    answer = await http.get(playback_path, headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    master_url = urlsplit(answer.json()["hls"]["url"]).path
    master = await http.get(master_url)
    master.raise_for_status()
    media_relative = next(
        line for line in master.text.splitlines() if line and not line.startswith("#")
    )
    base = master_url.rsplit("/", 1)[0]
    media_url = f"{base}/{media_relative}"
    media = await http.get(media_url)
    media.raise_for_status()
    rendition_base = media_url.rsplit("/", 1)[0]
    init = await http.get(f"{rendition_base}/init.mp4")
    init.raise_for_status()
    first_segment = next(
        line for line in media.text.splitlines() if line and not line.startswith("#")
    )
    segment = await http.get(f"{rendition_base}/{first_segment}")
    segment.raise_for_status()
    return time.perf_counter() - started


async def _run_listeners(
    base_url: str, track_id: str, tokens: list[str], window_s: float, seed: int
) -> list[float]:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        now = time.monotonic() + 0.5
        starts = [now + rng.uniform(0, window_s) for _ in tokens]
        return list(
            await asyncio.gather(
                *(
                    _listen(http, start, f"/v1/tracks/{track_id}/playback", token)
                    for start, token in zip(starts, tokens, strict=True)
                )
            )
        )


def _capture_responses(base_url: str, track_id: str, token: str, path: Path) -> None:
    """Record the five responses of one listener, for the reference server to replay."""
    recorded: dict[str, dict[str, Any]] = {}

    async def record() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            original_get = http.get

            async def get(url: str, **kwargs: Any) -> httpx.Response:
                response = await original_get(url, **kwargs)
                recorded[url] = {
                    "status": response.status_code,
                    "type": response.headers.get("content-type", ""),
                    "body": response.content.hex(),
                }
                return response

            http.get = get  # type: ignore[method-assign]
            await _listen(http, time.monotonic(), f"/v1/tracks/{track_id}/playback", token)

    asyncio.run(record())
    path.write_text(json.dumps(recorded))


def create_reference_app() -> Any:
    """A bare Starlette app answering the recorded responses by path (the reference)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    recorded = json.loads(Path(os.environ[RESPONSES_ENV]).read_text())
    answers = {
        path: (item["status"], item["type"], bytes.fromhex(item["body"]))
        for path, item in recorded.items()
    }

    async def answer(request: Request) -> Response:
        status, media_type, body = answers[request.url.path]
        return Response(body, status_code=status, media_type=media_type)

    async def healthz(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/healthz", healthz), Route("/{path:path}", answer)])


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


@contextlib.contextmanager
def _pinned_to(cpus: tuple[int, ...] | None) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main(argv: list[str] | None = None) -> int:
    """Command line: prepare, measure Encore and the reference at each listener count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--window", type=float, default=10.0, help="seconds listeners arrive over")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    server_cpus, client_cpus = _cpu_split(True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="encore-bench-playback-") as scratch:
        workdir = Path(scratch)
        port = free_port()
        env, track_id, tokens = asyncio.run(
            _prepare(workdir, max(args.listeners) + WARMUP_LISTENERS, f"http://127.0.0.1:{port}")
        )
        # Listeners of the warm-up round are not measured, and do not come back later.
        warmup_tokens, tokens = tokens[:WARMUP_LISTENERS], tokens[WARMUP_LISTENERS:]
        # The client process holds everything the preparation built (the app's modules, the
        # media pipeline): a full collection of that during a round stalled listeners for
        # 60-160 ms, the client's pause and not the server's. Moved out of the collector's sight.
        gc.collect()
        gc.freeze()
        responses = workdir / "responses.json"
        with running_server(
            "encore.app:create_app_from_environment",
            env=env,
            workdir=workdir,
            cpus=server_cpus,
            log_name="encore",
            port=port,
        ) as base_url:
            _capture_responses(base_url, track_id, tokens[0], responses)
            with _pinned_to(client_cpus):
                asyncio.run(_run_listeners(base_url, track_id, warmup_tokens, 1.0, 0))
                for count in args.listeners:
                    took = asyncio.run(
                        _run_listeners(base_url, track_id, tokens[:count], args.window, count)
                    )
                    rows.append({"server": "Encore", "listeners": count, "seconds": took})
        with (
            running_server(
                "bench.playback_start:create_reference_app",
                env={RESPONSES_ENV: str(responses)},
                workdir=workdir,
                cpus=server_cpus,
                log_name="reference",
            ) as base_url,
            _pinned_to(client_cpus),
        ):
            asyncio.run(_run_listeners(base_url, track_id, warmup_tokens, 1.0, 0))
            for count in args.listeners:
                took = asyncio.run(
                    _run_listeners(base_url, track_id, tokens[:count], args.window, count)
                )
                rows.append({"server": "reference", "listeners": count, "seconds": took})
    table = ["| server | listeners | p50 ms | p99 ms | p99 goal met? |", "|---|---:|---:|---:|---|"]
    results = []
    for row in rows:
        p50, p99 = _percentile(row["seconds"], 0.5), _percentile(row["seconds"], 0.99)
        verdict = ("yes" if p99 <= GOAL_P99_MS else "no") if row["server"] == "Encore" else "—"
        table.append(
            f"| {row['server']} | {row['listeners']} | {p50:.1f} | {p99:.1f} | {verdict} |"
        )
        results.append(
            {
                "server": row["server"],
                "listeners": row["listeners"],
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
            }
        )
    print("\n".join(table))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "playback_start",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                    "system": f"{platform.system()} {platform.release()}",
                },
                "window_s": args.window,
                "goal_p99_ms": GOAL_P99_MS,
                "results": results,
                "table": "\n".join(table),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

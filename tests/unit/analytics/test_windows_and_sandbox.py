"""Windows, buckets and months; the DuckDB sandbox on a lake directory of its own."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encore.analytics import charts, lake_queries
from encore.analytics.schemas import EntityStats, Granularity, StatsBucket, StatsTotals
from encore.analytics.service import check_window, parse_month, window_buckets
from encore.events.lake import EVENT_LAKE_SCHEMA
from encore.problems import InvalidInput

LIMITS = lake_queries.LakeLimits(timeout_seconds=2.0, max_rows=100)


def test_windows_must_be_ordered_and_at_most_two_years() -> None:
    check_window(date(2026, 1, 1), date(2026, 1, 1))
    check_window(date(2024, 1, 1), date(2025, 12, 31))
    with pytest.raises(InvalidInput, match="after"):
        check_window(date(2026, 1, 2), date(2026, 1, 1))
    with pytest.raises(InvalidInput, match="at most 731"):
        check_window(date(2024, 1, 1), date(2026, 1, 2))


def test_buckets_start_on_mondays_and_firsts_clipped_to_the_window() -> None:
    assert window_buckets(date(2026, 11, 5), date(2026, 11, 20), Granularity.week) == [
        date(2026, 11, 5),
        date(2026, 11, 9),
        date(2026, 11, 16),
    ]
    assert window_buckets(date(2026, 10, 30), date(2026, 12, 2), Granularity.month) == [
        date(2026, 10, 30),
        date(2026, 11, 1),
        date(2026, 12, 1),
    ]
    assert len(window_buckets(date(2026, 1, 1), date(2026, 1, 31), Granularity.day)) == 31


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-01", "November", "2026-01-01", ""])
def test_a_month_is_yyyy_mm(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_month(text)


def test_months_know_their_last_day() -> None:
    assert parse_month("2028-02") == (date(2028, 2, 1), date(2028, 2, 29))
    assert parse_month("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))


def _lake(root: Path, rows: int) -> Path:
    lake = root / "lake" / "events"
    part = lake / "date=2026-11-01" / "hour=10"
    part.mkdir(parents=True)
    columns = {field.name: [None] * rows for field in EVENT_LAKE_SCHEMA if field.nullable}
    columns.update(
        schema_version=[1] * rows,
        log_position=list(range(rows)),
        event_id=[str(uuid.uuid4()) for _ in range(rows)],
        user_id=[str(uuid.UUID(int=n % 3)) for n in range(rows)],
        type=["play_start"] * rows,
        occurred_at=[datetime(2026, 11, 1, 10, tzinfo=UTC)] * rows,
        received_at=[datetime(2026, 11, 1, 10, tzinfo=UTC)] * rows,
        shuffle=[False] * rows,
        offline=[False] * rows,
    )
    pq.write_table(pa.table(columns, schema=EVENT_LAKE_SCHEMA), part / "part-db-0.parquet")
    return lake


def test_the_sandbox_sees_the_lake_as_one_view(tmp_path: Path) -> None:
    lake = _lake(tmp_path, 10)
    table = lake_queries.run_sandboxed_query(
        lake,
        'select "date", hour, count(distinct user_id) users, count(*) n from events group by all',
        LIMITS,
    )
    assert table.to_pylist() == [{"date": date(2026, 11, 1), "hour": 10, "users": 3, "n": 10}]


def test_an_empty_lake_is_an_empty_view(tmp_path: Path) -> None:
    table = lake_queries.run_sandboxed_query(
        tmp_path / "nothing", "select count(*) n from events", LIMITS
    )
    assert table.to_pylist() == [{"n": 0}]


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("select * from read_csv('/etc/passwd')", lake_queries.QueryRefused),
        ("select * from glob('/etc/*')", lake_queries.QueryRefused),
        ("attach ':memory:' as other", lake_queries.QueryRefused),
        ("copy events to 'x.parquet'", lake_queries.QueryRefused),
        ("insert into events select * from events", lake_queries.QueryRefused),
        ("pragma enable_profiling", lake_queries.QueryRefused),
        ("select * from range(101)", lake_queries.QueryResultTooLarge),
        ("select count(*) from range(100000000) a, range(100000000) b", lake_queries.QueryTimeout),
        ("select nonsense(", lake_queries.QueryFailed),
    ],
)
def test_the_sandbox_refuses(tmp_path: Path, sql: str, refusal: type[Exception]) -> None:
    lake = _lake(tmp_path, 5)
    with pytest.raises(refusal):
        lake_queries.run_sandboxed_query(lake, sql, LIMITS)
    assert sorted(p.name for p in lake.rglob("*") if p.is_file()) == ["part-db-0.parquet"]


def test_results_encode_as_json_csv_and_parquet(tmp_path: Path) -> None:
    table = lake_queries.run_sandboxed_query(
        _lake(tmp_path, 4), "select type, occurred_at, 1.5::decimal(4,2) d from events", LIMITS
    )
    assert lake_queries.encode_result(table, "json").startswith(b'{"columns":[{"name":"type"')
    assert lake_queries.encode_result(table, "csv").splitlines()[0] == b'"type","occurred_at","d"'
    assert pq.read_table(io.BytesIO(lake_queries.encode_result(table, "parquet"))).num_rows == 4


def test_the_artist_chart_is_a_png_with_the_window_on_its_axis() -> None:
    zero = {
        "streams": 0,
        "listeners": 0,
        "ms_played": 0,
        "plays": 0,
        "skips": 0,
        "saves": 0,
        "unsaves": 0,
        "playlist_adds": 0,
        "skip_rate": None,
        "flagged_plays": 0,
    }
    stats = EntityStats(
        id=uuid.uuid4(),
        name="Vega",
        from_date=date(2026, 11, 1),
        to_date=date(2026, 11, 3),
        granularity=Granularity.day,
        totals=StatsTotals(**zero),
        series=[StatsBucket(start=date(2026, 11, d), **zero) for d in (1, 2, 3)],
        by_country=[],
        by_device=[],
        by_source=[],
    )
    assert charts.draw_artist_chart(stats, {}).startswith(b"\x89PNG")

"""The insights for a terminal: the same figures as the API, as rich tables (`encore report`)."""

from __future__ import annotations

from datetime import date

from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from encore.analytics import service
from encore.analytics.schemas import Engagement, EntityStats, Granularity, SplitRow
from encore.catalog import service as catalog_service
from encore.problems import NotFound


async def compute_engagement(
    *, db_session: AsyncSession, from_date: date, to_date: date
) -> Engagement:
    """Engagement per day over the window, from the listener activity rollups."""
    return await service.engagement(db_session=db_session, from_date=from_date, to_date=to_date)


async def artist_stats_by_name(
    *,
    db_session: AsyncSession,
    name: str,
    from_date: date,
    to_date: date,
    granularity: Granularity,
) -> EntityStats:
    """Any artist's statistics, found by name (for operators; no ownership check)."""
    artist_id = await catalog_service.find_artist_id_by_name(db_session=db_session, name=name)
    if artist_id is None:
        raise NotFound(f"no artist named {name!r}")
    return await service.artist_stats(
        db_session=db_session,
        artist_id=artist_id,
        name=await service.get_owned_artist_name(
            db_session=db_session, artist_id=artist_id, user_id=None, admin=True
        ),
        from_date=from_date,
        to_date=to_date,
        granularity=granularity,
    )


def _ratio(value: float | None, *, percent: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if percent else f"{value:,.2f}"


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:,.1f}"


def engagement_tables(engagement: Engagement) -> list[Table]:
    """A table of the days and one of the window's totals."""
    days = Table(title=f"Engagement {engagement.from_date} to {engagement.to_date} (UTC days)")
    for column in (
        "day",
        "DAU",
        "WAU",
        "MAU",
        "DAU/MAU",
        "new",
        "returning",
        "sessions",
        "avg session min",
        "streams",
        "streams/listener",
    ):
        days.add_column(column, justify="left" if column == "day" else "right")
    for day in engagement.days:
        days.add_row(
            day.day.isoformat(),
            f"{day.dau:,}",
            f"{day.wau:,}",
            f"{day.mau:,}",
            _ratio(day.dau_mau, percent=True),
            f"{day.new_listeners:,}",
            f"{day.returning_listeners:,}",
            f"{day.sessions:,}",
            _minutes(day.avg_session_seconds),
            f"{day.streams:,}",
            _ratio(day.streams_per_listener),
        )
    totals = Table(title="Whole window")
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    totals.add_row("listeners", f"{engagement.listeners:,}")
    totals.add_row("sessions", f"{engagement.sessions:,}")
    totals.add_row("avg session min", _minutes(engagement.avg_session_seconds))
    totals.add_row("streams", f"{engagement.streams:,}")
    totals.add_row("streams/listener", _ratio(engagement.streams_per_listener))
    return [days, totals]


def _split_table(title: str, rows: list[SplitRow]) -> Table:
    table = Table(title=title)
    for column in ("value", "streams", "hours", "plays", "skips"):
        table.add_column(column, justify="left" if column == "value" else "right")
    for row in rows:
        table.add_row(
            row.value or "(unknown)",
            f"{row.streams:,}",
            f"{row.ms_played / 3_600_000:,.1f}",
            f"{row.plays:,}",
            f"{row.skips:,}",
        )
    return table


def artist_tables(stats: EntityStats) -> list[Table]:
    """Totals, the series, top tracks and the splits of an artist's statistics."""
    title = f"{stats.name or stats.id}, {stats.from_date} to {stats.to_date}"
    series = Table(title=f"{title} by {stats.granularity.value}")
    for column in ("from", "streams", "listeners", "hours", "saves", "playlist adds", "skip rate"):
        series.add_column(column, justify="left" if column == "from" else "right")
    for bucket in [*stats.series, None]:
        figures = stats.totals if bucket is None else bucket
        series.add_row(
            "total" if bucket is None else bucket.start.isoformat(),
            f"{figures.streams:,}",
            f"{figures.listeners:,}",
            f"{figures.ms_played / 3_600_000:,.1f}",
            f"{figures.saves:,}",
            f"{figures.playlist_adds:,}",
            _ratio(figures.skip_rate, percent=True),
            end_section=bucket is not None and bucket is stats.series[-1],
        )
    top = Table(title="Top tracks")
    for column in ("#", "track", "streams", "hours"):
        top.add_column(column, justify="left" if column == "track" else "right")
    for rank, track in enumerate(stats.top_tracks, start=1):
        top.add_row(
            str(rank),
            track.title or str(track.track_id),
            f"{track.streams:,}",
            f"{track.ms_played / 3_600_000:,.1f}",
        )
    return [
        series,
        top,
        _split_table("By country", stats.by_country),
        _split_table("By device type", stats.by_device),
        _split_table("By source", stats.by_source),
    ]

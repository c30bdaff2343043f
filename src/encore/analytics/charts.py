"""Pictures of the insights, drawn server-side with matplotlib (Agg, no display, in a thread)."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from datetime import date, timedelta

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from encore.analytics.schemas import Engagement, EntityStats

CHART_TRACKS = 5
# matplotlib's font and text caches are not thread-safe: one drawing at a time.
_DRAWING = threading.Lock()


def _days(from_date: date, to_date: date) -> list[date]:
    return [from_date + timedelta(days=n) for n in range((to_date - from_date).days + 1)]


def _x(days: list[date]) -> np.ndarray[tuple[int], np.dtype[np.datetime64]]:
    return np.array(days, dtype="datetime64[D]")


def _date_axis(axes: Axes) -> None:
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _png(figure: Figure) -> bytes:
    sink = io.BytesIO()
    figure.savefig(sink, format="png", dpi=100)
    return sink.getvalue()


def draw_artist_chart(stats: EntityStats, track_series: dict[uuid.UUID, dict[date, int]]) -> bytes:
    """PNG: the artist's daily streams over the window, with a line per top track (blocking)."""
    days = _days(stats.from_date, stats.to_date)
    with _DRAWING:
        figure = Figure(figsize=(10, 5), layout="constrained")
        axes = figure.add_subplot()
        # The series is daily here: the router asks for day granularity.
        total = {bucket.start: bucket.streams for bucket in stats.series}
        axes.fill_between(
            _x(days), [total.get(d, 0) for d in days], step="mid", alpha=0.25, label="all tracks"
        )
        for top in stats.top_tracks[:CHART_TRACKS]:
            series = track_series.get(top.track_id, {})
            axes.plot(
                _x(days),
                [series.get(d, 0) for d in days],
                drawstyle="steps-mid",
                linewidth=1.5,
                label=top.title or str(top.track_id),
            )
        axes.set_title(
            f"{stats.name or stats.id}: streams per day, {stats.from_date} to {stats.to_date}"
        )
        axes.set_xlabel("day (UTC)")
        axes.set_ylabel("streams")
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        _date_axis(axes)
        axes.legend(loc="upper left", fontsize="small")
        return _png(figure)


def draw_engagement_chart(engagement: Engagement) -> bytes:
    """PNG: DAU, WAU and MAU per day, and DAU/MAU on a second axis (blocking)."""
    days = [d.day for d in engagement.days]
    with _DRAWING:
        figure = Figure(figsize=(10, 5), layout="constrained")
        axes = figure.add_subplot()
        for label, values in (
            ("DAU", [d.dau for d in engagement.days]),
            ("WAU", [d.wau for d in engagement.days]),
            ("MAU", [d.mau for d in engagement.days]),
        ):
            axes.plot(_x(days), values, marker=".", label=label)
        axes.set_title(f"Active listeners, {engagement.from_date} to {engagement.to_date}")
        axes.set_xlabel("day (UTC)")
        axes.set_ylabel("listeners")
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        ratio = axes.twinx()
        ratio.plot(
            _x(days),
            [d.dau_mau if d.dau_mau is not None else float("nan") for d in engagement.days],
            color="grey",
            linestyle="--",
            label="DAU/MAU",
        )
        ratio.set_ylabel("DAU/MAU")
        ratio.set_ylim(0, 1)
        ratio.yaxis.set_major_formatter(PercentFormatter(1.0))
        _date_axis(axes)
        lines, labels = axes.get_legend_handles_labels()
        more_lines, more_labels = ratio.get_legend_handles_labels()
        axes.legend(lines + more_lines, labels + more_labels, loc="upper left", fontsize="small")
        return _png(figure)


async def artist_chart_png(
    stats: EntityStats, track_series: dict[uuid.UUID, dict[date, int]]
) -> bytes:
    """The artist chart, drawn in a worker thread."""
    return await asyncio.to_thread(draw_artist_chart, stats, track_series)


async def engagement_chart_png(engagement: Engagement) -> bytes:
    """The engagement chart, drawn in a worker thread."""
    return await asyncio.to_thread(draw_engagement_chart, engagement)

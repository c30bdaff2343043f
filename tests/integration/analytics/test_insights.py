"""Every insight checked against the raw events: a synthesized month for a few hundred listeners."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from datetime import date, timedelta

import httpx
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from PIL import Image

from encore.analytics.schemas import Granularity
from encore.analytics.service import bucket_start
from encore.auth.models import Role
from encore.catalog import service as catalog_service
from tests.fixtures.oauth import asgi_client, create_user, resources_of, user_token
from tests.integration.analytics.synthetic import (
    Catalog,
    Recomputed,
    now_floor,
    read_lake,
    recompute,
    record_and_drain,
    seed_catalog,
    synthesize_month,
)

LISTENERS = 300


async def _own(app: FastAPI, username: str, artist_id: uuid.UUID) -> None:
    user = await create_user(app, username, roles=(Role.artist,))
    async with resources_of(app).session_factory() as db_session:
        await catalog_service.set_artist_owner(
            db_session=db_session, artist_id=artist_id, user_id=user.id
        )
        await db_session.commit()


def _artist_figures(
    truth: Recomputed, catalog: Catalog, artist: uuid.UUID, first: date, last: date
) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[date, int], dict[date, set[uuid.UUID]]]:
    tracks = set(catalog.tracks_of[artist])
    totals: dict[str, int] = defaultdict(int)
    splits: dict[str, dict[str, int]] = {
        "country": defaultdict(int),
        "device": defaultdict(int),
        "source": defaultdict(int),
    }
    per_day: dict[date, int] = defaultdict(int)
    for (day, track, country, device, source), cell in truth.track_cells.items():
        if track not in tracks or not first <= day <= last:
            continue
        for name in ("plays", "streams", "ms_played", "skips", "likes", "playlist_adds", "flagged"):
            totals[name] += getattr(cell, name)
        splits["country"][country] += cell.streams
        splits["device"][device] += cell.streams
        splits["source"][source] += cell.streams
        per_day[day] += cell.streams
    listeners_by_day: dict[date, set[uuid.UUID]] = defaultdict(set)
    for (day, track), users in truth.stream_listeners.items():
        if track in tracks and first <= day <= last:
            listeners_by_day[day] |= users
    return totals, splits, per_day, listeners_by_day


def _track_streams(
    truth: Recomputed, first: date, last: date, country: str | None = None
) -> dict[uuid.UUID, int]:
    streams: dict[uuid.UUID, int] = defaultdict(int)
    for (day, track, cell_country, _device, _source), cell in truth.track_cells.items():
        if first <= day <= last and (country is None or cell_country == country):
            streams[track] += cell.streams
    return streams


async def test_every_figure_agrees_with_the_raw_events(app: FastAPI) -> None:
    catalog = await seed_catalog(app)
    end = now_floor()
    by_user = synthesize_month(catalog, listeners=LISTENERS, seed=20261126, end=end)
    recorded = await record_and_drain(app, by_user)
    truth = recompute(read_lake(app))
    assert truth.events == recorded
    assert sum(c.flagged for c in truth.track_cells.values()) > 0, "the month has abuse"
    days = sorted(truth.active)
    first, last = days[0], days[-1]

    artist = catalog.artist_ids[0]
    await _own(app, "ada", artist)
    async with asgi_client(app) as http:
        http.headers["Authorization"] = f"Bearer {await user_token(app, 'ada', 'artist-stats')}"
        # --- artist statistics, by week
        answer = await http.get(
            f"/v1/artists/{artist}/stats",
            params={"from": first.isoformat(), "to": last.isoformat(), "granularity": "week"},
        )
        assert answer.status_code == 200, answer.text
        stats = answer.json()
        totals, splits, per_day, listeners_by_day = _artist_figures(
            truth, catalog, artist, first, last
        )
        assert stats["from"] == first.isoformat() and stats["to"] == last.isoformat()
        got = stats["totals"]
        assert got["streams"] == totals["streams"] > 0
        assert got["ms_played"] == totals["ms_played"]
        assert got["plays"] == totals["plays"]
        assert got["skips"] == totals["skips"]
        assert got["saves"] == totals["likes"]
        assert got["playlist_adds"] == totals["playlist_adds"]
        assert got["flagged_plays"] == totals["flagged"]
        assert got["skip_rate"] == pytest.approx(totals["skips"] / totals["plays"])
        everyone = set().union(*listeners_by_day.values())
        assert got["listeners"] == len(everyone)
        weekly_streams: dict[date, int] = defaultdict(int)
        weekly_listeners: dict[date, set[uuid.UUID]] = defaultdict(set)
        for day, streams in per_day.items():
            weekly_streams[max(bucket_start(day, Granularity.week), first)] += streams
        for day, users in listeners_by_day.items():
            weekly_listeners[max(bucket_start(day, Granularity.week), first)] |= users
        for bucket in stats["series"]:
            start = date.fromisoformat(bucket["start"])
            assert bucket["streams"] == weekly_streams.get(start, 0), start
            assert bucket["listeners"] == len(weekly_listeners.get(start, set())), start
        for dimension, key in (
            ("country", "by_country"),
            ("device", "by_device"),
            ("source", "by_source"),
        ):
            expected = {value: n for value, n in splits[dimension].items() if n}
            assert {
                row["value"]: row["streams"] for row in stats[key] if row["streams"]
            } == expected
        track_totals = _track_streams(truth, first, last)
        top = stats["top_tracks"]
        assert [t["track_id"] for t in top] == [
            str(t)
            for t in sorted(
                (t for t in catalog.tracks_of[artist] if track_totals.get(t)),
                key=lambda t: (-track_totals[t], str(t)),
            )
        ]
        for entry in top:
            track = uuid.UUID(entry["track_id"])
            assert entry["streams"] == track_totals[track]

        # --- a shorter window by day; and a track
        middle = first + timedelta(days=10)
        daily = (
            await http.get(
                f"/v1/artists/{artist}/stats",
                params={"from": middle.isoformat(), "to": (middle + timedelta(days=6)).isoformat()},
            )
        ).json()
        assert [b["streams"] for b in daily["series"]] == [
            per_day.get(middle + timedelta(days=n), 0) for n in range(7)
        ]
        assert [b["listeners"] for b in daily["series"]] == [
            len(listeners_by_day.get(middle + timedelta(days=n), set())) for n in range(7)
        ]
        track = catalog.tracks_of[artist][0]
        track_answer = await http.get(
            f"/v1/tracks/{track}/stats", params={"from": first.isoformat(), "to": last.isoformat()}
        )
        assert track_answer.status_code == 200, track_answer.text
        assert track_answer.json()["totals"]["streams"] == track_totals[track]
        chart = await http.get(
            f"/v1/artists/{artist}/stats/chart.png",
            params={"from": first.isoformat(), "to": last.isoformat()},
        )
        assert chart.status_code == 200
        assert chart.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(chart.content)).size == (1000, 500)

    await create_user(app, "ana", roles=(Role.analyst,))
    async with asgi_client(app) as http:
        http.headers["Authorization"] = f"Bearer {await user_token(app, 'ana', 'analytics')}"
        await _check_engagement(http, truth, first, last)
        await _check_retention(http, truth)
        await _check_charts(http, truth, catalog, last)
        await _check_royalties(http, truth, catalog, last)
        await _check_sql(http, truth)


def _active_within(truth: Recomputed, day: date, span: int) -> int:
    return len(
        set().union(*(truth.active.get(day - timedelta(days=n), set()) for n in range(span)))
    )


async def _check_engagement(
    http: httpx.AsyncClient, truth: Recomputed, first: date, last: date
) -> None:
    answer = await http.get(
        "/v1/analytics/engagement", params={"from": first.isoformat(), "to": last.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    engagement = answer.json()
    first_seen: dict[uuid.UUID, date] = {}
    for day in sorted(truth.active):
        for user in truth.active[day]:
            first_seen.setdefault(user, day)
    streams_by_day: dict[date, int] = defaultdict(int)
    for (day, *_rest), cell in truth.track_cells.items():
        streams_by_day[day] += cell.streams
    assert len(engagement["days"]) == (last - first).days + 1
    for row in engagement["days"]:
        day = date.fromisoformat(row["day"])

        dau = len(truth.active.get(day, set()))
        assert row["dau"] == dau, day
        assert row["wau"] == _active_within(truth, day, 7), day
        assert row["mau"] == _active_within(truth, day, 30), day
        new = sum(1 for seen in first_seen.values() if seen == day)
        assert row["new_listeners"] == new
        assert row["returning_listeners"] == dau - new
        sessions = truth.sessions.get(day, [])
        assert row["sessions"] == len(sessions), day
        if sessions:
            assert row["avg_session_seconds"] == pytest.approx(sum(sessions) / len(sessions))
        assert row["streams"] == streams_by_day.get(day, 0)
        if dau:
            assert row["streams_per_listener"] == pytest.approx(streams_by_day.get(day, 0) / dau)
    assert engagement["listeners"] == len(first_seen)
    all_sessions = [s for day, lengths in truth.sessions.items() if day >= first for s in lengths]
    assert engagement["sessions"] == len(all_sessions)
    assert engagement["avg_session_seconds"] == pytest.approx(sum(all_sessions) / len(all_sessions))
    picture = await http.get(
        "/v1/analytics/engagement/chart.png",
        params={"from": first.isoformat(), "to": last.isoformat()},
    )
    assert picture.status_code == 200
    assert picture.content.startswith(b"\x89PNG")


async def _check_retention(http: httpx.AsyncClient, truth: Recomputed) -> None:
    answer = await http.get("/v1/analytics/retention", params={"cohort": "week", "cohorts": 52})
    assert answer.status_code == 200, answer.text
    active_weeks: dict[uuid.UUID, set[date]] = defaultdict(set)
    for day, users in truth.active.items():
        for user in users:
            active_weeks[user].add(bucket_start(day, Granularity.week))
    expected: dict[date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for weeks in active_weeks.values():
        cohort = min(weeks)
        for week in weeks:
            expected[cohort][(week - cohort).days // 7] += 1
    cohorts = answer.json()["cohorts"]
    assert [c["start"] for c in cohorts] == [d.isoformat() for d in sorted(expected)]
    for cohort in cohorts:
        counts = expected[date.fromisoformat(cohort["start"])]
        assert cohort["size"] == counts[0]
        assert {r["offset"]: r["active"] for r in cohort["retention"] if r["active"]} == dict(
            counts
        )
        assert cohort["retention"][0]["rate"] == 1.0


async def _check_charts(
    http: httpx.AsyncClient, truth: Recomputed, catalog: Catalog, last: date
) -> None:
    week_start = last - timedelta(days=6)
    for params, country, genre in (
        ({"date": last.isoformat(), "period": "week"}, None, None),
        ({"date": last.isoformat(), "period": "week", "country": "SE"}, "SE", None),
        ({"date": last.isoformat(), "period": "week", "genre": "jazz"}, None, "Jazz"),
    ):
        answer = await http.get("/v1/analytics/charts", params=params)
        assert answer.status_code == 200, answer.text
        chart = answer.json()
        streams = _track_streams(truth, week_start, last, country)
        if genre:
            streams = defaultdict(
                int, {t: n for t, n in streams.items() if catalog.genre_of[t] == genre}
            )
        ranked = sorted((t for t, n in streams.items() if n), key=lambda t: (-streams[t], str(t)))
        assert [(e["id"], e["streams"]) for e in chart["tracks"]] == [
            (str(t), streams[t]) for t in ranked
        ]
        artists: dict[uuid.UUID, int] = defaultdict(int)
        for track, n in streams.items():
            artists[catalog.artist_of[track]] += n
        assert {e["id"]: e["streams"] for e in chart["artists"]} == {
            str(a): n for a, n in artists.items() if n
        }
        assert [e["rank"] for e in chart["artists"]] == list(range(1, len(chart["artists"]) + 1))


async def _check_royalties(
    http: httpx.AsyncClient, truth: Recomputed, catalog: Catalog, last: date
) -> None:
    month = last.strftime("%Y-%m")
    answer = await http.get("/v1/analytics/royalties", params={"month": month, "pool": "1000.00"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    per_artist: dict[uuid.UUID, int] = defaultdict(int)
    for (day, track, *_rest), cell in truth.track_cells.items():
        if day.strftime("%Y-%m") == month:
            per_artist[catalog.artist_of[track]] += cell.streams
    total = sum(per_artist.values())
    assert report["total_streams"] == total
    assert {r["artist_id"]: r["streams"] for r in report["artists"]} == {
        str(a): n for a, n in per_artist.items() if n
    }
    for row in report["artists"]:
        assert row["share"] == pytest.approx(row["streams"] / total)
        assert float(row["payout"]) == pytest.approx(1000 * row["streams"] / total, abs=0.006)
    exported = await http.get(
        "/v1/analytics/royalties", params={"month": month}, headers={"Accept": "text/csv"}
    )
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["artist_id"]: int(r["streams"]) for r in rows} == {
        str(a): n for a, n in per_artist.items() if n
    }


async def _check_sql(http: httpx.AsyncClient, truth: Recomputed) -> None:
    sql = "select type, count(*) as n from events group by type order by type"
    answer = await http.post("/v1/analytics/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [c["name"] for c in body["columns"]] == ["type", "n"]
    assert sum(n for _type, n in body["rows"]) == truth.events
    as_csv = await http.post(
        "/v1/analytics/query", json={"sql": sql}, headers={"Accept": "text/csv"}
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert sum(int(r["n"]) for r in csv.DictReader(io.StringIO(as_csv.text))) == truth.events
    as_parquet = await http.post(
        "/v1/analytics/query",
        json={"sql": sql},
        headers={"Accept": "application/vnd.apache.parquet"},
    )
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert sum(table.column("n").to_pylist()) == truth.events

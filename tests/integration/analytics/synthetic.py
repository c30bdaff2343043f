"""A synthesized month of listening for a few hundred accounts, and figures recomputed from it.

The recomputation reads the raw events back from the lake and derives every figure in plain
Python, independently of the SQL that serves them.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
from fastapi import FastAPI

from encore.catalog import service as catalog_service
from encore.catalog.models import AlbumType
from encore.catalog.service import CreditSpec
from encore.db import utcnow
from encore.events import service as events_service
from encore.events.lake import LAKE_EVENTS_PREFIX
from tests.fixtures.events import drain_events
from tests.fixtures.library import new_track
from tests.fixtures.oauth import resources_of

COUNTRIES = ("SE", "DE", "US", "BR", None)
DEVICES = ("phone", "desktop", "web", "car", None)
SOURCES = ("album", "playlist", "radio", "search", "recommendation", None)
GENRES = ("Electronic", "Jazz")
DAYS = 28


@dataclass(frozen=True)
class Catalog:
    """The synthesized catalog: artists with their tracks."""

    artist_ids: list[uuid.UUID]
    tracks_of: dict[uuid.UUID, list[uuid.UUID]]
    artist_of: dict[uuid.UUID, uuid.UUID]
    genre_of: dict[uuid.UUID, str]


async def seed_catalog(app: FastAPI, *, artists: int = 4, tracks_per_artist: int = 4) -> Catalog:
    """Artists of alternating genres, each with an album of tracks."""
    catalog = Catalog([], {}, {}, {})
    async with resources_of(app).session_factory() as db_session:
        for number in range(artists):
            name = f"Insight Artist {number}"
            genre = GENRES[number % len(GENRES)]
            artist = await catalog_service.get_or_create_artist(db_session=db_session, name=name)
            album = await catalog_service.get_or_create_album(
                db_session=db_session,
                title=f"Record {number}",
                artists=[CreditSpec(name)],
                release_date=None,
                album_type=AlbumType.album,
            )
            catalog.artist_ids.append(artist.id)
            catalog.tracks_of[artist.id] = []
            for track_number in range(1, tracks_per_artist + 1):
                digest = hashlib.sha256(f"{name}/{track_number}".encode()).hexdigest()
                track = await catalog_service.add_track(
                    db_session=db_session,
                    album=album,
                    new=new_track(
                        f"Tune {number}.{track_number}",
                        [name],
                        track_number,
                        duration_ms=240_000,
                        genres=(genre,),
                        content_hash=digest,
                    ),
                )
                catalog.tracks_of[artist.id].append(track.id)
                catalog.artist_of[track.id] = artist.id
                catalog.genre_of[track.id] = genre
        await db_session.commit()
    return catalog


def _event(kind: str, user_track: uuid.UUID, at: datetime, **fields: Any) -> dict[str, Any]:
    body = {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "track_id": str(user_track),
        "occurred_at": at.isoformat(),
        "offline": True,
    }
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def synthesize_month(
    catalog: Catalog, *, listeners: int, seed: int, end: datetime
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Events per account over the DAYS days before `end` (seeded, so every run is the same)."""
    rng = random.Random(seed)
    tracks = [t for artist in catalog.artist_ids for t in catalog.tracks_of[artist]]
    weights = [1.0 / (rank + 1) for rank in range(len(tracks))]  # a few hits, a long tail
    first_day = (end - timedelta(days=DAYS)).date()
    by_user: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for _ in range(listeners):
        user = uuid.UUID(int=rng.getrandbits(128), version=4)
        country, device = rng.choice(COUNTRIES), rng.choice(DEVICES)
        joined = rng.randrange(DAYS)
        active_days = sorted(
            rng.sample(range(joined, DAYS), k=min(DAYS - joined, 1 + int(rng.expovariate(0.3))))
        )
        events: list[dict[str, Any]] = []
        for offset in active_days:
            day_start = datetime.combine(
                first_day + timedelta(days=offset), datetime.min.time(), UTC
            )
            for hour in sorted(rng.sample(range(0, 22, 2), k=rng.choice((1, 1, 2, 3)))):
                at = day_start + timedelta(hours=hour, minutes=rng.randrange(50))
                for _play in range(rng.randint(1, 5)):
                    track = rng.choices(tracks, weights)[0]
                    context = rng.choice(SOURCES)
                    where = {
                        "country": country,
                        "device": device,
                        "context": {"type": context, "id": "c1"} if context else None,
                    }
                    events.append(_event("play_start", track, at, reason_start="clickrow", **where))
                    if rng.random() < 0.25:
                        ms = rng.randint(3_000, 60_000)
                        at += timedelta(milliseconds=ms)
                        events.append(_event("skip", track, at, ms_played=ms, **where))
                    else:
                        ms = rng.randint(20_000, 240_000)
                        at += timedelta(milliseconds=ms)
                        events.append(
                            _event(
                                "play_end", track, at, ms_played=ms, reason_end="trackdone", **where
                            )
                        )
                    if rng.random() < 0.1:
                        events.append(_event("like", track, at + timedelta(seconds=1)))
                    if rng.random() < 0.05:
                        events.append(
                            _event(
                                "playlist_add",
                                track,
                                at + timedelta(seconds=2),
                                playlist_id=str(uuid.uuid4()),
                            )
                        )
                    at += timedelta(seconds=rng.randint(1, 20))
            if rng.random() < 0.03:
                # A replay script: the same 40 s play reported ten times at once, at 23:00.
                track = rng.choice(tracks)
                at = day_start + timedelta(hours=23)
                for _copy in range(10):
                    events.append(_event("play_end", track, at, ms_played=40_000))
        by_user[user] = events
    return by_user


async def record_and_drain(app: FastAPI, by_user: dict[uuid.UUID, list[dict[str, Any]]]) -> int:
    """Append every account's events in time order through the events service; apply them."""
    resources = resources_of(app)
    stream = sorted(
        (
            (event["occurred_at"], user, event)
            for user, events in by_user.items()
            for event in events
        ),
        key=lambda item: (item[0], item[2]["event_id"]),
    )
    batch: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    recorded = 0

    async def flush() -> int:
        count = 0
        for user, events in batch.items():
            result = await events_service.record_events(
                event_log=resources.event_log,
                rate_limiter=None,
                user_id=user,
                body=orjson.dumps({"events": events}),
            )
            assert not result.rejected, result.rejected[:3]
            count += result.accepted
        batch.clear()
        return count

    # Batches of a few hours of everyone's listening: the log stays in time order.
    pending = 0
    for _at, user, event in stream:
        batch[user].append(event)
        pending += 1
        if len(batch[user]) == 1000 or pending >= 3000:
            recorded += await flush()
            pending = 0
    recorded += await flush()
    await drain_events(app)
    return recorded


# --------------------------------------------------------------------------------------------
# The independent computation


@dataclass
class Counters:
    """Rollup-like counters recomputed from raw events."""

    plays: int = 0
    streams: int = 0
    ms_played: int = 0
    skips: int = 0
    likes: int = 0
    playlist_adds: int = 0
    flagged: int = 0


@dataclass
class Recomputed:
    """Every figure the insights serve, derived from the lake's raw events in plain Python."""

    events: int = 0
    # (day, track, country, device, source) → counters
    track_cells: dict[tuple[date, uuid.UUID, str, str, str], Counters] = field(
        default_factory=lambda: defaultdict(Counters)
    )
    # (day, track) → users who streamed
    stream_listeners: dict[tuple[date, uuid.UUID], set[uuid.UUID]] = field(
        default_factory=lambda: defaultdict(set)
    )
    active: dict[date, set[uuid.UUID]] = field(default_factory=lambda: defaultdict(set))
    sessions: dict[date, list[float]] = field(default_factory=lambda: defaultdict(list))


def read_lake(app: FastAPI) -> list[dict[str, Any]]:
    """Every event in the lake, as dicts."""
    location = resources_of(app).settings.storage_url.removeprefix("file://")
    pattern = str(Path(location) / LAKE_EVENTS_PREFIX / "**" / "*.parquet")
    with duckdb.connect() as lake:
        lake.execute("SET TimeZone = 'UTC'")
        cursor = lake.execute(f"select * from read_parquet('{pattern}')")
        names = [column[0] for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def recompute(rows: list[dict[str, Any]]) -> Recomputed:
    """Apply the stream rule, the rollups, activity and sessions to raw lake rows."""
    answer = Recomputed(events=len(rows))
    by_user: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        row["occurred_at"] = row["occurred_at"].astimezone(UTC)
        by_user[uuid.UUID(row["user_id"])].append(row)
    for user, events in by_user.items():
        events.sort(key=lambda r: (r["occurred_at"], r["event_id"]))
        accepted: list[tuple[datetime, datetime]] = []
        intervals: list[tuple[datetime, datetime]] = []
        for row in events:
            kind, at = row["type"], row["occurred_at"]
            day = at.date()
            track = uuid.UUID(row["track_id"])
            cell = answer.track_cells[
                (day, track, row["country"] or "", row["device"] or "", row["context_type"] or "")
            ]
            ms = row["ms_played"] or 0
            if kind == "play_start":
                cell.plays += 1
            elif kind in ("play_end", "skip"):
                flagged = False
                if ms >= 30_000:
                    start = at - timedelta(milliseconds=ms)
                    overlap = any(
                        min(at, e) - max(start, s) > timedelta(seconds=5) for s, e in accepted
                    )
                    if overlap:
                        flagged = True
                        cell.flagged += 1
                    else:
                        accepted.append((start, at))
                        cell.streams += 1
                        answer.stream_listeners[(day, track)].add(user)
                if not flagged:
                    cell.ms_played += ms
                if kind == "skip":
                    cell.skips += 1
            elif kind == "like":
                cell.likes += 1
            elif kind == "playlist_add":
                cell.playlist_adds += 1
            if kind in ("play_start", "play_progress", "play_end", "skip"):
                answer.active[day].add(user)
                begin = at - timedelta(milliseconds=ms) if kind in ("play_end", "skip") else at
                intervals.append((begin, at))
        # Sessions: split where a play starts more than 30 minutes after everything before ended.
        intervals.sort()
        session: list[tuple[datetime, datetime]] = []
        for begin, end in [
            *intervals,
            (datetime.max.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)),
        ]:
            if session and begin > max(e for _, e in session) + timedelta(minutes=30):
                began = min(b for b, _ in session)
                length = max(e for _, e in session) - began
                answer.sessions[began.date()].append(length.total_seconds())
                session = []
            session.append((begin, end))
    return answer


def now_floor() -> datetime:
    """The start of the current UTC hour (the month of events ends before it)."""
    return utcnow().replace(minute=0, second=0, microsecond=0)

"""Generated playlists: Discover Weekly and up to three Daily Mixes per listener.

The system account owns them (`auth_service.ensure_system_user`); each is private with its
listener as the only (read-only) collaborator, so the library's normal access rules show it
to that listener alone. A refresh replaces the tracks of the same playlists (same ids, new
snapshot). Every track is ready to play. Without a model, Discover Weekly is the most
streamed tracks the listener never played and each Daily Mix is one of their top artists
with its (and its genres') popular tracks.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from encore.auth import service as auth_service
from encore.catalog import service as catalog_service
from encore.db import utcnow
from encore.library import service as library_service
from encore.recommend.model_store import RecommendModel
from encore.recommend.models import GeneratedPlaylist, TrackInteraction
from encore.recommend.service import (
    MAX_TRACKS_PER_ARTIST,
    _cap_per_artist,
    _listener,
    _ready_with_artists,
    _weights_of,
    user_vector,
)
from encore.recommend.training import FloatArray, top_k

logger = structlog.get_logger("encore.recommend.generated")

DISCOVER_WEEKLY = "discover_weekly"
DISCOVER_WEEKLY_SIZE = 30
DAILY_MIX_COUNT = 3
DAILY_MIX_SIZE = 30
DAILY_MIX_KNOWN_SHARE = 0.4
"""Share of a Daily Mix taken from tracks the listener already plays; the rest is new."""
TASTE_SEED_TRACKS = 50
"""A listener's taste clusters are found among this many of their top tracks."""


def daily_mix_slot(number: int) -> str:
    """The slot name of Daily Mix `number` (1-based)."""
    return f"daily_mix_{number}"


@dataclass(frozen=True)
class PlannedPlaylist:
    """One generated playlist's content before it is written."""

    slot: str
    name: str
    description: str
    track_ids: list[uuid.UUID]


def taste_clusters(unit_factors: FloatArray, clusters: int, iterations: int = 10) -> list[int]:
    """Spherical k-means of unit rows (first row = strongest taste): a cluster per row."""
    count = unit_factors.shape[0]
    clusters = max(1, min(clusters, count))
    # Farthest-point start from the top track: deterministic, and spreads centres over
    # distinct tastes instead of splitting the biggest one.
    centres = [0]
    for _ in range(1, clusters):
        nearest = (unit_factors @ unit_factors[centres].T).max(axis=1)
        centres.append(int(np.argmin(nearest)))
    centroids = unit_factors[centres].copy()
    labels = np.zeros(count, dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(unit_factors @ centroids.T, axis=1)
        for cluster in range(clusters):
            members = unit_factors[labels == cluster]
            if len(members):
                mean = members.mean(axis=0)
                centroids[cluster] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return [int(label) for label in labels]


def _interleave(known: Sequence[uuid.UUID], new: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    mixed: list[uuid.UUID] = []
    for index in range(max(len(known), len(new))):
        mixed += [*new[index : index + 1], *known[index : index + 1]]
    return mixed


async def _discover_weekly(
    db_session: AsyncSession,
    model: RecommendModel | None,
    rows: Sequence[Any],
    heard: set[uuid.UUID],
) -> PlannedPlaylist:
    picked: list[uuid.UUID] = []
    vector = user_vector(model, rows) if model is not None else None
    if model is not None and vector is not None:
        excluded = {model.item_index[t] for t in heard if t in model.item_index}
        best = model.top_item_rows(vector, DISCOVER_WEEKLY_SIZE * 10, excluded)
        ranked = [model.artifact.item_ids[i] for i in best]
        candidates = await _ready_with_artists(db_session, ranked)
        picked = _cap_per_artist(candidates, DISCOVER_WEEKLY_SIZE, MAX_TRACKS_PER_ARTIST)
    if len(picked) < DISCOVER_WEEKLY_SIZE:
        popular = await catalog_service.list_popular_ready_tracks(
            db_session=db_session,
            limit=DISCOVER_WEEKLY_SIZE * 5,
            exclude=heard | set(picked),
        )
        picked += _cap_per_artist(
            popular, DISCOVER_WEEKLY_SIZE - len(picked), MAX_TRACKS_PER_ARTIST
        )
    return PlannedPlaylist(
        slot=DISCOVER_WEEKLY,
        name="Discover Weekly",
        description="Tracks you have never played, picked for you. Refreshed on schedule.",
        track_ids=picked[:DISCOVER_WEEKLY_SIZE],
    )


def _mix(number: int, known: Sequence[uuid.UUID], new: Sequence[uuid.UUID]) -> PlannedPlaylist:
    known_count = min(len(known), int(DAILY_MIX_SIZE * DAILY_MIX_KNOWN_SHARE))
    new_part = list(new)[: DAILY_MIX_SIZE - known_count]
    return PlannedPlaylist(
        slot=daily_mix_slot(number),
        name=f"Daily Mix {number}",
        description="Tracks you love and new ones in the same vein. Refreshed on schedule.",
        track_ids=_interleave(list(known)[:known_count], new_part)[:DAILY_MIX_SIZE],
    )


async def _model_mixes(
    db_session: AsyncSession,
    model: RecommendModel,
    top: Sequence[uuid.UUID],
    heard: set[uuid.UUID],
) -> list[PlannedPlaylist]:
    seeds = [t for t in top if t in model.item_index][:TASTE_SEED_TRACKS]
    if not seeds:
        return []
    unit = model.unit_item_factors[[model.item_index[t] for t in seeds]]
    # About five tracks per taste at least, so a mix is not one song and its echoes.
    labels = taste_clusters(unit, min(DAILY_MIX_COUNT, max(1, len(seeds) // 5)))
    members: dict[int, list[uuid.UUID]] = defaultdict(list)
    for track, label in zip(seeds, labels, strict=True):
        members[label].append(track)
    # Strongest taste first: the cluster holding more of the listener's top tracks.
    ordered = sorted(members.values(), key=lambda tracks: (-len(tracks), seeds.index(tracks[0])))
    mixes = []
    for number, tracks in enumerate(ordered, start=1):
        centroid = unit[[seeds.index(t) for t in tracks]].mean(axis=0)
        scores = model.unit_item_factors @ centroid
        for track in heard:
            index = model.item_index.get(track)
            if index is not None:
                scores[index] = -np.inf
        ranked = [
            model.artifact.item_ids[i]
            for i in top_k(scores, DAILY_MIX_SIZE * 5)
            if np.isfinite(scores[i])
        ]
        new = await _ready_with_artists(db_session, ranked)
        known = [t for t, _ in await _ready_with_artists(db_session, tracks)]
        mixes.append(
            _mix(number, known, _cap_per_artist(new, DAILY_MIX_SIZE, MAX_TRACKS_PER_ARTIST + 1))
        )
    return [mix for mix in mixes if mix.track_ids]


async def _artist_mixes(
    db_session: AsyncSession, top: Sequence[uuid.UUID], heard: set[uuid.UUID]
) -> list[PlannedPlaylist]:
    ready = await _ready_with_artists(db_session, top)
    by_artist: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for track, artist in ready:
        if artist is not None:
            by_artist[artist].append(track)
    mixes = []
    for number, artist in enumerate(list(by_artist)[:DAILY_MIX_COUNT], start=1):
        new = await catalog_service.list_popular_ready_tracks(
            db_session=db_session, limit=DAILY_MIX_SIZE, artist_ids={artist}, exclude=heard
        )
        genres = await catalog_service.get_artist_genre_ids(
            db_session=db_session, artist_ids={artist}
        )
        if genres:
            new += await catalog_service.list_popular_ready_tracks(
                db_session=db_session,
                limit=DAILY_MIX_SIZE,
                genre_ids=genres,
                exclude=heard | {t for t, _ in new},
            )
        mixes.append(_mix(number, by_artist[artist], [t for t, _ in new]))
    return mixes


async def plan_playlists(
    *, db_session: AsyncSession, model: RecommendModel | None, user_id: uuid.UUID
) -> list[PlannedPlaylist]:
    """What a listener's generated playlists hold now: Discover Weekly, then the Daily Mixes."""
    listener = await _listener(db_session, user_id, recent_days=0)
    rows = listener.rows
    # Anything the listener touched counts as heard: Discover Weekly is only what is new.
    heard = {r.track_id for r in rows}
    weights = _weights_of(rows) if rows else np.zeros(0, dtype=np.float32)
    top = [rows[i].track_id for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
    planned = [await _discover_weekly(db_session, model, rows, heard)]
    if model is not None and any(t in model.item_index for t in top):
        planned += await _model_mixes(db_session, model, top, heard)
    else:
        planned += await _artist_mixes(db_session, top, heard)
    return planned


async def refresh_listener_playlists(
    *,
    db_session: AsyncSession,
    model: RecommendModel | None,
    user_id: uuid.UUID,
    system_user_id: uuid.UUID,
) -> dict[str, uuid.UUID]:
    """Write a listener's generated playlists (same ids as before); slot → playlist id."""
    planned = await plan_playlists(db_session=db_session, model=model, user_id=user_id)
    existing = {
        row.slot: row
        for row in (
            await db_session.scalars(
                select(GeneratedPlaylist).where(GeneratedPlaylist.user_id == user_id)
            )
        ).all()
    }
    now = utcnow()
    result: dict[str, uuid.UUID] = {}
    for plan in planned:
        row = existing.pop(plan.slot, None)
        if row is None:
            playlist_id = await library_service.create_system_playlist(
                db_session=db_session,
                owner_id=system_user_id,
                listener_id=user_id,
                name=plan.name,
                description=plan.description,
            )
            row = GeneratedPlaylist(
                user_id=user_id, slot=plan.slot, playlist_id=playlist_id, refreshed_at=now
            )
            db_session.add(row)
        await library_service.replace_system_playlist_tracks(
            db_session=db_session,
            playlist_id=row.playlist_id,
            owner_id=system_user_id,
            track_ids=plan.track_ids,
        )
        row.refreshed_at = now
        result[plan.slot] = row.playlist_id
    for gone in existing.values():
        # A taste that faded: its Daily Mix goes (the row goes with it, by cascade).
        await library_service.delete_system_playlist(
            db_session=db_session, playlist_id=gone.playlist_id, owner_id=system_user_id
        )
    await db_session.flush()
    return result


async def listeners_with_history(*, db_session: AsyncSession) -> list[uuid.UUID]:
    """Every listener with at least one interaction, in id order."""
    return list(
        (
            await db_session.scalars(
                select(TrackInteraction.user_id).distinct().order_by(TrackInteraction.user_id)
            )
        ).all()
    )


async def refresh_generated_playlists(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    model: RecommendModel | None,
    user_ids: Sequence[uuid.UUID] | None = None,
) -> int:
    """Refresh the generated playlists of these listeners (default: all with history), each in
    its own transaction; how many listeners were refreshed."""
    async with session_factory() as db_session:
        system_user_id = await auth_service.ensure_system_user(db_session=db_session)
        targets = (
            list(user_ids)
            if user_ids is not None
            else await listeners_with_history(db_session=db_session)
        )
        await db_session.commit()
    refreshed = 0
    for user_id in targets:
        async with session_factory() as db_session:
            if not await auth_service.user_is_active(db_session=db_session, user_id=user_id):
                continue
            await refresh_listener_playlists(
                db_session=db_session, model=model, user_id=user_id, system_user_id=system_user_id
            )
            await db_session.commit()
        refreshed += 1
    logger.info(
        "recommend_playlists_refreshed",
        listeners=refreshed,
        model_version=model.version if model else None,
    )
    return refreshed

"""Recommendations: interactions from the event log, training runs, and serving.

Serving never needs a model: before the first training (or for a listener or track the model
has not seen) answers fall back to popularity (`tracks.stream_count`) and to artist and genre
neighbours. Every answer holds only ready tracks, which any listener may play.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import case, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from encore.bus.event_log import LoggedEvent, first_seen_events
from encore.catalog import service as catalog_service
from encore.catalog.schemas import TrackRead
from encore.config import Settings
from encore.db import delete_recorded_before, dialect_insert, utcnow
from encore.events.schemas import PLAY_END_EVENT_TYPES, STREAM_THRESHOLD_MS, EventType
from encore.pagination import decode_cursor, encode_cursor
from encore.problems import InvalidInput, NotFound
from encore.recommend.model_store import (
    ModelArtifact,
    RecommendModel,
    new_version,
    save_artifact,
)
from encore.recommend.models import (
    RadioFeedback,
    RadioStation,
    RadioStationTrack,
    RecommendAppliedEvent,
    TrackInteraction,
)
from encore.recommend.schemas import (
    RadioBatch,
    RecommendationSource,
    RecommendedTracks,
    RelatedArtists,
)
from encore.recommend.training import (
    FactorizationEngine,
    FloatArray,
    ImplicitEngine,
    TrainingParameters,
    confidence_matrix,
    fold_in_user,
    group_factors,
    interaction_weights,
    popularity_scores,
    ranking_metrics,
    top_k,
    user_item_matrix,
)
from encore.storage import BlobStore

RADIO_CONTEXT = "radio"
MAX_TRACKS_PER_ARTIST = 2
"""At most this many tracks of one artist in a page of recommendations."""
RADIO_ARTIST_SPACING = 3
"""The same artist at most once in any this many consecutive radio tracks."""
MAX_USER_INTERACTIONS = 5000
"""Fold-in reads at most this many of a listener's most recent interactions."""

# Exploration picks need variety, not unpredictability.
_exploration = np.random.default_rng()


# --- the recommend consumer ---------------------------------------------------------------


async def prune_applied_events(
    *, db_session: AsyncSession, older_than: datetime, chunk: int = 10_000
) -> int:
    """Forget applied events recorded before `older_than` (no copy of them can come again:
    the events domain decides when); rows deleted, in committed chunks."""
    return await delete_recorded_before(
        db_session,
        keys=(RecommendAppliedEvent.user_id, RecommendAppliedEvent.event_id),
        recorded_at=RecommendAppliedEvent.applied_at,
        older_than=older_than,
        chunk=chunk,
    )


@dataclass
class _Increment:
    streams: int = 0
    ms_played: int = 0
    played_share: float = 0.0
    early_skips: int = 0
    like_balance: int = 0
    playlist_adds: int = 0
    last_played_at: datetime | None = None


def _station_id(body: dict[str, Any]) -> uuid.UUID | None:
    context = body.get("context") or {}
    if context.get("type") != RADIO_CONTEXT or not context.get("id"):
        return None
    try:
        return uuid.UUID(str(context["id"]))
    except ValueError:
        return None


async def apply_recommend_events(batch: Sequence[LoggedEvent], db_session: AsyncSession) -> int:
    """The recommend consumer: per-listener track interactions and radio feedback, each event
    once; the number of events that changed something."""
    fresh = await first_seen_events(
        db_session, batch, record=RecommendAppliedEvent, recorded_at="applied_at"
    )
    track_ids = set()
    for event in fresh:
        if event.body.get("track_id"):
            track_ids.add(uuid.UUID(event.body["track_id"]))
    facts = await catalog_service.get_track_stream_facts(db_session=db_session, track_ids=track_ids)
    increments: dict[tuple[uuid.UUID, uuid.UUID], _Increment] = defaultdict(_Increment)
    feedback: dict[tuple[uuid.UUID, uuid.UUID], list[int]] = defaultdict(lambda: [0, 0])
    applied = 0
    for event in fresh:
        body = event.body
        raw_track = body.get("track_id")
        if not raw_track:
            continue
        track_id = uuid.UUID(raw_track)
        if track_id not in facts:
            continue  # unknown or deleted track: nothing to learn
        kind = body.get("type")
        change = increments[(event.user_id, track_id)]
        station = _station_id(body)
        if kind in PLAY_END_EVENT_TYPES:
            ms_played = int(body.get("ms_played") or 0)
            duration = max(facts[track_id].duration_ms, 1)
            occurred = datetime.fromisoformat(body["occurred_at"])
            change.ms_played += ms_played
            change.played_share += min(ms_played / duration, 1.0)
            if ms_played >= STREAM_THRESHOLD_MS:
                change.streams += 1
            else:
                change.early_skips += 1
                if station is not None:
                    feedback[(station, track_id)][0] += 1
            if change.last_played_at is None or occurred > change.last_played_at:
                change.last_played_at = occurred
        elif kind == EventType.like:
            change.like_balance += 1
            if station is not None:
                feedback[(station, track_id)][1] += 1
        elif kind == EventType.unlike:
            change.like_balance -= 1
        elif kind == EventType.playlist_add:
            change.playlist_adds += 1
        else:
            continue
        applied += 1
    await _upsert_interactions(db_session, increments)
    await _upsert_feedback(db_session, feedback)
    return applied


async def _upsert_interactions(
    db_session: AsyncSession, increments: dict[tuple[uuid.UUID, uuid.UUID], _Increment]
) -> None:
    rows = [
        {
            "user_id": user_id,
            "track_id": track_id,
            "streams": change.streams,
            "ms_played": change.ms_played,
            "played_share": change.played_share,
            "early_skips": change.early_skips,
            "like_balance": change.like_balance,
            "playlist_adds": change.playlist_adds,
            "last_played_at": change.last_played_at,
            "updated_at": utcnow(),
        }
        for (user_id, track_id), change in sorted(increments.items(), key=lambda kv: kv[0])
        if change != _Increment()
    ]
    if not rows:
        return
    statement = dialect_insert(db_session)(TrackInteraction)
    table = TrackInteraction.__table__
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["user_id", "track_id"],
        set_={
            **{
                column: table.c[column] + excluded[column]
                for column in (
                    "streams",
                    "ms_played",
                    "played_share",
                    "early_skips",
                    "like_balance",
                    "playlist_adds",
                )
            },
            "last_played_at": case(
                (
                    or_(
                        table.c.last_played_at.is_(None),
                        excluded.last_played_at > table.c.last_played_at,
                    ),
                    excluded.last_played_at,
                ),
                else_=table.c.last_played_at,
            ),
            "updated_at": excluded.updated_at,
        },
    )
    await db_session.execute(statement, rows)


async def _upsert_feedback(
    db_session: AsyncSession, feedback: dict[tuple[uuid.UUID, uuid.UUID], list[int]]
) -> None:
    if not feedback:
        return
    statement = dialect_insert(db_session)(RadioFeedback)
    table = RadioFeedback.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["station_id", "track_id"],
        set_={
            "skips": table.c.skips + statement.excluded.skips,
            "likes": table.c.likes + statement.excluded.likes,
        },
    )
    rows = [
        {"station_id": station, "track_id": track, "skips": skips, "likes": likes}
        for (station, track), (skips, likes) in sorted(feedback.items())
    ]
    await db_session.execute(statement, rows)


# --- training -----------------------------------------------------------------------------


def parameters_from_settings(settings: Settings) -> TrainingParameters:
    """Training parameters as configured."""
    return TrainingParameters(
        factors=settings.recommend_factors,
        iterations=settings.recommend_iterations,
        regularization=settings.recommend_regularization,
    )


def _weights_of(rows: Sequence[Any]) -> FloatArray:
    return interaction_weights(
        streams=np.array([r.streams for r in rows], dtype=np.float32),
        played_share=np.array([r.played_share for r in rows], dtype=np.float32),
        like_balance=np.array([r.like_balance for r in rows], dtype=np.float32),
        playlist_adds=np.array([r.playlist_adds for r in rows], dtype=np.float32),
        early_skips=np.array([r.early_skips for r in rows], dtype=np.float32),
    )


@dataclass
class TrainingData:
    """Interactions of the window as index arrays, with the ids behind the indices."""

    user_ids: list[uuid.UUID]
    item_ids: list[uuid.UUID]
    users: np.ndarray[Any, Any]
    items: np.ndarray[Any, Any]
    weights: FloatArray
    played_at: np.ndarray[Any, Any]  # seconds since the epoch; 0 when never played


async def load_training_data(*, db_session: AsyncSession, since: datetime) -> TrainingData:
    """Every interaction updated since `since`, indexed for a matrix."""
    rows = (
        await db_session.execute(
            select(
                TrackInteraction.user_id,
                TrackInteraction.track_id,
                TrackInteraction.streams,
                TrackInteraction.played_share,
                TrackInteraction.like_balance,
                TrackInteraction.playlist_adds,
                TrackInteraction.early_skips,
                TrackInteraction.last_played_at,
            ).where(TrackInteraction.updated_at >= since)
        )
    ).all()
    user_index: dict[uuid.UUID, int] = {}
    item_index: dict[uuid.UUID, int] = {}
    users = np.array([user_index.setdefault(r.user_id, len(user_index)) for r in rows], np.int64)
    items = np.array([item_index.setdefault(r.track_id, len(item_index)) for r in rows], np.int64)
    played = np.array(
        [r.last_played_at.timestamp() if r.last_played_at else 0.0 for r in rows], np.float64
    )
    return TrainingData(
        user_ids=list(user_index),
        item_ids=list(item_index),
        users=users,
        items=items,
        weights=_weights_of(rows),
        played_at=played,
    )


def time_holdout_metrics(
    data: TrainingData,
    parameters: TrainingParameters,
    share: float = 0.2,
    *,
    engine: FactorizationEngine | None = None,
) -> dict[str, Any]:
    """Hold out each listener's latest plays, train on the rest (with `engine`, implicit when
    None): precision@10 and NDCG@10."""
    shape = (len(data.user_ids), len(data.item_ids))
    positive = data.weights > 0
    test_mask = np.zeros(len(data.users), dtype=bool)
    order = np.lexsort((data.played_at, data.users))
    boundaries = np.flatnonzero(np.diff(data.users[order])) + 1
    for group in np.split(order, boundaries):
        group = group[positive[group]]
        if len(group) < 5:
            continue
        held = max(1, int(len(group) * share))
        test_mask[group[-held:]] = True
    if not test_mask.any():
        return {"holdout": "time", "users": 0}
    train = user_item_matrix(
        data.users[~test_mask], data.items[~test_mask], data.weights[~test_mask], shape
    )
    held_out: dict[int, set[int]] = defaultdict(set)
    for user, item in zip(data.users[test_mask], data.items[test_mask], strict=True):
        held_out[int(user)].add(int(item))
    confidence, _ = confidence_matrix(train, None, parameters)
    user_factors, item_factors = (engine or ImplicitEngine()).factorize(confidence, parameters)
    precision, ndcg = ranking_metrics(
        score_users=lambda users: user_factors[users] @ item_factors.T,
        train=train,
        held_out=held_out,
    )
    popularity = popularity_scores(train)
    pop_precision, pop_ndcg = ranking_metrics(
        score_users=lambda users: np.tile(popularity, (len(users), 1)),
        train=train,
        held_out=held_out,
    )
    return {
        "holdout": "time",
        "users": len(held_out),
        "precision_at_10": precision,
        "ndcg_at_10": ndcg,
        "popularity_precision_at_10": pop_precision,
        "popularity_ndcg_at_10": pop_ndcg,
    }


def build_artifact(
    data: TrainingData,
    *,
    item_artists: dict[uuid.UUID, uuid.UUID | None],
    parameters: TrainingParameters,
    window_start: datetime,
    created_at: datetime,
    evaluate: bool = True,
    engine: FactorizationEngine | None = None,
) -> ModelArtifact:
    """Train on the data with `engine` (implicit when None; blocking: call it in a thread) and
    package the model."""
    import time

    engine = engine or ImplicitEngine()
    started = time.perf_counter()
    shape = (len(data.user_ids), len(data.item_ids))
    weights = user_item_matrix(data.users, data.items, data.weights, shape)
    confidence, stats = confidence_matrix(weights, None, parameters)
    user_factors, item_factors = engine.factorize(confidence, parameters)
    artist_ids = sorted({a for a in item_artists.values() if a is not None})
    artist_row = {artist: row for row, artist in enumerate(artist_ids)}
    item_artist = np.array(
        [artist_row.get(item_artists.get(item) or uuid.UUID(int=0), -1) for item in data.item_ids],
        dtype=np.int64,
    )
    artist_factors = group_factors(item_factors, item_artist, len(artist_ids))
    trained_seconds = time.perf_counter() - started
    metrics = time_holdout_metrics(data, parameters, engine=engine) if evaluate else {}
    return ModelArtifact(
        version=new_version(created_at),
        metadata={
            "created_at": created_at.isoformat(),
            "engine": engine.name,
            "window": {"start": window_start.isoformat(), "end": created_at.isoformat()},
            "parameters": parameters.as_dict(),
            "bm25_average_length": stats.average_length,
            "users": len(data.user_ids),
            "items": len(data.item_ids),
            "interactions": len(data.users),
            "training_seconds": round(trained_seconds, 3),
            "metrics": metrics,
        },
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        artist_ids=artist_ids,
        user_factors=user_factors,
        item_factors=item_factors,
        artist_factors=artist_factors,
        item_idf=stats.item_idf,
        item_artist=item_artist,
    )


@contextmanager
def open_training_engine(settings: Settings) -> Iterator[FactorizationEngine]:
    """The configured engine, ready for one training run (for spark: a Spark session, stopped
    afterwards unless this process already ran one)."""
    if settings.recommend_engine == "spark":
        # pyspark is an optional extra: spark_training imports it only when a session starts.
        from encore.recommend import spark_training

        with spark_training.spark_engine(master=settings.recommend_spark_master) as engine:
            yield engine
    else:
        yield ImplicitEngine()


def _train_with_engine(
    settings: Settings, train: Callable[[FactorizationEngine], ModelArtifact]
) -> ModelArtifact:
    with open_training_engine(settings) as engine:
        return train(engine)


async def train_model(
    *, db_session: AsyncSession, store: BlobStore, settings: Settings, evaluate: bool = True
) -> ModelArtifact | None:
    """Train on the window's interactions with the configured engine and publish the model;
    None when there are none."""
    now = utcnow()
    since = now - timedelta(days=settings.recommend_window_days)
    data = await load_training_data(db_session=db_session, since=since)
    if len(data.users) == 0:
        return None
    facts = await catalog_service.get_track_stream_facts(
        db_session=db_session, track_ids=data.item_ids
    )
    item_artists = {
        track: (fact.primary_artist_ids[0] if fact.primary_artist_ids else None)
        for track, fact in facts.items()
    }
    parameters = parameters_from_settings(settings)

    def train(opened: FactorizationEngine) -> ModelArtifact:
        return build_artifact(
            data,
            item_artists=item_artists,
            parameters=parameters,
            window_start=since,
            created_at=now,
            evaluate=evaluate,
            engine=opened,
        )

    artifact = await asyncio.to_thread(_train_with_engine, settings, train)
    await save_artifact(store, artifact)
    return artifact


# --- serving --------------------------------------------------------------------------------


@dataclass
class _Listener:
    """A listener's interactions as serving needs them."""

    rows: list[Any] = field(default_factory=list)
    recent: set[uuid.UUID] = field(default_factory=set)


async def _listener(db_session: AsyncSession, user_id: uuid.UUID, recent_days: int) -> _Listener:
    rows = (
        await db_session.execute(
            select(
                TrackInteraction.track_id,
                TrackInteraction.streams,
                TrackInteraction.played_share,
                TrackInteraction.like_balance,
                TrackInteraction.playlist_adds,
                TrackInteraction.early_skips,
                TrackInteraction.last_played_at,
            )
            .where(TrackInteraction.user_id == user_id)
            .order_by(TrackInteraction.updated_at.desc())
            .limit(MAX_USER_INTERACTIONS)
        )
    ).all()
    since = utcnow() - timedelta(days=recent_days)
    recent = {
        r.track_id for r in rows if r.last_played_at is not None and r.last_played_at >= since
    }
    return _Listener(rows=list(rows), recent=recent)


def user_vector(model: RecommendModel, rows: Sequence[Any]) -> FloatArray | None:
    """The listener's factors folded in from their interactions now, or None if none is known."""
    known = [(model.item_index[r.track_id], r) for r in rows if r.track_id in model.item_index]
    if not known:
        return None
    weights = _weights_of([r for _, r in known])
    columns = np.array([index for index, _ in known], dtype=np.int64)
    row = user_item_matrix(
        np.zeros(len(columns), dtype=np.int64), columns, weights, (1, len(model.item_index))
    )
    confidence, _ = confidence_matrix(row, model.bm25, model.parameters)
    if confidence.nnz == 0:
        return None
    with model.solver_lock:
        return fold_in_user(
            item_factors=model.artifact.item_factors,
            confidence_row=confidence,
            parameters=model.parameters,
            solver=model.solver,
        )


def _ranked_ids(model: RecommendModel, scores: np.ndarray[Any, Any], count: int) -> list[uuid.UUID]:
    item_ids = model.artifact.item_ids
    return [item_ids[i] for i in top_k(scores, count) if np.isfinite(scores[i])]


async def _tracks_in_order(
    db_session: AsyncSession, track_ids: Sequence[uuid.UUID]
) -> list[TrackRead]:
    reads = await catalog_service.get_tracks(db_session=db_session, track_ids=set(track_ids))
    return [reads[t] for t in track_ids if t in reads]


async def _ready_with_artists(
    db_session: AsyncSession, track_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    ready = await catalog_service.get_ready_track_artists(
        db_session=db_session, track_ids=set(track_ids)
    )
    return [(t, ready[t]) for t in dict.fromkeys(track_ids) if t in ready]


def _cap_per_artist(
    candidates: Iterable[tuple[uuid.UUID, uuid.UUID | None]], limit: int, per_artist: int
) -> list[uuid.UUID]:
    picked: list[uuid.UUID] = []
    per: dict[uuid.UUID | None, int] = defaultdict(int)
    for track, artist in candidates:
        if artist is not None and per[artist] >= per_artist:
            continue
        per[artist] += 1
        picked.append(track)
        if len(picked) == limit:
            break
    return picked


async def recommend_for_user(
    *,
    db_session: AsyncSession,
    model: RecommendModel | None,
    settings: Settings,
    user_id: uuid.UUID,
    limit: int,
) -> RecommendedTracks:
    """Tracks for a listener: nothing recently played, ≤ 2 per artist, ready, some exploration."""
    listener = await _listener(db_session, user_id, settings.recommend_exclude_played_days)
    vector = user_vector(model, listener.rows) if model is not None else None
    explore = int(limit * settings.recommend_exploration_share)
    if model is not None and vector is not None:
        recent = {model.item_index[t] for t in listener.recent if t in model.item_index}
        rows = model.top_item_rows(vector, limit * 20 + 50, recent)
        ranked = [model.artifact.item_ids[i] for i in rows]
        head, tail = ranked[: limit * 5 + 20], ranked[limit * 5 + 20 :]
        # Exploration: a few tracks from further down the listener's ranking, so the model
        # hears about tracks it is unsure of instead of only confirming what it knows.
        exploring = [tail[i] for i in _exploration.permutation(len(tail))[:explore]]
        main = await _ready_with_artists(db_session, head)
        extra = await _ready_with_artists(db_session, exploring)
        picked = _cap_per_artist(main, limit - len(extra), MAX_TRACKS_PER_ARTIST)
        counts: dict[uuid.UUID | None, int] = defaultdict(int)
        for _track, artist in [c for c in main if c[0] in set(picked)]:
            counts[artist] += 1
        for track, artist in extra:
            if counts[artist] < MAX_TRACKS_PER_ARTIST and track not in picked:
                counts[artist] += 1
                picked.insert(int(_exploration.integers(len(picked) + 1)), track)
        if len(picked) < limit:
            more = await catalog_service.list_popular_ready_tracks(
                db_session=db_session, limit=limit * 5 + 50, exclude=listener.recent | set(picked)
            )
            picked += _cap_per_artist(
                [(t, a) for t, a in more if counts[a] < MAX_TRACKS_PER_ARTIST],
                limit - len(picked),
                MAX_TRACKS_PER_ARTIST,
            )
        return RecommendedTracks(
            items=await _tracks_in_order(db_session, picked[:limit]),
            source="model",
            model_version=model.version,
        )
    popular = await catalog_service.list_popular_ready_tracks(
        db_session=db_session, limit=limit * 5 + 50, exclude=listener.recent
    )
    picked = _cap_per_artist(popular, limit, MAX_TRACKS_PER_ARTIST)
    return RecommendedTracks(
        items=await _tracks_in_order(db_session, picked),
        source="popularity",
        model_version=model.version if model else None,
    )


async def _cold_track_vector(
    db_session: AsyncSession, model: RecommendModel, track: TrackRead
) -> FloatArray | None:
    """Where a track without plays sits: among its artists' tracks, else its genres'."""
    artist_rows = [model.artist_index[a.id] for a in track.artists if a.id in model.artist_index]
    if artist_rows:
        vector: FloatArray = model.artifact.artist_factors[artist_rows].mean(axis=0)
        return vector
    genres = await catalog_service.get_artist_genre_ids(
        db_session=db_session, artist_ids={a.id for a in track.artists}
    )
    if not genres:
        return None
    neighbours = await catalog_service.list_popular_ready_tracks(
        db_session=db_session, limit=200, genre_ids=genres
    )
    rows = [model.item_index[t] for t, _ in neighbours if t in model.item_index]
    if not rows:
        return None
    genre_vector: FloatArray = model.unit_item_factors[rows].mean(axis=0)
    return genre_vector


async def similar_tracks(
    *, db_session: AsyncSession, model: RecommendModel | None, track_id: uuid.UUID, limit: int
) -> RecommendedTracks:
    """Tracks like this one: nearest in the model, else by its artists and genres."""
    track = (await catalog_service.get_tracks(db_session=db_session, track_ids={track_id})).get(
        track_id
    )
    if track is None:
        raise NotFound(f"no track with id {track_id}")
    vector: FloatArray | None = None
    if model is not None:
        index = model.item_index.get(track_id)
        if index is not None:
            vector = model.unit_item_factors[index]
        else:
            vector = await _cold_track_vector(db_session, model, track)
    if model is not None and vector is not None:
        scores = model.unit_item_factors @ vector
        ranked = [t for t in _ranked_ids(model, scores, limit * 4 + 20) if t != track_id]
        picked = [t for t, _ in await _ready_with_artists(db_session, ranked)][:limit]
        return RecommendedTracks(
            items=await _tracks_in_order(db_session, picked),
            source="model",
            model_version=model.version,
        )
    artists = {a.id for a in track.artists}
    same_artist = await catalog_service.list_popular_ready_tracks(
        db_session=db_session, limit=limit, artist_ids=artists, exclude={track_id}
    )
    genres = await catalog_service.get_artist_genre_ids(db_session=db_session, artist_ids=artists)
    same_genre = await catalog_service.list_popular_ready_tracks(
        db_session=db_session,
        limit=limit,
        genre_ids=genres,
        exclude={track_id} | {t for t, _ in same_artist},
    )
    picked = [t for t, _ in same_artist + same_genre][:limit]
    return RecommendedTracks(
        items=await _tracks_in_order(db_session, picked),
        source="popularity",
        model_version=model.version if model else None,
    )


async def related_artists(
    *, db_session: AsyncSession, model: RecommendModel | None, artist_id: uuid.UUID, limit: int
) -> RelatedArtists:
    """Artists like this one: nearest in the model, else popular artists of its genres."""
    if artist_id not in await catalog_service.get_artists(
        db_session=db_session, artist_ids={artist_id}
    ):
        raise NotFound(f"no artist with id {artist_id}")
    if model is not None and artist_id in model.artist_index:
        factors = model.artifact.artist_factors
        scores = factors @ factors[model.artist_index[artist_id]]
        ranked = [
            model.artifact.artist_ids[i] for i in top_k(scores, limit + 1) if np.isfinite(scores[i])
        ]
        ids = [a for a in ranked if a != artist_id][:limit]
        source: RecommendationSource = "model"
    else:
        genres = await catalog_service.get_artist_genre_ids(
            db_session=db_session, artist_ids={artist_id}
        )
        ids = await catalog_service.list_popular_artists(
            db_session=db_session, limit=limit, genre_ids=genres or None, exclude={artist_id}
        )
        source = "popularity"
    reads = await catalog_service.get_artists(db_session=db_session, artist_ids=set(ids))
    return RelatedArtists(
        items=[reads[a] for a in ids if a in reads],
        source=source,
        model_version=model.version if model else None,
    )


# --- radio ----------------------------------------------------------------------------------


async def _open_station(
    db_session: AsyncSession,
    *,
    user_id: uuid.UUID,
    seed_track: uuid.UUID | None,
    seed_artist: uuid.UUID | None,
    seed_genre: uuid.UUID | None,
) -> RadioStation:
    seeds = [
        (kind, value)
        for kind, value in (("track", seed_track), ("artist", seed_artist), ("genre", seed_genre))
        if value is not None
    ]
    if len(seeds) != 1:
        raise InvalidInput(
            "name exactly one of seed_track, seed_artist and seed_genre, or pass a cursor",
            extra={"errors": [{"field": "query", "message": "exactly one seed"}]},
        )
    kind, seed = seeds[0]
    if kind == "genre":
        exists = await catalog_service.genre_exists(db_session=db_session, genre_id=seed)
    else:
        exists = bool(
            await catalog_service.get_existing_ids(db_session=db_session, kind=kind, ids={seed})
        )
    if not exists:
        raise NotFound(f"no {kind} with id {seed}")
    station = RadioStation(user_id=user_id, seed_kind=kind, seed_id=seed, served=0)
    db_session.add(station)
    await db_session.flush()
    return station


async def _resume_station(
    db_session: AsyncSession, user_id: uuid.UUID, cursor: str
) -> RadioStation:
    values = decode_cursor(cursor, {"station"})
    try:
        station_id = uuid.UUID(str(values["station"]))
    except ValueError:
        raise InvalidInput(
            "cursor is not valid: pass the next_cursor of a previous batch unchanged",
            extra={"errors": [{"field": "query.cursor", "message": "not a cursor"}]},
        ) from None
    station = await db_session.get(RadioStation, station_id, with_for_update=False)
    if station is None or station.user_id != user_id:
        # Another listener's station is not disclosed.
        raise NotFound(f"no radio station {station_id}")
    return station


async def _seed_vector(
    db_session: AsyncSession, model: RecommendModel, station: RadioStation
) -> FloatArray | None:
    if station.seed_kind == "track":
        index = model.item_index.get(station.seed_id)
        if index is not None:
            seed: FloatArray = model.unit_item_factors[index]
            return seed
        track = (
            await catalog_service.get_tracks(db_session=db_session, track_ids={station.seed_id})
        ).get(station.seed_id)
        return await _cold_track_vector(db_session, model, track) if track else None
    if station.seed_kind == "artist":
        row = model.artist_index.get(station.seed_id)
        if row is not None:
            artist_seed: FloatArray = model.artifact.artist_factors[row]
            return artist_seed
        genres = await catalog_service.get_artist_genre_ids(
            db_session=db_session, artist_ids={station.seed_id}
        )
    else:
        genres = {station.seed_id}
    if not genres:
        return None
    tracks = await catalog_service.list_popular_ready_tracks(
        db_session=db_session, limit=200, genre_ids=genres
    )
    rows = [model.item_index[t] for t, _ in tracks if t in model.item_index]
    if not rows:
        return None
    vector: FloatArray = model.unit_item_factors[rows].mean(axis=0)
    return vector


async def _seed_popular(
    db_session: AsyncSession, station: RadioStation, exclude: set[uuid.UUID], count: int
) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    """Popularity candidates near the seed: its artist(s), then its genres, then anything."""
    found: list[tuple[uuid.UUID, uuid.UUID | None]] = []
    artists: set[uuid.UUID] = set()
    genres: set[uuid.UUID] = set()
    if station.seed_kind == "track":
        track = (
            await catalog_service.get_tracks(db_session=db_session, track_ids={station.seed_id})
        ).get(station.seed_id)
        artists = {a.id for a in track.artists} if track else set()
    elif station.seed_kind == "artist":
        artists = {station.seed_id}
    else:
        genres = {station.seed_id}
    if artists:
        found += await catalog_service.list_popular_ready_tracks(
            db_session=db_session, limit=count, artist_ids=artists, exclude=exclude
        )
        genres = await catalog_service.get_artist_genre_ids(
            db_session=db_session, artist_ids=artists
        )
    if genres:
        found += await catalog_service.list_popular_ready_tracks(
            db_session=db_session,
            limit=count,
            genre_ids=genres,
            exclude=exclude | {t for t, _ in found},
        )
    found += await catalog_service.list_popular_ready_tracks(
        db_session=db_session, limit=count, exclude=exclude | {t for t, _ in found}
    )
    return found


def pick_with_spacing(
    candidates: Sequence[tuple[uuid.UUID, uuid.UUID | None]],
    *,
    recent_artists: Sequence[uuid.UUID | None],
    served: set[uuid.UUID],
    limit: int,
    spacing: int = RADIO_ARTIST_SPACING,
) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    """Best candidates first, never a served track, and an artist at most once per `spacing`."""
    window = list(recent_artists)[-(spacing - 1) :] if spacing > 1 else []
    remaining = [c for c in dict.fromkeys(candidates) if c[0] not in served]
    picked: list[tuple[uuid.UUID, uuid.UUID | None]] = []
    taken: set[uuid.UUID] = set()
    while len(picked) < limit:
        choice = next(
            (c for c in remaining if c[0] not in taken and (c[1] is None or c[1] not in window)),
            None,
        )
        if choice is None:
            break
        picked.append(choice)
        taken.add(choice[0])
        if spacing > 1:
            window = [*window, choice[1]][-(spacing - 1) :]
    return picked


async def radio_batch(
    *,
    db_session: AsyncSession,
    model: RecommendModel | None,
    user_id: uuid.UUID,
    limit: int,
    cursor: str | None = None,
    seed_track: uuid.UUID | None = None,
    seed_artist: uuid.UUID | None = None,
    seed_genre: uuid.UUID | None = None,
) -> RadioBatch:
    """The next tracks of a station (a new one from a seed, or the cursor's)."""
    if cursor is not None:
        station = await _resume_station(db_session, user_id, cursor)
    else:
        station = await _open_station(
            db_session,
            user_id=user_id,
            seed_track=seed_track,
            seed_artist=seed_artist,
            seed_genre=seed_genre,
        )
    history = (
        await db_session.execute(
            select(RadioStationTrack.track_id, RadioStationTrack.artist_id)
            .where(RadioStationTrack.station_id == station.id)
            .order_by(RadioStationTrack.position)
        )
    ).all()
    served = {t for t, _ in history}
    if station.seed_kind == "track":
        served.add(station.seed_id)  # the seed itself is what the listener just heard
    recent_artists = [a for _, a in history[-(RADIO_ARTIST_SPACING - 1) :]]
    feedback = (
        await db_session.execute(
            select(RadioFeedback.track_id, RadioFeedback.skips, RadioFeedback.likes).where(
                RadioFeedback.station_id == station.id
            )
        )
    ).all()
    artist_of = dict(history)
    artist_of.update(
        await catalog_service.get_ready_track_artists(
            db_session=db_session, track_ids={t for t, _, _ in feedback} - set(artist_of)
        )
    )
    artist_steer: dict[uuid.UUID, float] = defaultdict(float)
    for track, skips, likes in feedback:
        artist = artist_of.get(track)
        if artist is not None:
            artist_steer[artist] += 0.3 * likes - 0.4 * skips
    candidates: list[tuple[uuid.UUID, uuid.UUID | None]] = []
    source: RecommendationSource = "popularity"
    vector = await _seed_vector(db_session, model, station) if model is not None else None
    if model is not None and vector is not None:
        source = "model"
        steer = vector.copy()
        for track, skips, likes in feedback:
            index = model.item_index.get(track)
            if index is not None:
                steer += model.unit_item_factors[index] * (0.5 * likes - 0.5 * skips)
        scores = model.unit_item_factors @ steer
        for artist, amount in artist_steer.items():
            scores[model.artifact.item_artist == model.artist_index.get(artist, -2)] += amount
        for track in served:
            index = model.item_index.get(track)
            if index is not None:
                scores[index] = -np.inf
        candidates = await _ready_with_artists(
            db_session, _ranked_ids(model, scores, limit * 10 + 100)
        )
    need = limit * 10 + 100
    if len(candidates) < need:
        candidates += await _seed_popular(
            db_session, station, served | {t for t, _ in candidates}, need
        )
    if artist_steer and source == "popularity":
        # Skipped artists sink, liked ones rise; the sort is stable, so popularity order holds
        # among equals.
        candidates.sort(key=lambda c: -artist_steer.get(c[1], 0.0) if c[1] else 0.0)
    picked = pick_with_spacing(
        candidates, recent_artists=recent_artists, served=served, limit=limit
    )
    db_session.add_all(
        RadioStationTrack(
            station_id=station.id, position=station.served + n, track_id=track, artist_id=artist
        )
        for n, (track, artist) in enumerate(picked)
    )
    station.served += len(picked)
    await db_session.flush()
    return RadioBatch(
        station_id=station.id,
        items=await _tracks_in_order(db_session, [t for t, _ in picked]),
        next_cursor=encode_cursor({"station": str(station.id)}),
        source=source,
    )

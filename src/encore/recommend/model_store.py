"""Model artifacts in the blob store, and the loaded model API processes serve from.

A model is a folder `models/recommend/<version>/` of `.npy` arrays (factors, BM25 idf, each
track's artist), `ids.json` (the UUIDs behind each row) and `metadata.json` (window,
parameters, metrics, created_at). `metadata.json` is written last: a folder without it is a
model still being written and is ignored. Versions sort by time, so the newest is the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import structlog
from implicit.als import AlternatingLeastSquares

from encore.recommend.ann import ItemIndex
from encore.recommend.training import (
    BM25Stats,
    FloatArray,
    IndexArray,
    TrainingParameters,
    fold_in_solver,
    normalized_rows,
    top_k,
)
from encore.storage import BlobNotFound, BlobStore

logger = structlog.get_logger("encore.recommend.models")

MODELS_PREFIX = "models/recommend/"
METADATA_FILE = "metadata.json"
DEFAULT_ANN_MIN_ITEMS = 200_000
"""Catalogs at least this big are served through the ANN index (0: never; exact scans only)."""
_ARRAYS = ("user_factors", "item_factors", "artist_factors", "item_idf", "item_artist")


def new_version(created_at: datetime) -> str:
    """A version name that sorts in time order (UTC, microseconds) and never collides."""
    return created_at.strftime("v%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class ModelArtifact:
    """Everything a trained model is, as stored."""

    version: str
    metadata: dict[str, Any]
    user_ids: list[uuid.UUID]
    item_ids: list[uuid.UUID]
    artist_ids: list[uuid.UUID]
    user_factors: FloatArray
    item_factors: FloatArray
    artist_factors: FloatArray
    item_idf: FloatArray
    # Row in artist_ids of each item's primary artist, -1 when it has none.
    item_artist: IndexArray


def _npy_bytes(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


async def save_artifact(store: BlobStore, artifact: ModelArtifact) -> str:
    """Write a model's files, metadata last; the key prefix it was written under."""
    prefix = f"{MODELS_PREFIX}{artifact.version}/"
    for name in _ARRAYS:
        await store.put(f"{prefix}{name}.npy", _npy_bytes(getattr(artifact, name)))
    ids = {
        "users": [str(u) for u in artifact.user_ids],
        "items": [str(i) for i in artifact.item_ids],
        "artists": [str(a) for a in artifact.artist_ids],
    }
    await store.put(f"{prefix}ids.json", orjson.dumps(ids), content_type="application/json")
    await store.put(
        f"{prefix}{METADATA_FILE}",
        orjson.dumps({**artifact.metadata, "version": artifact.version}),
        content_type="application/json",
    )
    return prefix


async def list_versions(store: BlobStore) -> list[str]:
    """Complete model versions in the store, oldest first."""
    versions = set()
    async for info in store.list(MODELS_PREFIX):
        version, _, name = info.key.removeprefix(MODELS_PREFIX).partition("/")
        if name == METADATA_FILE:
            versions.add(version)
    return sorted(versions)


async def load_artifact(store: BlobStore, version: str) -> ModelArtifact:
    """Read one model version from the store."""
    prefix = f"{MODELS_PREFIX}{version}/"
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name in _ARRAYS:
        raw = await store.get(f"{prefix}{name}.npy")
        arrays[name] = np.load(io.BytesIO(raw), allow_pickle=False)
    ids = orjson.loads(await store.get(f"{prefix}ids.json"))
    metadata = orjson.loads(await store.get(f"{prefix}{METADATA_FILE}"))
    return ModelArtifact(
        version=version,
        metadata=metadata,
        user_ids=[uuid.UUID(u) for u in ids["users"]],
        item_ids=[uuid.UUID(i) for i in ids["items"]],
        artist_ids=[uuid.UUID(a) for a in ids["artists"]],
        user_factors=arrays["user_factors"].astype(np.float32, copy=False),
        item_factors=arrays["item_factors"].astype(np.float32, copy=False),
        artist_factors=arrays["artist_factors"].astype(np.float32, copy=False),
        item_idf=arrays["item_idf"].astype(np.float32, copy=False),
        item_artist=arrays["item_artist"].astype(np.int64, copy=False),
    )


async def load_newest_model(
    store: BlobStore, *, ann_min_items: int = DEFAULT_ANN_MIN_ITEMS
) -> RecommendModel | None:
    """The newest complete model in the store, built for serving; None before any training."""
    versions = await list_versions(store)
    if not versions:
        return None
    artifact = await load_artifact(store, versions[-1])
    return await asyncio.to_thread(RecommendModel.from_artifact, artifact, ann_min_items)


@dataclass
class RecommendModel:
    """A loaded model with the lookups serving needs; never changed once built."""

    artifact: ModelArtifact
    parameters: TrainingParameters
    bm25: BM25Stats
    item_index: dict[uuid.UUID, int]
    user_index: dict[uuid.UUID, int]
    artist_index: dict[uuid.UUID, int]
    unit_item_factors: FloatArray
    solver: AlternatingLeastSquares
    # Fold-in solves in C with the GIL held briefly; one at a time keeps YtY's cache safe.
    solver_lock: threading.Lock = field(default_factory=threading.Lock)
    # Built with the model (so it is swapped with it) when the catalog is big enough.
    ann: ItemIndex | None = None

    @property
    def version(self) -> str:
        """The artifact's version name."""
        return self.artifact.version

    def top_item_rows(
        self, vector: FloatArray, count: int, exclude: set[int] | None = None
    ) -> IndexArray:
        """Rows of the items with the highest inner product with `vector`, best first, leaving
        out `exclude`: through the ANN index when there is one, else an exact scan."""
        if self.ann is not None:
            return self.ann.top_rows(vector, count, exclude)
        scores = self.artifact.item_factors @ vector
        if exclude:
            scores[np.fromiter(exclude, dtype=np.int64, count=len(exclude))] = -np.inf
        rows = top_k(scores, count)
        finite: IndexArray = rows[np.isfinite(scores[rows])]
        return finite

    @classmethod
    def from_artifact(
        cls, artifact: ModelArtifact, ann_min_items: int = DEFAULT_ANN_MIN_ITEMS
    ) -> RecommendModel:
        """Build the serving lookups of an artifact (CPU work: run it off the event loop)."""
        known = {
            k: v
            for k, v in artifact.metadata.get("parameters", {}).items()
            if k in TrainingParameters.__dataclass_fields__
        }
        parameters = TrainingParameters(**known)
        solver = fold_in_solver(artifact.item_factors, parameters)
        _ = solver.YtY  # computed once here, not on the first request
        return cls(
            artifact=artifact,
            parameters=parameters,
            bm25=BM25Stats(
                item_idf=artifact.item_idf,
                average_length=float(artifact.metadata.get("bm25_average_length", 1.0)),
            ),
            item_index={item: row for row, item in enumerate(artifact.item_ids)},
            user_index={user: row for row, user in enumerate(artifact.user_ids)},
            artist_index={artist: row for row, artist in enumerate(artifact.artist_ids)},
            unit_item_factors=normalized_rows(artifact.item_factors),
            solver=solver,
            ann=(
                ItemIndex(artifact.item_factors)
                if ann_min_items > 0 and len(artifact.item_ids) >= ann_min_items
                else None
            ),
        )


class ModelHolder:
    """The model this process serves from; swapped whole when a newer version appears.

    Requests read `current` once and keep that object for their whole answer, so a swap
    (one attribute assignment) never leaves a request with half of two models.
    """

    def __init__(self, store: BlobStore, *, ann_min_items: int = DEFAULT_ANN_MIN_ITEMS) -> None:
        self._store = store
        self._ann_min_items = ann_min_items
        self.current: RecommendModel | None = None
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Load the newest complete version if it is not the one served; whether it swapped."""
        versions = await list_versions(self._store)
        if not versions or (self.current and self.current.version == versions[-1]):
            return False
        try:
            artifact = await load_artifact(self._store, versions[-1])
        except BlobNotFound:
            return False  # deleted while read: the next poll picks the newest again
        model = await asyncio.to_thread(RecommendModel.from_artifact, artifact, self._ann_min_items)
        self.current = model
        logger.info("recommend_model_loaded", version=model.version, items=len(model.item_index))
        return True

    async def refresh_at_start(self) -> None:
        """Load the newest model if the store answers; an unreachable store is not fatal here
        (the app starts, /readyz reports the store, the poller loads the model later)."""
        try:
            await self.refresh()
        except Exception as exc:
            logger.warning("recommend_model_not_loaded", error=type(exc).__name__)

    def start_polling(self, interval_seconds: float) -> None:
        """Check the store for a newer model every interval, in the background."""

        async def poll() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception as exc:  # a store hiccup must not end polling
                    logger.warning("recommend_model_poll_failed", error=repr(exc))
                await asyncio.sleep(interval_seconds)

        self._task = asyncio.create_task(poll(), name="recommend-model-poll")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

"""Media jobs: turn a track's original into published renditions (HLS, progressive, peaks).

The handler is idempotent: a ready track is left alone, renditions are written under keys
derived from the track and its original's hash (a retry writes the same bytes to the same
keys), and the track points at them only after every file is stored — readers never see
a half-written set.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from encore.bus import JobContext, PermanentJobError
from encore.catalog import service as catalog_service
from encore.catalog.models import TrackStatus
from encore.config import Settings
from encore.media import service as media_service
from encore.media.models import UploadStatus
from encore.media.probe import UnreadableAudio
from encore.storage import BlobStore

logger = structlog.get_logger("encore.media")

_DOWNLOAD_CHUNK = 8 * 1024 * 1024


class TrackProcessingFailed(Exception):
    """The original can never be processed (bad audio); `str()` says why, for the artist."""


def renditions_prefix(track_id: uuid.UUID, content_hash: str) -> str:
    """Where a track's renditions live: `renditions/<track>/<hash>`."""
    return f"renditions/{track_id}/{content_hash}"


async def download_blob(store: BlobStore, key: str, target: Path) -> None:
    """Copy a blob to a local file in bounded chunks (an original can be hundreds of MB)."""
    size = (await store.head(key)).size
    with target.open("wb") as file:
        position = 0
        while position < size:
            chunk = await store.get_range(key, position, min(position + _DOWNLOAD_CHUNK, size))
            if not chunk:
                break
            file.write(chunk)
            position += len(chunk)


async def _set_status(
    session_factory: async_sessionmaker[AsyncSession],
    track_id: uuid.UUID,
    status: UploadStatus,
    reason: str | None = None,
) -> None:
    async with session_factory() as db_session:
        await media_service.set_upload_status(
            db_session=db_session, track_id=track_id, status=status, reason=reason
        )
        if status is UploadStatus.failed:
            await catalog_service.mark_track_failed(
                db_session=db_session, track_id=track_id, reason=reason or "processing failed"
            )
        await db_session.commit()


async def process_track(payload: dict[str, Any], context: JobContext) -> None:
    """Job handler: turn a track's original into renditions; bad audio fails it for good."""
    if context.store is None:
        raise RuntimeError("processing tracks needs the blob store")
    try:
        await transcode_track(
            payload,
            session_factory=context.session_factory,
            store=context.store,
            settings=context.settings,
        )
    except TrackProcessingFailed as exc:
        raise PermanentJobError(str(exc)) from None
    except Exception as exc:
        # The queue retries; on the last attempt the artist must learn it failed.
        if context.job.attempts >= context.settings.job_max_attempts:
            await _set_status(
                context.session_factory,
                uuid.UUID(str(payload["track_id"])),
                UploadStatus.failed,
                "processing failed repeatedly; an administrator can retry it",
            )
        raise exc


async def transcode_track(
    payload: dict[str, Any],
    *,
    session_factory: async_sessionmaker[AsyncSession],
    store: BlobStore,
    settings: Settings,
) -> None:
    """Probe, measure loudness, transcode the ladder, publish, and mark the track ready."""
    from encore.media.ladder import transcode_ladder

    track_id = uuid.UUID(str(payload["track_id"]))
    async with session_factory() as db_session:
        source = await catalog_service.get_track_source(db_session=db_session, track_id=track_id)
    if source is None or source.status is TrackStatus.ready:
        return  # deleted meanwhile, or a retry of a job that already finished
    await _set_status(session_factory, track_id, UploadStatus.processing)
    prefix = renditions_prefix(track_id, source.content_hash)
    with tempfile.TemporaryDirectory(prefix="encore-track-") as scratch:
        work = Path(scratch)
        original = work / "original"
        output = work / "renditions"
        await download_blob(store, source.original_key, original)
        try:
            result = await asyncio.to_thread(
                transcode_ladder,
                original,
                output,
                max_duration_s=settings.upload_max_duration_seconds,
            )
        except UnreadableAudio as exc:
            reason = f"the audio cannot be processed: {exc}"
            await _set_status(session_factory, track_id, UploadStatus.failed, reason)
            raise TrackProcessingFailed(reason) from None
        # Playlists last: a reader that finds one finds everything it names.
        ordered = sorted(result.files, key=lambda name: name.endswith(".m3u8"))
        for relative in ordered:
            path = output / relative
            await store.put_file(
                f"{prefix}/{relative}",
                path,
                content_type=media_service.rendition_content_type(relative),
            )
    async with session_factory() as db_session:
        await catalog_service.mark_track_ready(
            db_session=db_session,
            track_id=track_id,
            renditions_prefix=prefix,
            duration_ms=result.duration_ms,
            loudness_lufs=result.loudness_lufs,
            true_peak_dbtp=result.true_peak_dbtp,
            track_gain_db=result.track_gain_db,
        )
        await media_service.set_upload_status(
            db_session=db_session, track_id=track_id, status=UploadStatus.ready
        )
        await db_session.commit()
    logger.info("track_ready", track_id=str(track_id), renditions=len(result.files))

"""Playback: signed URLs for a ready track's renditions, chosen for the listener's network."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth.secrets import decode_master_key, derive_key
from encore.catalog import service as catalog_service
from encore.catalog.models import TrackStatus
from encore.catalog.service import PlayableTrack
from encore.config import Settings
from encore.document_cache import DocumentCache
from encore.media import service as media_service
from encore.problems import Conflict, NotFound
from encore.streaming.signing import MediaSigner

DERIVED_KEY_ID = "k0"
# Quality names for the three rungs of the ladder, lowest first.
QUALITY_BIT_RATES = dict(
    zip(
        ("low", "normal", "high"),
        (bit_rate for _, bit_rate in media_service.RENDITION_LADDER),
        strict=True,
    )
)


def media_signer(settings: Settings, master_key: bytes) -> MediaSigner:
    """The media URL signer: configured keys, or one derived from the master key."""
    if settings.media_signing_keys:
        keys = {
            kid: decode_master_key(secret.get_secret_value())
            for kid, secret in settings.media_signing_keys.items()
        }
        current = settings.media_signing_key_id or next(iter(keys))
        return MediaSigner(keys=keys, current_kid=current)
    return MediaSigner(
        keys={DERIVED_KEY_ID: derive_key(master_key, "media-url-signing")},
        current_kid=DERIVED_KEY_ID,
    )


@dataclass(frozen=True)
class ProgressiveLink:
    """One progressive file of a track."""

    codec: str
    bitrate: int
    url: str


@dataclass(frozen=True)
class Playback:
    """Everything a player needs to start a track."""

    track_id: uuid.UUID
    duration_ms: int
    hls_url: str
    progressive: list[ProgressiveLink]
    track_gain_db: float | None
    true_peak_dbtp: float | None
    waveform_url: str
    expires_at: datetime


def default_bit_rate(quality: str, save_data: bool) -> int:
    """The progressive rendition to offer first: asked quality, or low when saving data."""
    if quality == "auto":
        return QUALITY_BIT_RATES["low" if save_data else "normal"]
    return QUALITY_BIT_RATES[quality]


async def _playable_track(
    db_session: AsyncSession, cache: DocumentCache, track_id: uuid.UUID
) -> PlayableTrack | None:
    # Pressing play is the hottest path there is: a track's playback facts are kept with the
    # rendered catalog documents, and dropped with them when the catalog changes.
    revision = await cache.current_revision()
    key = ("playable", str(track_id))
    cached = cache.get(key)
    if cached is not None:
        facts = json.loads(cached.body)
        return PlayableTrack(**{**facts, "status": TrackStatus(facts["status"])})
    track = await catalog_service.get_playable_track(db_session=db_session, track_id=track_id)
    if track is not None and track.status is TrackStatus.ready:
        cache.put(key, json.dumps(dataclasses.asdict(track)).encode(), revision=revision)
    return track


async def playback(
    *,
    db_session: AsyncSession,
    cache: DocumentCache,
    signer: MediaSigner,
    settings: Settings,
    track_id: uuid.UUID,
    user_id: uuid.UUID,
    quality: str,
    save_data: bool,
) -> Playback:
    """Signed URLs of a ready track for this listener; NotFound, or Conflict if not ready."""
    track = await _playable_track(db_session, cache, track_id)
    if track is None:
        raise NotFound(f"no track with id {track_id}")
    if track.status is not TrackStatus.ready or track.renditions_prefix is None:
        raise Conflict(
            f"track {track_id} is not playable yet (status: {track.status.value})",
            extra={"status": track.status.value},
        )
    expires = int(time.time()) + settings.media_url_lifetime_seconds
    base = settings.public_url

    def url(file: str) -> str:
        assert track.renditions_prefix is not None
        return base + signer.url(
            prefix=track.renditions_prefix, user_id=user_id, expires=expires, file=file
        )

    chosen = default_bit_rate(quality, save_data)
    links = [
        ProgressiveLink(codec="mp4a.40.2", bitrate=bit_rate, url=url(f"{name}/audio.m4a"))
        for name, bit_rate in media_service.RENDITION_LADDER
    ]
    # The default rendition first; the others follow, best first.
    links.sort(key=lambda link: (link.bitrate != chosen, -link.bitrate))
    return Playback(
        track_id=track_id,
        duration_ms=track.duration_ms,
        hls_url=url("master.m3u8"),
        progressive=links,
        track_gain_db=track.track_gain_db,
        true_peak_dbtp=track.true_peak_dbtp,
        waveform_url=url("peaks.json"),
        expires_at=datetime.fromtimestamp(expires, tz=UTC),
    )

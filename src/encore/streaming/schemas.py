"""Playback response shapes."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class HlsLink(BaseModel):
    """The multivariant HLS playlist: the player picks renditions by its network."""

    url: str


class ProgressiveRead(BaseModel):
    """One progressive (single-file, seekable) rendition."""

    codec: str
    bitrate: int
    url: str


class NormalizationRead(BaseModel):
    """EBU R128 figures for loudness normalization toward -14 LUFS."""

    track_gain_db: float | None
    true_peak_dbtp: float | None


class PlaybackRead(BaseModel):
    """Signed URLs to play a track; they work until `expires_at`."""

    track_id: uuid.UUID
    duration_ms: int
    hls: HlsLink
    progressive: list[ProgressiveRead]
    normalization: NormalizationRead
    waveform_url: str
    expires_at: datetime

"""Media request and response shapes."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from encore.media.models import UploadStatus


class UploadRead(BaseModel):
    """An upload and where its processing stands."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: UploadStatus
    failure_reason: str | None
    artist_id: uuid.UUID
    track_id: uuid.UUID | None
    file_name: str | None
    size_bytes: int
    created_at: datetime
    updated_at: datetime


class ArtworkRead(BaseModel):
    """An album's artwork after an upload."""

    album_id: uuid.UUID
    artwork_url: str
    sizes: list[int]

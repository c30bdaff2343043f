"""Media tables: artist uploads and where their processing stands."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base, Timestamped, UUIDPrimaryKey, utcnow


class UploadStatus(enum.StrEnum):
    """Where an upload stands: queued → processing → ready | failed."""

    queued = "queued"
    processing = "processing"
    ready = "ready"
    failed = "failed"


class Upload(UUIDPrimaryKey, Timestamped, Base):
    """One audio file an artist account sent, and the track it became."""

    __tablename__ = "uploads"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    artist_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artists.id", ondelete="CASCADE"))
    track_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tracks.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[UploadStatus] = mapped_column(
        Enum(UploadStatus, name="upload_status", native_enum=False, length=16),
        default=UploadStatus.queued,
    )
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    file_name: Mapped[str | None] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

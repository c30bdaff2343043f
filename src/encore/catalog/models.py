"""Catalog tables: artists, albums, tracks, genres and the credits that join them."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from encore.db import Base, Timestamped, UUIDPrimaryKey, utcnow


class AlbumType(enum.StrEnum):
    """Kind of release."""

    album = "album"
    single = "single"
    ep = "ep"
    compilation = "compilation"


class TrackStatus(enum.StrEnum):
    """Where a track is in the media pipeline."""

    processing = "processing"
    ready = "ready"
    failed = "failed"


class CreditRole(enum.StrEnum):
    """How an artist is credited on an album or a track."""

    primary = "primary"
    featured = "featured"


def _enum(enum_cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as plain strings with a CHECK, so adding a value later is a simple migration on
    # every backend (no PostgreSQL ENUM type to alter).
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Artist(UUIDPrimaryKey, Timestamped, Base):
    """A performer or band."""

    __tablename__ = "artists"

    name: Mapped[str] = mapped_column(String(500))
    # Lower-cased, accent-folded name: the key that merges "Björk" and "BJÖRK" on import.
    name_key: Mapped[str] = mapped_column(String(500), index=True)
    sort_name: Mapped[str] = mapped_column(String(500))
    musicbrainz_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    # The account that manages this artist (uploads, stats); None for imported artists.
    owner_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # Streams (plays of 30 s or more) counted by the events pipeline; lags it by seconds.
    stream_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (Index("ix_artists_sort_name_id", "sort_name", "id"),)


class Album(UUIDPrimaryKey, Timestamped, Base):
    """A release: album, single, EP or compilation."""

    __tablename__ = "albums"

    title: Mapped[str] = mapped_column(String(500))
    title_key: Mapped[str] = mapped_column(String(500), index=True)
    release_date: Mapped[date | None] = mapped_column(Date)
    album_type: Mapped[AlbumType] = mapped_column(_enum(AlbumType, "album_type"))
    artwork_key: Mapped[str | None] = mapped_column(String(1024))
    musicbrainz_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)

    credits: Mapped[list[AlbumArtist]] = relationship(
        back_populates="album",
        order_by="AlbumArtist.position",
        cascade="all, delete-orphan",
    )
    tracks: Mapped[list[Track]] = relationship(
        back_populates="album", order_by="(Track.disc_number, Track.track_number, Track.title)"
    )
    genres: Mapped[list[Genre]] = relationship(secondary="album_genres", order_by="Genre.name")

    __table_args__ = (
        # New releases: newest first, ties broken by id for a stable keyset.
        Index("ix_albums_release_date_id", "release_date", "id"),
    )


class Track(UUIDPrimaryKey, Timestamped, Base):
    """A recording on an album."""

    __tablename__ = "tracks"

    album_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("albums.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(500))
    # Lower-cased, accent-folded title: what search indexes (see encore.search).
    title_key: Mapped[str] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer)
    disc_number: Mapped[int] = mapped_column(Integer, default=1)
    track_number: Mapped[int | None] = mapped_column(Integer)
    isrc: Mapped[str | None] = mapped_column(String(12), index=True)
    explicit: Mapped[bool] = mapped_column(Boolean, default=False)
    musicbrainz_id: Mapped[uuid.UUID | None] = mapped_column()
    original_key: Mapped[str] = mapped_column(String(1024))
    # SHA-256 of the original file: the same bytes are never imported twice.
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    original_size: Mapped[int] = mapped_column(BigInteger)
    codec: Mapped[str] = mapped_column(String(32))
    container: Mapped[str] = mapped_column(String(32))
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    bit_rate: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[TrackStatus] = mapped_column(
        _enum(TrackStatus, "track_status"), default=TrackStatus.processing
    )
    # Why processing failed, in words a person can act on.
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    # Blob-key prefix of the published renditions (HLS, progressive, peaks); set with `ready`.
    renditions_prefix: Mapped[str | None] = mapped_column(String(1024))
    # EBU R128 measurements, so players can normalize to -14 LUFS.
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    true_peak_dbtp: Mapped[float | None] = mapped_column(Float)
    track_gain_db: Mapped[float | None] = mapped_column(Float)
    # Streams (plays of 30 s or more) counted by the events pipeline; lags it by seconds.
    stream_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    album: Mapped[Album] = relationship(back_populates="tracks")
    credits: Mapped[list[TrackArtist]] = relationship(
        back_populates="track",
        order_by="TrackArtist.position",
        cascade="all, delete-orphan",
    )
    genres: Mapped[list[Genre]] = relationship(secondary="track_genres", order_by="Genre.name")

    __table_args__ = (
        Index("ix_tracks_album_order", "album_id", "disc_number", "track_number"),
        CheckConstraint("duration_ms >= 0", name="duration_not_negative"),
        CheckConstraint("disc_number >= 1", name="disc_number_positive"),
    )


class Genre(UUIDPrimaryKey, Base):
    """A style of music, e.g. "Electronic"."""

    __tablename__ = "genres"

    name: Mapped[str] = mapped_column(String(100))
    name_key: Mapped[str] = mapped_column(String(100), unique=True)


class AlbumArtist(Base):
    """Credit of an artist on an album, with a role and an order."""

    __tablename__ = "album_artists"

    album_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True
    )
    artist_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("artists.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[CreditRole] = mapped_column(_enum(CreditRole, "credit_role"))
    position: Mapped[int] = mapped_column(Integer, default=0)

    album: Mapped[Album] = relationship(back_populates="credits")
    artist: Mapped[Artist] = relationship(lazy="joined")


class TrackArtist(Base):
    """Credit of an artist on a track, with a role and an order."""

    __tablename__ = "track_artists"

    track_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True
    )
    artist_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("artists.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[CreditRole] = mapped_column(_enum(CreditRole, "credit_role"))
    position: Mapped[int] = mapped_column(Integer, default=0)

    track: Mapped[Track] = relationship(back_populates="credits")
    artist: Mapped[Artist] = relationship(lazy="joined")


class AlbumGenre(Base):
    """Genre tag of an album."""

    __tablename__ = "album_genres"

    album_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True
    )
    genre_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("genres.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TrackGenre(Base):
    """Genre tag of a track."""

    __tablename__ = "track_genres"

    track_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True
    )
    genre_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("genres.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ImportFailure(UUIDPrimaryKey, Timestamped, Base):
    """A file an import could not use, and why; kept so the owner can fix and re-run."""

    __tablename__ = "import_failures"

    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("path", name="uq_import_failures_path"),)


class CatalogRevision(Base):
    """One row counting catalog changes; caches of rendered documents watch it."""

    __tablename__ = "catalog_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

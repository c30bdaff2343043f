"""Catalog request and response shapes."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from encore.catalog.models import AlbumType, CreditRole, TrackStatus


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ArtistCredit(_Read):
    """An artist as credited on an album or track."""

    id: uuid.UUID
    name: str
    role: CreditRole


class ArtistRead(_Read):
    """An artist."""

    id: uuid.UUID
    name: str
    sort_name: str
    musicbrainz_id: uuid.UUID | None
    stream_count: int = Field(0, description="Plays of 30 s or more, counted within seconds.")
    created_at: datetime


class GenreRead(_Read):
    """A genre."""

    id: uuid.UUID
    name: str


class AlbumRef(_Read):
    """The album a track belongs to, as shown on the track."""

    id: uuid.UUID
    title: str
    artwork_url: str | None


class AlbumTrackRead(_Read):
    """A track as listed on its album."""

    id: uuid.UUID
    title: str
    duration_ms: int
    disc_number: int
    track_number: int | None
    isrc: str | None
    explicit: bool
    status: TrackStatus
    artists: list[ArtistCredit]


class TrackRead(AlbumTrackRead):
    """A track with its album and genres."""

    album: AlbumRef
    genres: list[str]
    musicbrainz_id: uuid.UUID | None
    stream_count: int = Field(0, description="Plays of 30 s or more, counted within seconds.")
    created_at: datetime


class AlbumSummary(_Read):
    """An album in a list."""

    id: uuid.UUID
    title: str
    release_date: date | None
    album_type: AlbumType
    artwork_url: str | None
    artists: list[ArtistCredit]


class AlbumRead(AlbumSummary):
    """An album with its credits, genres and tracks in disc/track order."""

    genres: list[str]
    total_tracks: int
    duration_ms: int
    musicbrainz_id: uuid.UUID | None
    created_at: datetime
    tracks: list[AlbumTrackRead]


class ArtistOwnerUpdate(BaseModel):
    """Which account manages an artist (null: none)."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(min_length=1, max_length=64)

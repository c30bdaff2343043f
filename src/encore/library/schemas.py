"""Library request and response shapes: playlists, their items, likes and follows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from encore.catalog.schemas import AlbumSummary, ArtistRead, TrackRead

MAX_PLAYLIST_ITEMS = 10_000
MAX_ITEMS_PER_REQUEST = 100


def _plain_line(value: str) -> str:
    # Stored as plain text: no control characters (NUL cannot even be stored by PostgreSQL).
    if any(not ch.isprintable() for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _plain_text(value: str) -> str:
    if any(not ch.isprintable() and ch not in "\n\t" for ch in value):
        raise ValueError("must not contain control characters other than newlines and tabs")
    return value


PlaylistName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_plain_line),
]
PlaylistDescription = Annotated[str, Field(max_length=1000), AfterValidator(_plain_text)]


class _Input(BaseModel):
    # Unknown fields (owner, snapshot_id, id, …) are refused, never silently applied.
    model_config = ConfigDict(extra="forbid")


class PlaylistCreate(_Input):
    """A new playlist; it belongs to the caller."""

    name: PlaylistName
    description: PlaylistDescription = ""
    public: bool = False
    collaborative: bool = Field(
        False, description="Invited collaborators may add, remove and reorder tracks."
    )


class PlaylistUpdate(_Input):
    """Changes to a playlist's details; fields left out stay as they are."""

    name: PlaylistName | None = None
    description: PlaylistDescription | None = None
    public: bool | None = None
    collaborative: bool | None = None


class PlaylistRead(BaseModel):
    """A playlist's details (its tracks are listed separately)."""

    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    description: str
    public: bool
    collaborative: bool
    snapshot_id: str = Field(description="Changes with every edit; also sent as the ETag.")
    track_count: int
    cover_url: str | None
    created_at: datetime
    updated_at: datetime


class SnapshotRead(BaseModel):
    """The playlist's snapshot after a change."""

    snapshot_id: str


class PlaylistItemRead(BaseModel):
    """A track at a position of a playlist, with who added it and when."""

    position: int
    track: TrackRead
    added_at: datetime
    added_by: uuid.UUID | None


class PlaylistItemsAdd(_Input):
    """Tracks to add, in order, before `position` (at the end when omitted)."""

    track_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)
    position: int | None = Field(None, ge=0, le=MAX_PLAYLIST_ITEMS)


class PlaylistItemRef(_Input):
    """One item: its position and, to guard against edits meanwhile, its track."""

    position: int = Field(ge=0, lt=MAX_PLAYLIST_ITEMS)
    track_id: uuid.UUID


class PlaylistItemsRemove(_Input):
    """Items to remove, each named by position and track (a track may appear twice)."""

    items: list[PlaylistItemRef] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


class PlaylistReorder(_Input):
    """Move `range_length` items from `range_start` to before the item at `insert_before`."""

    range_start: int = Field(ge=0, lt=MAX_PLAYLIST_ITEMS)
    range_length: int = Field(1, ge=1, le=MAX_PLAYLIST_ITEMS)
    insert_before: int = Field(ge=0, le=MAX_PLAYLIST_ITEMS)


class CollaboratorAdd(_Input):
    """The account to invite, by username."""

    username: str = Field(min_length=1, max_length=64)


class CollaboratorRead(BaseModel):
    """A user who may edit a collaborative playlist's tracks."""

    user_id: uuid.UUID
    username: str
    added_at: datetime


class LikedTrackRead(BaseModel):
    """A liked track and when it was liked."""

    liked_at: datetime
    track: TrackRead


class LikedAlbumRead(BaseModel):
    """A liked album and when it was liked."""

    liked_at: datetime
    album: AlbumSummary


class FollowedArtistRead(BaseModel):
    """A followed artist and since when."""

    followed_at: datetime
    artist: ArtistRead


class FollowedPlaylistRead(BaseModel):
    """A followed playlist and since when."""

    followed_at: datetime
    playlist: PlaylistRead

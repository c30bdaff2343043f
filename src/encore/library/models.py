"""Library tables: playlists and their items, collaborators, likes and follows."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base, Timestamped, UUIDPrimaryKey, utcnow


class Playlist(UUIDPrimaryKey, Timestamped, Base):
    """A user's ordered list of tracks, maybe public, maybe edited with collaborators."""

    __tablename__ = "playlists"

    owner_user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    # Lower-cased, accent-folded name: what search matches (kept by the library service).
    name_key: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    collaborative: Mapped[bool] = mapped_column(Boolean, default=False)
    cover_key: Mapped[str | None] = mapped_column(String(1024))
    # Bumped by every change; the snapshot id and ETag are made from it, and the conditional
    # UPDATE that bumps it is what serializes concurrent edits of one playlist.
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlaylistItem(UUIDPrimaryKey, Base):
    """One track at one position of a playlist (a track may appear more than once)."""

    __tablename__ = "playlist_items"

    playlist_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("playlists.id", ondelete="CASCADE"))
    # 0-based and contiguous; not unique in the schema because inserts and moves shift whole
    # ranges in one UPDATE, which a per-row unique check would trip over halfway.
    position: Mapped[int] = mapped_column(Integer)
    track_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), index=True
    )
    added_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    added_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_playlist_items_playlist_position", "playlist_id", "position"),)


class PlaylistCollaborator(Base):
    """A user the owner invited to add, remove and reorder a collaborative playlist's tracks."""

    __tablename__ = "playlist_collaborators"

    playlist_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("playlists.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class LikedTrack(Base):
    """A track a user likes."""

    __tablename__ = "liked_tracks"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    track_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_liked_tracks_newest", "user_id", "created_at", "track_id"),)


class LikedAlbum(Base):
    """An album a user likes."""

    __tablename__ = "liked_albums"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    album_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_liked_albums_newest", "user_id", "created_at", "album_id"),)


class FollowedArtist(Base):
    """An artist a user follows."""

    __tablename__ = "followed_artists"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    artist_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("artists.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_followed_artists_newest", "user_id", "created_at", "artist_id"),)


class FollowedPlaylist(Base):
    """A playlist a user follows."""

    __tablename__ = "followed_playlists"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    playlist_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("playlists.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_followed_playlists_newest", "user_id", "created_at", "playlist_id"),
    )

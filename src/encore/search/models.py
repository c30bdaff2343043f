"""Search tables: one folded document per artist, album, track and playlist.

Triggers written by the migration keep the documents in step with the catalog and playlist
tables, so every writer (the importer's batches, uploads, bulk loads) is covered. Popularity
is not copied here: stream counts come from the catalog and follower counts from the library
at query time, for the few candidates that need ranking. The words of `doc` are indexed by
the same triggers: on SQLite in FTS5 tables (one per kind, external content, split on
spaces), on PostgreSQL in `search_words` (migration b2c3d4e5f6a8).
"""

from __future__ import annotations

import enum
import uuid

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base


class SearchKind(enum.StrEnum):
    """What a search document describes."""

    artist = "artist"
    album = "album"
    track = "track"
    playlist = "playlist"


class SearchDocument(Base):
    """The searchable text of one artist, album, track or playlist."""

    __tablename__ = "search_documents"

    # An integer key, unlike the rest of the schema: FTS5 addresses its rows by rowid.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Folded primary name (title, artist or playlist name), what relevance weighs most.
    name: Mapped[str] = mapped_column(Text)
    # " name artists album ": every folded field, space-separated (and padded with spaces, so
    # " word " and " start" are plain substrings of it).
    doc: Mapped[str] = mapped_column(Text)
    # Playlists only: who may find them.
    owner_user_id: Mapped[uuid.UUID | None] = mapped_column()
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (Index("ix_search_documents_kind", "kind"),)


class SearchRevision(Base):
    """One row counting changes of the search documents (bumped by triggers)."""

    __tablename__ = "search_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

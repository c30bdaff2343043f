"""Search response shapes."""

from __future__ import annotations

from pydantic import BaseModel

from encore.catalog.schemas import AlbumSummary, ArtistRead, TrackRead
from encore.library.schemas import PlaylistRead
from encore.pagination import Page


class SearchResults(BaseModel):
    """Results per kind asked for (kinds not asked for are null), best first."""

    tracks: Page[TrackRead] | None = None
    albums: Page[AlbumSummary] | None = None
    artists: Page[ArtistRead] | None = None
    playlists: Page[PlaylistRead] | None = None

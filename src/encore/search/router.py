"""Search HTTP API: `GET /v1/search` over tracks, albums, artists and playlists."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel

from encore.auth.dependencies import Authenticated
from encore.catalog import service as catalog_service
from encore.dependencies import SessionDep
from encore.library import service as library_service
from encore.pagination import Page, decode_cursor, encode_cursor
from encore.problems import InvalidInput
from encore.search import service
from encore.search.models import SearchKind
from encore.search.schemas import SearchResults

router = APIRouter(prefix="/v1", tags=["search"])

ItemT = TypeVar("ItemT", bound=BaseModel)


def _kinds(raw: str) -> list[SearchKind]:
    kinds: list[SearchKind] = []
    for part in raw.split(","):
        name = part.strip()
        try:
            kind = SearchKind(name)
        except ValueError:
            raise InvalidInput(
                f"type: {name[:40]!r} is not one of track, album, artist, playlist",
                extra={"errors": [{"field": "query.type", "message": "unknown type"}]},
            ) from None
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    offset = decode_cursor(cursor, {"offset"})["offset"]
    if not isinstance(offset, int) or not 0 <= offset <= service.CANDIDATE_LIMIT * 2:
        raise InvalidInput("cursor is not valid: pass the next_cursor of a previous page")
    return offset


@router.get("/search", response_model=SearchResults, summary="Search the catalog and playlists")
async def search(
    principal: Authenticated,
    db_session: SessionDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=service.MAX_QUERY_CHARS,
            description="What to look for; typos, accents and case do not matter, and the "
            "last word may be unfinished.",
        ),
    ],
    type: Annotated[
        str,
        Query(
            max_length=64,
            description="Comma-separated kinds: track, album, artist, playlist.",
        ),
    ] = "track,album,artist,playlist",
    limit: Annotated[int, Query(ge=1, le=50, description="Results per kind (1-50).")] = 10,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
    ] = None,
) -> SearchResults:
    """Results per kind, by relevance then popularity; playlists: public ones and your own."""
    kinds = _kinds(type)
    offset = _offset(cursor)
    query = service.parse_query(q)
    viewer_id = principal.user_id
    pages: dict[str, Any] = {}
    loaders: Mapping[
        SearchKind, tuple[str, Callable[[list[uuid.UUID]], Awaitable[Mapping[uuid.UUID, Any]]]]
    ] = {
        SearchKind.track: (
            "tracks",
            lambda ids: catalog_service.get_tracks(db_session=db_session, track_ids=ids),
        ),
        SearchKind.album: (
            "albums",
            lambda ids: catalog_service.get_album_summaries(db_session=db_session, album_ids=ids),
        ),
        SearchKind.artist: (
            "artists",
            lambda ids: catalog_service.get_artists(db_session=db_session, artist_ids=ids),
        ),
        SearchKind.playlist: (
            "playlists",
            lambda ids: library_service.get_playlists(
                db_session=db_session, playlist_ids=ids, viewer_id=viewer_id
            ),
        ),
    }
    results = await service.search(
        db_session=db_session,
        query=query,
        kinds=kinds,
        offset=offset,
        limit=limit,
        viewer_id=viewer_id,
    )
    for kind, (hits, more) in results.items():
        field, load = loaders[kind]
        found = await load([hit.entity_id for hit in hits])
        pages[field] = Page[Any](
            items=[found[hit.entity_id] for hit in hits if hit.entity_id in found],
            next_cursor=encode_cursor({"offset": offset + limit}) if more else None,
        )
    return SearchResults(**pages)

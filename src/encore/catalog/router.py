"""Catalog HTTP API: artists, albums, tracks, genres and new releases."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from encore.auth import service as auth_service
from encore.auth.dependencies import current_principal, require_scopes
from encore.auth.scopes import ADMIN
from encore.catalog import service
from encore.catalog.models import AlbumType
from encore.catalog.schemas import (
    AlbumRead,
    AlbumSummary,
    ArtistOwnerUpdate,
    ArtistRead,
    GenreRead,
    TrackRead,
)
from encore.dependencies import ResourcesDep, SessionDep, StoreDep
from encore.document_cache import CachedDocumentRoute, document_response
from encore.media import service as media_service
from encore.pagination import Page, PageDep
from encore.problems import InvalidInput, NotFound
from encore.storage import BlobNotFound

# Catalog reads accept any valid access token, client-credentials tokens included.
router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(current_principal)])

# Album pages are the hottest catalog read: their rendered JSON is cached (see get_album).
ALBUM_DOCUMENT = CachedDocumentRoute.for_template("/v1/albums/{album_id}", kind="album")
CACHED_DOCUMENT_ROUTES = (ALBUM_DOCUMENT,)

ARTWORK_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"RIFF": "image/webp"}


@router.get("/artists", response_model=Page[ArtistRead], summary="List artists A to Z")
async def list_artists(db_session: SessionDep, page: PageDep) -> Page[ArtistRead]:
    """Every artist, alphabetically by sort name ("The Beatles" under B)."""
    return await service.list_artists(db_session=db_session, limit=page.limit, cursor=page.cursor)


@router.get("/artists/{artist_id}", response_model=ArtistRead, summary="Get an artist")
async def get_artist(artist_id: uuid.UUID, db_session: SessionDep) -> ArtistRead:
    """One artist."""
    return await service.get_artist(db_session=db_session, artist_id=artist_id)


@router.get(
    "/artists/{artist_id}/albums",
    response_model=Page[AlbumSummary],
    summary="List an artist's albums, newest first",
)
async def list_artist_albums(
    artist_id: uuid.UUID,
    db_session: SessionDep,
    page: PageDep,
    album_type: Annotated[
        list[AlbumType] | None,
        Query(description="Only these kinds of release; repeat for several."),
    ] = None,
) -> Page[AlbumSummary]:
    """Albums, singles, EPs and compilations the artist is credited on."""
    return await service.list_artist_albums(
        db_session=db_session,
        artist_id=artist_id,
        limit=page.limit,
        cursor=page.cursor,
        album_types=album_type,
    )


@router.get(
    "/albums/{album_id}",
    response_model=AlbumRead,
    summary="Get an album with its tracks",
    responses={304: {"description": "The album has not changed since the ETag sent."}},
)
async def get_album(album_id: uuid.UUID, request: Request, resources: ResourcesDep) -> Response:
    """One album: credits with roles, genres and tracks in disc/track order with their status.

    Answers carry an ETag; send it back in If-None-Match to get a 304 when nothing changed.
    """
    cache = resources.catalog_documents
    # Read the revision before the album, so a change committed meanwhile is never cached.
    revision = await cache.current_revision()
    key = (ALBUM_DOCUMENT.kind, str(album_id))
    document = cache.get(key)
    if document is None:
        async with resources.session_factory() as db_session:
            album = await service.get_album(db_session=db_session, album_id=album_id)
        document = cache.put(key, album.model_dump_json().encode(), revision=revision)
    return document_response(document, request.headers.get("if-none-match"))


@router.get(
    "/albums/{album_id}/artwork",
    summary="Get an album's artwork image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_album_artwork(
    album_id: uuid.UUID,
    db_session: SessionDep,
    store: StoreDep,
    size: Annotated[
        int | None,
        Query(description="Longest side in pixels: 64, 300 or 640; full size when omitted."),
    ] = None,
    v: Annotated[
        str | None,
        Query(max_length=64, description="The version in `artwork_url`; makes it cacheable."),
    ] = None,
) -> Response:
    """The cover image; cached forever, since its key is content-addressed."""
    key = await service.get_album_artwork_key(db_session=db_session, album_id=album_id)
    try:
        if size is None:
            image = await store.get(key)
        else:
            image = await media_service.artwork_variant(store=store, base_key=key, size=size)
    except BlobNotFound:
        raise NotFound(f"no artwork for album {album_id}") from None
    media_type = next(
        (kind for magic, kind in ARTWORK_TYPES.items() if image.startswith(magic)),
        "application/octet-stream",
    )
    # A URL naming the current version never changes content; without it, the cover may be
    # replaced by its artist, so caches must check back.
    current = v is not None and v == service.artwork_version(key)
    return Response(
        image,
        media_type=media_type,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable" if current else "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.put(
    "/artists/{artist_id}/owner",
    status_code=204,
    summary="Link an artist account to an artist (admin)",
    dependencies=[require_scopes(ADMIN)],
)
async def set_artist_owner(
    artist_id: uuid.UUID, body: ArtistOwnerUpdate, db_session: SessionDep
) -> Response:
    """Let an artist account upload and see stats for this artist; null unlinks it."""
    user_id = None
    if body.username is not None:
        user = await auth_service.find_user_by_username(
            db_session=db_session, username=body.username
        )
        if user is None:
            raise NotFound(f"no user named {body.username}")
        if "artist" not in user.roles:
            raise InvalidInput(
                f"{user.username} is not an artist account; give it the artist role first"
            )
        user_id = user.id
    await service.set_artist_owner(db_session=db_session, artist_id=artist_id, user_id=user_id)
    return Response(status_code=204)


@router.get("/tracks/{track_id}", response_model=TrackRead, summary="Get a track")
async def get_track(track_id: uuid.UUID, db_session: SessionDep) -> TrackRead:
    """One track with its album, credited artists, genres and processing status."""
    return await service.get_track(db_session=db_session, track_id=track_id)


@router.get("/genres", response_model=Page[GenreRead], summary="List genres")
async def list_genres(db_session: SessionDep, page: PageDep) -> Page[GenreRead]:
    """Every genre, alphabetically."""
    return await service.list_genres(db_session=db_session, limit=page.limit, cursor=page.cursor)


@router.get(
    "/browse/new-releases", response_model=Page[AlbumSummary], summary="Browse new releases"
)
async def list_new_releases(db_session: SessionDep, page: PageDep) -> Page[AlbumSummary]:
    """Dated releases, newest first."""
    return await service.list_new_releases(
        db_session=db_session, limit=page.limit, cursor=page.cursor
    )

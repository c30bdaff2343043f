"""Library HTTP API: likes, follows, playlists, their tracks, covers and collaborators."""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth.dependencies import Authenticated, require_scopes
from encore.auth.scopes import LIBRARY_MODIFY, LIBRARY_READ, PLAYLIST_MODIFY, PLAYLIST_READ
from encore.auth.tokens import Principal
from encore.catalog.router import ARTWORK_TYPES
from encore.dependencies import AppResources, ResourcesDep, SessionDep, StoreDep
from encore.events import service as events_service
from encore.library import service
from encore.library.schemas import (
    CollaboratorAdd,
    CollaboratorRead,
    FollowedArtistRead,
    FollowedPlaylistRead,
    LikedAlbumRead,
    LikedTrackRead,
    PlaylistCreate,
    PlaylistItemRead,
    PlaylistItemsAdd,
    PlaylistItemsRemove,
    PlaylistRead,
    PlaylistReorder,
    PlaylistUpdate,
    SnapshotRead,
)
from encore.media import service as media_service
from encore.media.artwork import MAX_ARTWORK_BYTES
from encore.pagination import Page, PageDep
from encore.problems import ContentTooLarge, InvalidInput, NotFound
from encore.storage import BlobNotFound

router = APIRouter(prefix="/v1", tags=["library"])
logger = structlog.get_logger("encore.library")

LibraryReader = Annotated[Principal, require_scopes(LIBRARY_READ)]
LibraryEditor = Annotated[Principal, require_scopes(LIBRARY_MODIFY)]
PlaylistReader = Annotated[Principal, require_scopes(PLAYLIST_READ)]
PlaylistEditor = Annotated[Principal, require_scopes(PLAYLIST_MODIFY)]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description="A snapshot's ETag: the change applies only if the playlist is still at it.",
    ),
]
ContainsIds = Annotated[
    str,
    Query(
        max_length=service.MAX_CONTAINS_IDS * 37,
        description=f"Comma-separated ids, at most {service.MAX_CONTAINS_IDS}.",
    ),
]


def _user_id(principal: Principal) -> uuid.UUID:
    # require_scopes(...) already refused tokens without a user.
    assert principal.user_id is not None
    return principal.user_id


def _ids(raw: str) -> list[uuid.UUID]:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts or len(parts) > service.MAX_CONTAINS_IDS:
        raise InvalidInput(
            f"ids: give 1 to {service.MAX_CONTAINS_IDS} comma-separated ids",
            extra={"errors": [{"field": "query.ids", "message": "wrong number of ids"}]},
        )
    try:
        return [uuid.UUID(part) for part in parts]
    except ValueError:
        raise InvalidInput(
            "ids: every id must be a UUID",
            extra={"errors": [{"field": "query.ids", "message": "not a UUID"}]},
        ) from None


def _snapshot_response(snapshot: str, status_code: int = 200) -> Response:
    return Response(
        SnapshotRead(snapshot_id=snapshot).model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": f'"{snapshot}"'},
    )


def _playlist_response(
    playlist: PlaylistRead, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        playlist.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": f'"{playlist.snapshot_id}"', **(headers or {})},
    )


# ---------------------------------------------------------------------------------------------
# Likes


async def _record_library_events(
    resources: AppResources,
    db_session: AsyncSession,
    user_id: uuid.UUID,
    kind: str,
    targets: list[dict[str, uuid.UUID]],
) -> None:
    """Append like/unlike/follow/playlist_add events for a change that was made.

    The change commits first: an event must never describe something that did not happen.
    The event is best effort after that — the change stands even when the log is down.
    """
    await db_session.commit()
    try:
        await events_service.record_library_events(
            event_log=resources.event_log, user_id=user_id, kind=kind, targets=targets
        )
    except Exception as exc:
        logger.warning("library_event_not_recorded", kind=kind, error=type(exc).__name__)


@router.get("/me/likes/tracks", response_model=Page[LikedTrackRead], summary="Liked tracks")
async def list_liked_tracks(
    principal: LibraryReader, db_session: SessionDep, page: PageDep
) -> Page[LikedTrackRead]:
    """Tracks you like, most recently liked first."""
    return await service.list_liked_tracks(
        db_session=db_session, user_id=_user_id(principal), limit=page.limit, cursor=page.cursor
    )


@router.get(
    "/me/likes/tracks/contains", response_model=list[bool], summary="Are these tracks liked?"
)
async def liked_tracks_contain(
    principal: LibraryReader, db_session: SessionDep, ids: ContainsIds
) -> list[bool]:
    """For each id, in order, whether you like that track."""
    return await service.saved_contains(
        db_session=db_session, user_id=_user_id(principal), kind="track", ids=_ids(ids)
    )


@router.put("/me/likes/tracks/{track_id}", status_code=204, summary="Like a track")
async def like_track(
    track_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep, resources: ResourcesDep
) -> Response:
    """Like a track (again: no change)."""
    user_id = _user_id(principal)
    if await service.like_track(db_session=db_session, user_id=user_id, track_id=track_id):
        await _record_library_events(
            resources, db_session, user_id, "like", [{"track_id": track_id}]
        )
    return Response(status_code=204)


@router.delete("/me/likes/tracks/{track_id}", status_code=204, summary="Unlike a track")
async def unlike_track(
    track_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep, resources: ResourcesDep
) -> Response:
    """Stop liking a track (not liked: no change)."""
    user_id = _user_id(principal)
    if await service.unlike_track(db_session=db_session, user_id=user_id, track_id=track_id):
        await _record_library_events(
            resources, db_session, user_id, "unlike", [{"track_id": track_id}]
        )
    return Response(status_code=204)


@router.get("/me/likes/albums", response_model=Page[LikedAlbumRead], summary="Liked albums")
async def list_liked_albums(
    principal: LibraryReader, db_session: SessionDep, page: PageDep
) -> Page[LikedAlbumRead]:
    """Albums you like, most recently liked first."""
    return await service.list_liked_albums(
        db_session=db_session, user_id=_user_id(principal), limit=page.limit, cursor=page.cursor
    )


@router.get(
    "/me/likes/albums/contains", response_model=list[bool], summary="Are these albums liked?"
)
async def liked_albums_contain(
    principal: LibraryReader, db_session: SessionDep, ids: ContainsIds
) -> list[bool]:
    """For each id, in order, whether you like that album."""
    return await service.saved_contains(
        db_session=db_session, user_id=_user_id(principal), kind="album", ids=_ids(ids)
    )


@router.put("/me/likes/albums/{album_id}", status_code=204, summary="Like an album")
async def like_album(
    album_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep, resources: ResourcesDep
) -> Response:
    """Like an album (again: no change)."""
    user_id = _user_id(principal)
    if await service.like_album(db_session=db_session, user_id=user_id, album_id=album_id):
        await _record_library_events(
            resources, db_session, user_id, "like", [{"album_id": album_id}]
        )
    return Response(status_code=204)


@router.delete("/me/likes/albums/{album_id}", status_code=204, summary="Unlike an album")
async def unlike_album(
    album_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep, resources: ResourcesDep
) -> Response:
    """Stop liking an album (not liked: no change)."""
    user_id = _user_id(principal)
    if await service.unlike_album(db_session=db_session, user_id=user_id, album_id=album_id):
        await _record_library_events(
            resources, db_session, user_id, "unlike", [{"album_id": album_id}]
        )
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Follows


@router.get(
    "/me/following/artists", response_model=Page[FollowedArtistRead], summary="Followed artists"
)
async def list_followed_artists(
    principal: LibraryReader, db_session: SessionDep, page: PageDep
) -> Page[FollowedArtistRead]:
    """Artists you follow, most recently followed first."""
    return await service.list_followed_artists(
        db_session=db_session, user_id=_user_id(principal), limit=page.limit, cursor=page.cursor
    )


@router.get(
    "/me/following/artists/contains",
    response_model=list[bool],
    summary="Are these artists followed?",
)
async def followed_artists_contain(
    principal: LibraryReader, db_session: SessionDep, ids: ContainsIds
) -> list[bool]:
    """For each id, in order, whether you follow that artist."""
    return await service.saved_contains(
        db_session=db_session, user_id=_user_id(principal), kind="artist", ids=_ids(ids)
    )


@router.put("/me/following/artists/{artist_id}", status_code=204, summary="Follow an artist")
async def follow_artist(
    artist_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep, resources: ResourcesDep
) -> Response:
    """Follow an artist (again: no change)."""
    user_id = _user_id(principal)
    if await service.follow_artist(db_session=db_session, user_id=user_id, artist_id=artist_id):
        await _record_library_events(
            resources, db_session, user_id, "follow", [{"artist_id": artist_id}]
        )
    return Response(status_code=204)


@router.delete("/me/following/artists/{artist_id}", status_code=204, summary="Unfollow an artist")
async def unfollow_artist(
    artist_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep
) -> Response:
    """Stop following an artist (not followed: no change)."""
    await service.unfollow_artist(
        db_session=db_session, user_id=_user_id(principal), artist_id=artist_id
    )
    return Response(status_code=204)


@router.get(
    "/me/following/playlists",
    response_model=Page[FollowedPlaylistRead],
    summary="Followed playlists",
)
async def list_followed_playlists(
    principal: LibraryReader, db_session: SessionDep, page: PageDep
) -> Page[FollowedPlaylistRead]:
    """Playlists you follow and may still read, most recently followed first."""
    return await service.list_followed_playlists(
        db_session=db_session, user_id=_user_id(principal), limit=page.limit, cursor=page.cursor
    )


@router.get(
    "/me/following/playlists/contains",
    response_model=list[bool],
    summary="Are these playlists followed?",
)
async def followed_playlists_contain(
    principal: LibraryReader, db_session: SessionDep, ids: ContainsIds
) -> list[bool]:
    """For each id, in order, whether you follow that playlist."""
    return await service.saved_contains(
        db_session=db_session, user_id=_user_id(principal), kind="playlist", ids=_ids(ids)
    )


@router.put("/me/following/playlists/{playlist_id}", status_code=204, summary="Follow a playlist")
async def follow_playlist(
    playlist_id: uuid.UUID,
    principal: LibraryEditor,
    db_session: SessionDep,
    resources: ResourcesDep,
) -> Response:
    """Follow a playlist you may read (again: no change)."""
    user_id = _user_id(principal)
    if await service.follow_playlist(
        db_session=db_session, user_id=user_id, playlist_id=playlist_id
    ):
        await _record_library_events(
            resources, db_session, user_id, "follow", [{"playlist_id": playlist_id}]
        )
    return Response(status_code=204)


@router.delete(
    "/me/following/playlists/{playlist_id}", status_code=204, summary="Unfollow a playlist"
)
async def unfollow_playlist(
    playlist_id: uuid.UUID, principal: LibraryEditor, db_session: SessionDep
) -> Response:
    """Stop following a playlist (not followed: no change)."""
    await service.unfollow_playlist(
        db_session=db_session, user_id=_user_id(principal), playlist_id=playlist_id
    )
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Playlists


@router.post(
    "/me/playlists", status_code=201, response_model=PlaylistRead, summary="Create a playlist"
)
async def create_playlist(
    body: PlaylistCreate, principal: PlaylistEditor, db_session: SessionDep
) -> Response:
    """A new, empty playlist owned by you."""
    playlist = await service.create_playlist(
        db_session=db_session, owner_id=_user_id(principal), new=body
    )
    return _playlist_response(
        playlist, status_code=201, headers={"Location": f"/v1/playlists/{playlist.id}"}
    )


@router.get("/me/playlists", response_model=Page[PlaylistRead], summary="Your playlists")
async def list_my_playlists(
    principal: PlaylistReader, db_session: SessionDep, page: PageDep
) -> Page[PlaylistRead]:
    """Playlists you own, collaborate on or follow, newest first."""
    return await service.list_my_playlists(
        db_session=db_session, user_id=_user_id(principal), limit=page.limit, cursor=page.cursor
    )


@router.get("/playlists/{playlist_id}", response_model=PlaylistRead, summary="Get a playlist")
async def get_playlist(
    playlist_id: uuid.UUID, principal: Authenticated, db_session: SessionDep
) -> Response:
    """A public playlist, or one you own or collaborate on; its ETag is its snapshot."""
    playlist = await service.get_playlist(
        db_session=db_session, playlist_id=playlist_id, viewer_id=principal.user_id
    )
    return _playlist_response(playlist)


@router.patch("/playlists/{playlist_id}", response_model=PlaylistRead, summary="Change a playlist")
async def update_playlist(
    playlist_id: uuid.UUID,
    body: PlaylistUpdate,
    principal: PlaylistEditor,
    db_session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Rename, describe, publish or make collaborative (owner only)."""
    playlist = await service.update_playlist(
        db_session=db_session,
        playlist_id=playlist_id,
        user_id=_user_id(principal),
        changes=body,
        if_match=if_match,
    )
    return _playlist_response(playlist)


@router.delete("/playlists/{playlist_id}", status_code=204, summary="Delete a playlist")
async def delete_playlist(
    playlist_id: uuid.UUID,
    principal: PlaylistEditor,
    db_session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete a playlist you own, with its tracks list."""
    await service.delete_playlist(
        db_session=db_session,
        playlist_id=playlist_id,
        user_id=_user_id(principal),
        if_match=if_match,
    )
    return Response(status_code=204)


@router.get(
    "/playlists/{playlist_id}/tracks",
    response_model=Page[PlaylistItemRead],
    summary="A playlist's tracks",
)
async def list_playlist_tracks(
    playlist_id: uuid.UUID, principal: Authenticated, db_session: SessionDep, page: PageDep
) -> Page[PlaylistItemRead]:
    """The tracks in order, with who added each and when."""
    return await service.list_playlist_items(
        db_session=db_session,
        playlist_id=playlist_id,
        viewer_id=principal.user_id,
        limit=page.limit,
        cursor=page.cursor,
    )


@router.post(
    "/playlists/{playlist_id}/tracks",
    status_code=201,
    response_model=SnapshotRead,
    summary="Add tracks to a playlist",
)
async def add_playlist_tracks(
    playlist_id: uuid.UUID,
    body: PlaylistItemsAdd,
    principal: PlaylistEditor,
    db_session: SessionDep,
    resources: ResourcesDep,
    if_match: IfMatch = None,
) -> Response:
    """Insert tracks before `position`, or at the end; answers the new snapshot."""
    user_id = _user_id(principal)
    snapshot = await service.add_tracks(
        db_session=db_session,
        playlist_id=playlist_id,
        user_id=user_id,
        track_ids=body.track_ids,
        position=body.position,
        if_match=if_match,
    )
    await _record_library_events(
        resources,
        db_session,
        user_id,
        "playlist_add",
        [{"track_id": track_id, "playlist_id": playlist_id} for track_id in body.track_ids],
    )
    return _snapshot_response(snapshot, status_code=201)


@router.delete(
    "/playlists/{playlist_id}/tracks",
    response_model=SnapshotRead,
    summary="Remove tracks from a playlist",
)
async def remove_playlist_tracks(
    playlist_id: uuid.UUID,
    body: PlaylistItemsRemove,
    principal: PlaylistEditor,
    db_session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Remove items by position; each names its track, and a mismatch is a 409."""
    snapshot = await service.remove_tracks(
        db_session=db_session,
        playlist_id=playlist_id,
        user_id=_user_id(principal),
        items=body.items,
        if_match=if_match,
    )
    return _snapshot_response(snapshot)


@router.put(
    "/playlists/{playlist_id}/tracks",
    response_model=SnapshotRead,
    summary="Reorder a playlist's tracks",
)
async def reorder_playlist_tracks(
    playlist_id: uuid.UUID,
    body: PlaylistReorder,
    principal: PlaylistEditor,
    db_session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Move `range_length` items from `range_start` to before `insert_before`."""
    snapshot = await service.reorder_tracks(
        db_session=db_session,
        playlist_id=playlist_id,
        user_id=_user_id(principal),
        range_start=body.range_start,
        range_length=body.range_length,
        insert_before=body.insert_before,
        if_match=if_match,
    )
    return _snapshot_response(snapshot)


async def _read_image(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_ARTWORK_BYTES:
        raise ContentTooLarge(f"a cover may be at most {MAX_ARTWORK_BYTES // (1024 * 1024)} MB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_ARTWORK_BYTES:
            raise ContentTooLarge(f"a cover may be at most {MAX_ARTWORK_BYTES // (1024 * 1024)} MB")
        chunks.append(chunk)
    if size == 0:
        raise InvalidInput("send the image (JPEG, PNG or WebP) as the request body")
    return b"".join(chunks)


@router.put(
    "/playlists/{playlist_id}/cover",
    response_model=PlaylistRead,
    summary="Set a playlist's cover",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                kind: {"schema": {"type": "string", "format": "binary"}}
                for kind in ("image/jpeg", "image/png", "image/webp")
            },
        }
    },
)
async def set_playlist_cover(
    playlist_id: uuid.UUID,
    request: Request,
    principal: PlaylistEditor,
    db_session: SessionDep,
    store: StoreDep,
    if_match: IfMatch = None,
) -> Response:
    """A JPEG, PNG or WebP image as the body; re-encoded and stored in 64, 300 and 640 px."""
    image = await _read_image(request)
    playlist = await service.set_cover(
        db_session=db_session,
        store=store,
        playlist_id=playlist_id,
        user_id=_user_id(principal),
        image=image,
        if_match=if_match,
    )
    return _playlist_response(playlist)


@router.get(
    "/playlists/{playlist_id}/cover",
    summary="Get a playlist's cover image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_playlist_cover(
    playlist_id: uuid.UUID,
    principal: Authenticated,
    db_session: SessionDep,
    store: StoreDep,
    size: Annotated[
        int | None,
        Query(description="Longest side in pixels: 64, 300 or 640; full size when omitted."),
    ] = None,
    v: Annotated[
        str | None, Query(max_length=64, description="The version in `cover_url`.")
    ] = None,
) -> Response:
    """The cover image of a playlist you may read."""
    key = await service.get_cover_key(
        db_session=db_session, playlist_id=playlist_id, viewer_id=principal.user_id
    )
    try:
        if size is None:
            image = await store.get(key)
        else:
            image = await media_service.artwork_variant(store=store, base_key=key, size=size)
    except BlobNotFound:
        raise NotFound(f"playlist {playlist_id} has no cover") from None
    media_type = next(
        (kind for magic, kind in ARTWORK_TYPES.items() if image.startswith(magic)),
        "application/octet-stream",
    )
    # Private playlists' covers must not sit in shared caches.
    return Response(
        image,
        media_type=media_type,
        headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/playlists/{playlist_id}/collaborators",
    response_model=list[CollaboratorRead],
    summary="A playlist's collaborators",
)
async def list_collaborators(
    playlist_id: uuid.UUID, principal: PlaylistReader, db_session: SessionDep
) -> list[CollaboratorRead]:
    """Users who may edit the tracks of this collaborative playlist."""
    return await service.list_collaborators(
        db_session=db_session, playlist_id=playlist_id, viewer_id=_user_id(principal)
    )


@router.post(
    "/playlists/{playlist_id}/collaborators",
    status_code=201,
    response_model=CollaboratorRead,
    summary="Invite a collaborator",
)
async def add_collaborator(
    playlist_id: uuid.UUID,
    body: CollaboratorAdd,
    principal: PlaylistEditor,
    db_session: SessionDep,
) -> CollaboratorRead:
    """Let a user add, remove and reorder tracks while the playlist is collaborative."""
    return await service.add_collaborator(
        db_session=db_session,
        playlist_id=playlist_id,
        owner_id=_user_id(principal),
        username=body.username,
    )


@router.delete(
    "/playlists/{playlist_id}/collaborators/{user_id}",
    status_code=204,
    summary="Remove a collaborator",
)
async def remove_collaborator(
    playlist_id: uuid.UUID, user_id: uuid.UUID, principal: PlaylistEditor, db_session: SessionDep
) -> Response:
    """The owner removes anyone; a collaborator may remove themselves."""
    await service.remove_collaborator(
        db_session=db_session,
        playlist_id=playlist_id,
        viewer_id=_user_id(principal),
        user_id=user_id,
    )
    return Response(status_code=204)

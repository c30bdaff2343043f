"""Library logic: likes, follows, and playlists with collaborators and conflict-safe edits.

Access to a playlist: its owner reads and edits everything; users the owner invited
(collaborators) read it and, while it is collaborative, add, remove and reorder its tracks;
everyone else reads it only when it is public. A private playlist of someone else does not
exist as far as the caller can tell (NotFound, never Forbidden).

Concurrent edits: every change first bumps the playlist's `version` with a conditional
UPDATE (`WHERE version = <the one just read>`). That statement takes the row lock on
PostgreSQL and the write lock on SQLite, so the position arithmetic that follows never
interleaves with another edit; losing the race means re-reading (or, when the client sent
If-Match, answering 412).

Other domains use it as `from encore.library import service as library_service`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from encore.auth import service as auth_service
from encore.catalog import service as catalog_service
from encore.db import new_id, utcnow
from encore.library.models import (
    FollowedArtist,
    FollowedPlaylist,
    LikedAlbum,
    LikedTrack,
    Playlist,
    PlaylistCollaborator,
    PlaylistItem,
)
from encore.library.schemas import (
    MAX_PLAYLIST_ITEMS,
    CollaboratorRead,
    FollowedArtistRead,
    FollowedPlaylistRead,
    LikedAlbumRead,
    LikedTrackRead,
    PlaylistCreate,
    PlaylistItemRead,
    PlaylistItemRef,
    PlaylistRead,
    PlaylistUpdate,
)
from encore.media import service as media_service
from encore.media.artwork import InvalidArtwork, normalize_artwork
from encore.pagination import Page, decode_cursor, encode_cursor
from encore.problems import Conflict, ContentTooLarge, Forbidden, InvalidInput, NotFound, Problem
from encore.storage import BlobStore

MAX_CONTAINS_IDS = 50
COVER_FORMATS = ("JPEG", "PNG", "WEBP")
# Conditional version bumps lost to other edits before giving up (each loss means another
# edit committed, so this is only reached under a storm of edits).
_MAX_EDIT_ATTEMPTS = 8


class PlaylistChanged(Problem):
    """The playlist changed since the snapshot the client named in If-Match."""

    status = 412
    title = "Precondition failed"
    slug = "playlist-changed"


def snapshot_id(version: int) -> str:
    """The public snapshot id of a playlist version."""
    return f"v{version}"


def etag(version: int) -> str:
    """The ETag header value of a playlist version."""
    return f'"{snapshot_id(version)}"'


def if_match_allows(if_match: str | None, version: int) -> bool:
    """Whether an If-Match header value names this version (or `*`); True when absent."""
    if if_match is None:
        return True
    current = snapshot_id(version)
    for tag in if_match.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == current:
            return True
    return False


def _dialect(db_session: AsyncSession) -> str:
    bind = db_session.get_bind()
    return bind.dialect.name


async def _insert_if_absent(db_session: AsyncSession, model: Any, values: dict[str, Any]) -> bool:
    # One statement, so two identical requests at once cannot both insert nor fail.
    builder = sqlite_insert if _dialect(db_session) == "sqlite" else postgresql_insert
    result = await db_session.execute(builder(model).values(**values).on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 0) == 1)


async def _delete_if_present(db_session: AsyncSession, model: Any, *conditions: Any) -> bool:
    result = await db_session.execute(delete(model).where(*conditions))
    return bool(getattr(result, "rowcount", 0))


async def _require_catalog(db_session: AsyncSession, kind: str, item_id: uuid.UUID) -> None:
    found = await catalog_service.get_existing_ids(db_session=db_session, kind=kind, ids=[item_id])
    if item_id not in found:
        raise NotFound(f"no {kind} with id {item_id}")


# ---------------------------------------------------------------------------------------------
# Likes and follows


async def like_track(*, db_session: AsyncSession, user_id: uuid.UUID, track_id: uuid.UUID) -> bool:
    """Like a track; True when it was not liked before. NotFound for an unknown track."""
    await _require_catalog(db_session, "track", track_id)
    return await _insert_if_absent(
        db_session, LikedTrack, {"user_id": user_id, "track_id": track_id, "created_at": utcnow()}
    )


async def unlike_track(
    *, db_session: AsyncSession, user_id: uuid.UUID, track_id: uuid.UUID
) -> bool:
    """Stop liking a track; True when it was liked."""
    return await _delete_if_present(
        db_session, LikedTrack, LikedTrack.user_id == user_id, LikedTrack.track_id == track_id
    )


async def like_album(*, db_session: AsyncSession, user_id: uuid.UUID, album_id: uuid.UUID) -> bool:
    """Like an album; True when it was not liked before. NotFound for an unknown album."""
    await _require_catalog(db_session, "album", album_id)
    return await _insert_if_absent(
        db_session, LikedAlbum, {"user_id": user_id, "album_id": album_id, "created_at": utcnow()}
    )


async def unlike_album(
    *, db_session: AsyncSession, user_id: uuid.UUID, album_id: uuid.UUID
) -> bool:
    """Stop liking an album; True when it was liked."""
    return await _delete_if_present(
        db_session, LikedAlbum, LikedAlbum.user_id == user_id, LikedAlbum.album_id == album_id
    )


async def follow_artist(
    *, db_session: AsyncSession, user_id: uuid.UUID, artist_id: uuid.UUID
) -> bool:
    """Follow an artist; True when not followed before. NotFound for an unknown artist."""
    await _require_catalog(db_session, "artist", artist_id)
    return await _insert_if_absent(
        db_session,
        FollowedArtist,
        {"user_id": user_id, "artist_id": artist_id, "created_at": utcnow()},
    )


async def unfollow_artist(
    *, db_session: AsyncSession, user_id: uuid.UUID, artist_id: uuid.UUID
) -> bool:
    """Stop following an artist; True when it was followed."""
    return await _delete_if_present(
        db_session,
        FollowedArtist,
        FollowedArtist.user_id == user_id,
        FollowedArtist.artist_id == artist_id,
    )


async def follow_playlist(
    *, db_session: AsyncSession, user_id: uuid.UUID, playlist_id: uuid.UUID
) -> bool:
    """Follow a playlist the user may read; True when not followed before."""
    await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=user_id)
    return await _insert_if_absent(
        db_session,
        FollowedPlaylist,
        {"user_id": user_id, "playlist_id": playlist_id, "created_at": utcnow()},
    )


async def unfollow_playlist(
    *, db_session: AsyncSession, user_id: uuid.UUID, playlist_id: uuid.UUID
) -> bool:
    """Stop following a playlist; True when it was followed."""
    return await _delete_if_present(
        db_session,
        FollowedPlaylist,
        FollowedPlaylist.user_id == user_id,
        FollowedPlaylist.playlist_id == playlist_id,
    )


_SAVED_KINDS: dict[str, tuple[Any, Any]] = {
    "track": (LikedTrack, LikedTrack.track_id),
    "album": (LikedAlbum, LikedAlbum.album_id),
    "artist": (FollowedArtist, FollowedArtist.artist_id),
    "playlist": (FollowedPlaylist, FollowedPlaylist.playlist_id),
}


async def saved_contains(
    *, db_session: AsyncSession, user_id: uuid.UUID, kind: str, ids: Sequence[uuid.UUID]
) -> list[bool]:
    """For each id, in order, whether the user likes (tracks, albums) or follows it."""
    model, column = _SAVED_KINDS[kind]
    if not ids:
        return []
    saved = set(
        (
            await db_session.scalars(
                select(column).where(model.user_id == user_id, column.in_(list(set(ids))))
            )
        ).all()
    )
    return [item_id in saved for item_id in ids]


@dataclass(frozen=True, slots=True)
class _Saved:
    item_id: uuid.UUID
    saved_at: datetime


def _cursor_values(cursor: str) -> tuple[datetime, uuid.UUID]:
    after = decode_cursor(cursor, {"at", "id"})
    try:
        return datetime.fromisoformat(str(after["at"])), uuid.UUID(str(after["id"]))
    except ValueError:
        raise InvalidInput("cursor is not valid: pass the next_cursor of a previous page") from None


async def _saved_page(
    db_session: AsyncSession, kind: str, user_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[_Saved], str | None]:
    model, column = _SAVED_KINDS[kind]
    query = (
        select(column, model.created_at)
        .where(model.user_id == user_id)
        .order_by(model.created_at.desc(), column.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        at, after_id = _cursor_values(cursor)
        query = query.where(tuple_(model.created_at, column) < (at, after_id))
    rows = [_Saved(item_id, saved_at) for item_id, saved_at in (await db_session.execute(query))]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(
            {"at": rows[-1].saved_at.isoformat(), "id": str(rows[-1].item_id)}
        )
    return rows, next_cursor


async def list_liked_tracks(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[LikedTrackRead]:
    """The user's liked tracks, most recently liked first."""
    rows, next_cursor = await _saved_page(db_session, "track", user_id, limit, cursor)
    tracks = await catalog_service.get_tracks(
        db_session=db_session, track_ids=[row.item_id for row in rows]
    )
    return Page(
        items=[
            LikedTrackRead(liked_at=row.saved_at, track=tracks[row.item_id])
            for row in rows
            if row.item_id in tracks
        ],
        next_cursor=next_cursor,
    )


async def list_liked_albums(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[LikedAlbumRead]:
    """The user's liked albums, most recently liked first."""
    rows, next_cursor = await _saved_page(db_session, "album", user_id, limit, cursor)
    albums = await catalog_service.get_album_summaries(
        db_session=db_session, album_ids=[row.item_id for row in rows]
    )
    return Page(
        items=[
            LikedAlbumRead(liked_at=row.saved_at, album=albums[row.item_id])
            for row in rows
            if row.item_id in albums
        ],
        next_cursor=next_cursor,
    )


async def list_followed_artists(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[FollowedArtistRead]:
    """Artists the user follows, most recently followed first."""
    rows, next_cursor = await _saved_page(db_session, "artist", user_id, limit, cursor)
    artists = await catalog_service.get_artists(
        db_session=db_session, artist_ids=[row.item_id for row in rows]
    )
    return Page(
        items=[
            FollowedArtistRead(followed_at=row.saved_at, artist=artists[row.item_id])
            for row in rows
            if row.item_id in artists
        ],
        next_cursor=next_cursor,
    )


async def list_followed_playlists(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[FollowedPlaylistRead]:
    """Playlists the user follows (and may still read), most recently followed first."""
    rows, next_cursor = await _saved_page(db_session, "playlist", user_id, limit, cursor)
    playlists = await get_playlists(
        db_session=db_session, playlist_ids=[row.item_id for row in rows], viewer_id=user_id
    )
    return Page(
        items=[
            FollowedPlaylistRead(followed_at=row.saved_at, playlist=playlists[row.item_id])
            for row in rows
            if row.item_id in playlists
        ],
        next_cursor=next_cursor,
    )


# ---------------------------------------------------------------------------------------------
# Playlists: reading and access


def cover_url(playlist: Playlist) -> str | None:
    """Path of a playlist's cover image (versioned for caching), or None."""
    if playlist.cover_key is None:
        return None
    return (
        f"/v1/playlists/{playlist.id}/cover?v={catalog_service.artwork_version(playlist.cover_key)}"
    )


def playlist_read(playlist: Playlist) -> PlaylistRead:
    """The API shape of a playlist."""
    return PlaylistRead(
        id=playlist.id,
        owner_id=playlist.owner_user_id,
        name=playlist.name,
        description=playlist.description,
        public=playlist.is_public,
        collaborative=playlist.collaborative,
        snapshot_id=snapshot_id(playlist.version),
        track_count=playlist.item_count,
        cover_url=cover_url(playlist),
        created_at=playlist.created_at,
        updated_at=playlist.updated_at,
    )


@dataclass(frozen=True, slots=True)
class PlaylistAccess:
    """A playlist as one caller sees it, and what that caller may do to it."""

    playlist: Playlist
    is_owner: bool
    is_collaborator: bool

    @property
    def may_edit_items(self) -> bool:
        """Add, remove and reorder tracks: the owner, or collaborators while collaborative."""
        return self.is_owner or (self.is_collaborator and self.playlist.collaborative)


async def _is_collaborator(
    db_session: AsyncSession, playlist_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    found = await db_session.scalar(
        select(PlaylistCollaborator.user_id).where(
            PlaylistCollaborator.playlist_id == playlist_id,
            PlaylistCollaborator.user_id == user_id,
        )
    )
    return found is not None


async def _readable_playlist(
    db_session: AsyncSession, *, playlist_id: uuid.UUID, viewer_id: uuid.UUID | None
) -> PlaylistAccess:
    playlist = await db_session.get(Playlist, playlist_id, populate_existing=True)
    if playlist is None:
        raise NotFound(f"no playlist with id {playlist_id}")
    is_owner = viewer_id is not None and playlist.owner_user_id == viewer_id
    is_collaborator = (
        not is_owner
        and viewer_id is not None
        and await _is_collaborator(db_session, playlist_id, viewer_id)
    )
    if not (is_owner or is_collaborator or playlist.is_public):
        # Someone else's private playlist: its existence is not disclosed.
        raise NotFound(f"no playlist with id {playlist_id}")
    return PlaylistAccess(playlist=playlist, is_owner=is_owner, is_collaborator=is_collaborator)


async def get_playlist(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, viewer_id: uuid.UUID | None
) -> PlaylistRead:
    """A playlist the viewer may read; NotFound otherwise."""
    access = await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=viewer_id)
    return playlist_read(access.playlist)


async def get_playlists(
    *,
    db_session: AsyncSession,
    playlist_ids: Collection[uuid.UUID],
    viewer_id: uuid.UUID | None,
) -> dict[uuid.UUID, PlaylistRead]:
    """Playlists by id that the viewer may read (the others left out)."""
    if not playlist_ids:
        return {}
    visible: list[ColumnElement[bool]] = [Playlist.is_public.is_(True)]
    if viewer_id is not None:
        collaborating = select(PlaylistCollaborator.playlist_id).where(
            PlaylistCollaborator.user_id == viewer_id
        )
        visible += [Playlist.owner_user_id == viewer_id, Playlist.id.in_(collaborating)]
    playlists = (
        await db_session.scalars(
            select(Playlist).where(Playlist.id.in_(list(playlist_ids)), or_(*visible))
        )
    ).all()
    return {playlist.id: playlist_read(playlist) for playlist in playlists}


async def get_follower_counts(
    *, db_session: AsyncSession, playlist_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many users follow each of these playlists (absent: none)."""
    if not playlist_ids:
        return {}
    rows = await db_session.execute(
        select(FollowedPlaylist.playlist_id, func.count())
        .where(FollowedPlaylist.playlist_id.in_(list(playlist_ids)))
        .group_by(FollowedPlaylist.playlist_id)
    )
    return {playlist_id: int(count) for playlist_id, count in rows.all()}


async def list_my_playlists(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[PlaylistRead]:
    """Playlists the user owns, collaborates on or follows, newest first."""
    followed = select(FollowedPlaylist.playlist_id).where(FollowedPlaylist.user_id == user_id)
    collaborating = select(PlaylistCollaborator.playlist_id).where(
        PlaylistCollaborator.user_id == user_id
    )
    query = (
        select(Playlist)
        .where(
            or_(
                Playlist.owner_user_id == user_id,
                Playlist.id.in_(collaborating),
                and_(
                    Playlist.id.in_(followed),
                    # A followed playlist its owner made private drops out of the list.
                    Playlist.is_public,
                ),
            )
        )
        .order_by(Playlist.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        after = decode_cursor(cursor, {"id"})
        try:
            query = query.where(Playlist.id < uuid.UUID(str(after["id"])))
        except ValueError:
            raise InvalidInput("cursor is not valid") from None
    playlists = list((await db_session.scalars(query)).all())
    next_cursor = None
    if len(playlists) > limit:
        playlists = playlists[:limit]
        next_cursor = encode_cursor({"id": str(playlists[-1].id)})
    return Page(items=[playlist_read(p) for p in playlists], next_cursor=next_cursor)


async def list_playlist_items(
    *,
    db_session: AsyncSession,
    playlist_id: uuid.UUID,
    viewer_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> Page[PlaylistItemRead]:
    """A readable playlist's tracks in order, with who added each and when."""
    await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=viewer_id)
    query = (
        select(PlaylistItem)
        .where(PlaylistItem.playlist_id == playlist_id)
        .order_by(PlaylistItem.position)
        .limit(limit + 1)
    )
    if cursor is not None:
        after = decode_cursor(cursor, {"position"})["position"]
        if not isinstance(after, int):
            raise InvalidInput("cursor is not valid")
        query = query.where(PlaylistItem.position > after)
    items = list((await db_session.scalars(query)).all())
    next_cursor = None
    if len(items) > limit:
        items = items[:limit]
        next_cursor = encode_cursor({"position": items[-1].position})
    tracks = await catalog_service.get_tracks(
        db_session=db_session, track_ids={item.track_id for item in items}
    )
    return Page(
        items=[
            PlaylistItemRead(
                position=item.position,
                track=tracks[item.track_id],
                added_at=item.added_at,
                added_by=item.added_by_user_id,
            )
            for item in items
            if item.track_id in tracks
        ],
        next_cursor=next_cursor,
    )


# ---------------------------------------------------------------------------------------------
# Playlists: changes


async def create_playlist(
    *, db_session: AsyncSession, owner_id: uuid.UUID, new: PlaylistCreate
) -> PlaylistRead:
    """Make a playlist owned by owner_id."""
    now = utcnow()
    playlist = Playlist(
        owner_user_id=owner_id,
        name=new.name,
        name_key=catalog_service.name_key(new.name)[:200],
        description=new.description,
        is_public=new.public,
        collaborative=new.collaborative,
        version=1,
        item_count=0,
        created_at=now,
        updated_at=now,
    )
    db_session.add(playlist)
    await db_session.flush()
    return playlist_read(playlist)


async def _begin_edit(
    db_session: AsyncSession,
    *,
    playlist_id: uuid.UUID,
    user_id: uuid.UUID,
    if_match: str | None,
    owner_only: bool,
) -> Playlist:
    # Read, check access and If-Match, then claim the next version with a conditional
    # UPDATE; from that statement on, this transaction holds the playlist (row lock on
    # PostgreSQL, write lock on SQLite) until it ends.
    for _ in range(_MAX_EDIT_ATTEMPTS):
        access = await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=user_id)
        if owner_only and not access.is_owner:
            raise Forbidden("only the playlist's owner may do this")
        if not access.may_edit_items:
            raise Forbidden("you may not change this playlist's tracks")
        playlist = access.playlist
        if not if_match_allows(if_match, playlist.version):
            raise PlaylistChanged(
                f"the playlist is at snapshot {snapshot_id(playlist.version)}, not {if_match}",
                extra={"snapshot_id": snapshot_id(playlist.version)},
            )
        claimed = await db_session.execute(
            update(Playlist)
            .where(Playlist.id == playlist_id, Playlist.version == playlist.version)
            .values(version=Playlist.version + 1, updated_at=utcnow())
        )
        if getattr(claimed, "rowcount", 0) == 1:
            await db_session.refresh(playlist)
            return playlist
        if if_match is not None:
            raise PlaylistChanged("the playlist changed while this request was being made")
    raise Conflict("the playlist is being changed by many requests at once; try again")


async def update_playlist(
    *,
    db_session: AsyncSession,
    playlist_id: uuid.UUID,
    user_id: uuid.UUID,
    changes: PlaylistUpdate,
    if_match: str | None,
) -> PlaylistRead:
    """Change a playlist's details (owner only)."""
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=user_id, if_match=if_match, owner_only=True
    )
    if changes.name is not None:
        playlist.name = changes.name
        playlist.name_key = catalog_service.name_key(changes.name)[:200]
    if changes.description is not None:
        playlist.description = changes.description
    if changes.public is not None:
        playlist.is_public = changes.public
    if changes.collaborative is not None:
        playlist.collaborative = changes.collaborative
    await db_session.flush()
    return playlist_read(playlist)


async def delete_playlist(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, user_id: uuid.UUID, if_match: str | None
) -> None:
    """Delete a playlist (owner only), with its items, collaborators and followers."""
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=user_id, if_match=if_match, owner_only=True
    )
    await db_session.delete(playlist)
    await db_session.flush()


async def _item_count(db_session: AsyncSession, playlist_id: uuid.UUID) -> int:
    return int(
        await db_session.scalar(select(func.count()).where(PlaylistItem.playlist_id == playlist_id))
        or 0
    )


async def add_tracks(
    *,
    db_session: AsyncSession,
    playlist_id: uuid.UUID,
    user_id: uuid.UUID,
    track_ids: Sequence[uuid.UUID],
    position: int | None,
    if_match: str | None,
) -> str:
    """Insert tracks, in order, before `position` (at the end when None); the new snapshot."""
    known = await catalog_service.get_existing_ids(
        db_session=db_session, kind="track", ids=set(track_ids)
    )
    unknown = [str(track_id) for track_id in track_ids if track_id not in known]
    if unknown:
        raise InvalidInput(
            f"no track with id {unknown[0]}",
            extra={"errors": [{"field": "body.track_ids", "message": "unknown track id"}]},
        )
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=user_id, if_match=if_match, owner_only=False
    )
    count = await _item_count(db_session, playlist_id)
    if count + len(track_ids) > MAX_PLAYLIST_ITEMS:
        raise ContentTooLarge(
            f"a playlist holds at most {MAX_PLAYLIST_ITEMS} tracks; it has {count}"
        )
    at = count if position is None else position
    if at > count:
        raise InvalidInput(
            f"position {at} is past the end of the playlist ({count} tracks)",
            extra={"errors": [{"field": "body.position", "message": "past the end"}]},
        )
    if at < count:
        await db_session.execute(
            update(PlaylistItem)
            .where(PlaylistItem.playlist_id == playlist_id, PlaylistItem.position >= at)
            .values(position=PlaylistItem.position + len(track_ids))
        )
    now = utcnow()
    await db_session.execute(
        insert(PlaylistItem),
        [
            {
                "id": new_id(),
                "playlist_id": playlist_id,
                "position": at + offset,
                "track_id": track_id,
                "added_by_user_id": user_id,
                "added_at": now,
            }
            for offset, track_id in enumerate(track_ids)
        ],
    )
    playlist.item_count = count + len(track_ids)
    await db_session.flush()
    return snapshot_id(playlist.version)


async def remove_tracks(
    *,
    db_session: AsyncSession,
    playlist_id: uuid.UUID,
    user_id: uuid.UUID,
    items: Sequence[PlaylistItemRef],
    if_match: str | None,
) -> str:
    """Remove the items at these positions, each checked against its track; the new snapshot."""
    positions = [item.position for item in items]
    if len(set(positions)) != len(positions):
        raise InvalidInput("each position may be named once")
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=user_id, if_match=if_match, owner_only=False
    )
    rows = await db_session.execute(
        select(PlaylistItem.position, PlaylistItem.track_id).where(
            PlaylistItem.playlist_id == playlist_id,
            PlaylistItem.position.in_(positions),
        )
    )
    found = {position: track_id for position, track_id in rows}
    for item in items:
        actual = found.get(item.position)
        if actual != item.track_id:
            where = "no item" if actual is None else f"track {actual}"
            raise Conflict(
                f"position {item.position} holds {where}, not track {item.track_id}; "
                "read the playlist again",
                extra={"snapshot_id": snapshot_id(playlist.version - 1)},
            )
    await db_session.execute(
        delete(PlaylistItem).where(
            PlaylistItem.playlist_id == playlist_id, PlaylistItem.position.in_(positions)
        )
    )
    removed = sorted(positions)
    # Each remaining item moves up by the number of removed items before it.
    shift = sum(
        (case((PlaylistItem.position > removed_at, 1), else_=0) for removed_at in removed),
        start=case((PlaylistItem.position < 0, 1), else_=0),
    )
    await db_session.execute(
        update(PlaylistItem)
        .where(PlaylistItem.playlist_id == playlist_id, PlaylistItem.position > removed[0])
        .values(position=PlaylistItem.position - shift)
    )
    playlist.item_count = await _item_count(db_session, playlist_id)
    await db_session.flush()
    return snapshot_id(playlist.version)


async def reorder_tracks(
    *,
    db_session: AsyncSession,
    playlist_id: uuid.UUID,
    user_id: uuid.UUID,
    range_start: int,
    range_length: int,
    insert_before: int,
    if_match: str | None,
) -> str:
    """Move a range of items before another position, as Spotify's reorder; the new snapshot."""
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=user_id, if_match=if_match, owner_only=False
    )
    count = await _item_count(db_session, playlist_id)
    end = range_start + range_length
    if range_start >= count or end > count or insert_before > count:
        raise InvalidInput(
            f"the range {range_start}+{range_length} and insert_before {insert_before} must lie "
            f"within the playlist's {count} tracks"
        )
    position = PlaylistItem.position
    mine = PlaylistItem.playlist_id == playlist_id
    if insert_before < range_start:
        await db_session.execute(
            update(PlaylistItem)
            .where(mine, position >= insert_before, position < end)
            .values(
                position=case(
                    (position >= range_start, position - (range_start - insert_before)),
                    else_=position + range_length,
                )
            )
        )
    elif insert_before > end:
        await db_session.execute(
            update(PlaylistItem)
            .where(mine, position >= range_start, position < insert_before)
            .values(
                position=case(
                    (position < end, position + (insert_before - end)),
                    else_=position - range_length,
                )
            )
        )
    await db_session.flush()
    return snapshot_id(playlist.version)


async def set_cover(
    *,
    db_session: AsyncSession,
    store: BlobStore,
    playlist_id: uuid.UUID,
    user_id: uuid.UUID,
    image: bytes,
    if_match: str | None,
) -> PlaylistRead:
    """Give a playlist a cover (owner only): checked and re-encoded like album artwork."""
    try:
        artwork = await asyncio.to_thread(normalize_artwork, image, COVER_FORMATS)
    except InvalidArtwork as exc:
        raise InvalidInput(f"the image is not usable as a cover: {exc}") from None
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=user_id, if_match=if_match, owner_only=True
    )
    await store.put(artwork.key, artwork.data, content_type="image/jpeg")
    for size in media_service.ARTWORK_SIZES:
        await media_service.artwork_variant(store=store, base_key=artwork.key, size=size)
    playlist.cover_key = artwork.key
    await db_session.flush()
    return playlist_read(playlist)


async def get_cover_key(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, viewer_id: uuid.UUID | None
) -> str:
    """Blob key of a readable playlist's cover; NotFound when it has none."""
    access = await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=viewer_id)
    if access.playlist.cover_key is None:
        raise NotFound(f"playlist {playlist_id} has no cover")
    return access.playlist.cover_key


# ---------------------------------------------------------------------------------------------
# Collaborators


async def list_collaborators(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, viewer_id: uuid.UUID
) -> list[CollaboratorRead]:
    """Who may edit a playlist besides its owner (visible to the owner and collaborators)."""
    access = await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=viewer_id)
    if not (access.is_owner or access.is_collaborator):
        raise Forbidden("only the owner and collaborators see who collaborates")
    rows = (
        await db_session.scalars(
            select(PlaylistCollaborator)
            .where(PlaylistCollaborator.playlist_id == playlist_id)
            .order_by(PlaylistCollaborator.added_at, PlaylistCollaborator.user_id)
        )
    ).all()
    result = []
    for row in rows:
        user = await auth_service.get_user(db_session=db_session, user_id=row.user_id)
        result.append(
            CollaboratorRead(user_id=row.user_id, username=user.username, added_at=row.added_at)
        )
    return result


async def add_collaborator(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, owner_id: uuid.UUID, username: str
) -> CollaboratorRead:
    """Invite a user to edit a playlist's tracks (owner only); idempotent."""
    access = await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=owner_id)
    if not access.is_owner:
        raise Forbidden("only the playlist's owner may invite collaborators")
    user = await auth_service.find_user_by_username(db_session=db_session, username=username)
    if user is None or user.disabled:
        raise NotFound(f"no user named {username}")
    if user.id == owner_id:
        raise InvalidInput("the owner already edits the playlist")
    await _insert_if_absent(
        db_session,
        PlaylistCollaborator,
        {"playlist_id": playlist_id, "user_id": user.id, "added_at": utcnow()},
    )
    added_at = await db_session.scalar(
        select(PlaylistCollaborator.added_at).where(
            PlaylistCollaborator.playlist_id == playlist_id,
            PlaylistCollaborator.user_id == user.id,
        )
    )
    assert added_at is not None
    return CollaboratorRead(user_id=user.id, username=user.username, added_at=added_at)


async def remove_collaborator(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, viewer_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    """Remove a collaborator (the owner, or collaborators leaving); True when one was removed."""
    access = await _readable_playlist(db_session, playlist_id=playlist_id, viewer_id=viewer_id)
    if not (access.is_owner or viewer_id == user_id):
        raise Forbidden("only the playlist's owner may remove other collaborators")
    if not access.is_owner and await auth_service.is_system_user(
        db_session=db_session, user_id=access.playlist.owner_user_id
    ):
        raise Forbidden("a generated playlist is read-only to its listener")
    return await _delete_if_present(
        db_session,
        PlaylistCollaborator,
        PlaylistCollaborator.playlist_id == playlist_id,
        PlaylistCollaborator.user_id == user_id,
    )


# ---------------------------------------------------------------------------------------------
# System-owned playlists (generated for one listener by Encore itself)
#
# The system account owns them; the one listener each is for is its only collaborator, on a
# private playlist that is not collaborative: so the normal access rules make it readable by
# that listener alone (404 for everyone else) and read-only to them (403 for every change).


async def create_system_playlist(
    *,
    db_session: AsyncSession,
    owner_id: uuid.UUID,
    listener_id: uuid.UUID,
    name: str,
    description: str,
) -> uuid.UUID:
    """Make a private playlist owned by the system account that only `listener_id` reads."""
    read = await create_playlist(
        db_session=db_session,
        owner_id=owner_id,
        new=PlaylistCreate(name=name, description=description, public=False, collaborative=False),
    )
    await _insert_if_absent(
        db_session,
        PlaylistCollaborator,
        {"playlist_id": read.id, "user_id": listener_id, "added_at": utcnow()},
    )
    return read.id


async def replace_system_playlist_tracks(
    *,
    db_session: AsyncSession,
    playlist_id: uuid.UUID,
    owner_id: uuid.UUID,
    track_ids: Sequence[uuid.UUID],
    description: str | None = None,
) -> str:
    """Replace a system-owned playlist's tracks in place (same id); the new snapshot."""
    playlist = await _begin_edit(
        db_session, playlist_id=playlist_id, user_id=owner_id, if_match=None, owner_only=True
    )
    await db_session.execute(delete(PlaylistItem).where(PlaylistItem.playlist_id == playlist_id))
    now = utcnow()
    if track_ids:
        await db_session.execute(
            insert(PlaylistItem),
            [
                {
                    "id": new_id(),
                    "playlist_id": playlist_id,
                    "position": position,
                    "track_id": track_id,
                    "added_by_user_id": owner_id,
                    "added_at": now,
                }
                for position, track_id in enumerate(track_ids[:MAX_PLAYLIST_ITEMS])
            ],
        )
    playlist.item_count = min(len(track_ids), MAX_PLAYLIST_ITEMS)
    if description is not None:
        playlist.description = description
    await db_session.flush()
    return snapshot_id(playlist.version)


async def delete_system_playlist(
    *, db_session: AsyncSession, playlist_id: uuid.UUID, owner_id: uuid.UUID
) -> None:
    """Delete a system-owned playlist that is no longer generated."""
    await delete_playlist(
        db_session=db_session, playlist_id=playlist_id, user_id=owner_id, if_match=None
    )

"""Catalog logic: reading artists, albums, tracks and genres, and building them on import."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    Select,
    String,
    Table,
    and_,
    bindparam,
    event,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction, selectinload

from encore.catalog.models import (
    Album,
    AlbumArtist,
    AlbumGenre,
    AlbumType,
    Artist,
    CatalogRevision,
    CreditRole,
    Genre,
    ImportFailure,
    Track,
    TrackArtist,
    TrackGenre,
    TrackStatus,
)
from encore.catalog.schemas import (
    AlbumRead,
    AlbumRef,
    AlbumSummary,
    AlbumTrackRead,
    ArtistCredit,
    ArtistRead,
    GenreRead,
    TrackRead,
)
from encore.db import utcnow
from encore.pagination import Page, decode_cursor, encode_cursor
from encore.problems import NotFound

UNKNOWN_ARTIST = "Unknown Artist"
UNKNOWN_ALBUM = "Unknown Album"
_SORT_ARTICLES = ("the ", "a ", "an ")


def name_key(name: str) -> str:
    """Matching key of a name: accents removed, case folded, white space collapsed."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def sort_name(name: str) -> str:
    """Name to sort artists by: "The Beatles" sorts as "beatles"."""
    key = name_key(name)
    for article in _SORT_ARTICLES:
        if key.startswith(article) and len(key) > len(article):
            return key[len(article) :]
    return key


def artwork_version(artwork_key: str) -> str:
    """A short version tag of an artwork, from its content-addressed key."""
    return artwork_key.rsplit("/", 1)[-1].split(".", 1)[0][:16]


def artwork_url(album_id: uuid.UUID, artwork_key: str | None) -> str | None:
    """Path of an album's artwork image (versioned, so it can be cached forever), or None."""
    if not artwork_key:
        return None
    return f"/v1/albums/{album_id}/artwork?v={artwork_version(artwork_key)}"


# ---------------------------------------------------------------------------------------------
# Reading


def _credits(credits: Sequence[AlbumArtist | TrackArtist]) -> list[ArtistCredit]:
    return [ArtistCredit(id=c.artist.id, name=c.artist.name, role=c.role) for c in credits]


def _album_track(track: Track) -> AlbumTrackRead:
    return AlbumTrackRead(
        id=track.id,
        title=track.title,
        duration_ms=track.duration_ms,
        disc_number=track.disc_number,
        track_number=track.track_number,
        isrc=track.isrc,
        explicit=track.explicit,
        status=track.status,
        artists=_credits(track.credits),
    )


def _album_summary(album: Album) -> AlbumSummary:
    return AlbumSummary(
        id=album.id,
        title=album.title,
        release_date=album.release_date,
        album_type=album.album_type,
        artwork_url=artwork_url(album.id, album.artwork_key),
        artists=_credits(album.credits),
    )


async def get_artist(*, db_session: AsyncSession, artist_id: uuid.UUID) -> ArtistRead:
    """One artist; NotFound when there is none with that id."""
    artist = await db_session.get(Artist, artist_id)
    if artist is None:
        raise NotFound(f"no artist with id {artist_id}")
    return ArtistRead.model_validate(artist)


async def list_artists(
    *, db_session: AsyncSession, limit: int, cursor: str | None
) -> Page[ArtistRead]:
    """Every artist, alphabetically by sort name."""
    query = select(Artist).order_by(Artist.sort_name, Artist.id).limit(limit + 1)
    if cursor is not None:
        after = decode_cursor(cursor, {"sort_name", "id"})
        query = query.where(
            tuple_(Artist.sort_name, Artist.id) > (after["sort_name"], _cursor_id(after["id"]))
        )
    rows = list((await db_session.scalars(query)).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor({"sort_name": last.sort_name, "id": str(last.id)})
    return Page(items=[ArtistRead.model_validate(a) for a in rows], next_cursor=next_cursor)


def _cursor_id(value: Any) -> uuid.UUID:
    from encore.problems import InvalidInput

    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput("cursor is not valid") from None


def _cursor_date(value: Any) -> date:
    from encore.problems import InvalidInput

    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput("cursor is not valid") from None


def _album_list_query() -> Any:
    return select(Album).options(selectinload(Album.credits))


def _page_of_albums(albums: list[Album], limit: int) -> Page[AlbumSummary]:
    next_cursor = None
    if len(albums) > limit:
        albums = albums[:limit]
        last = albums[-1]
        next_cursor = encode_cursor(
            {
                "release_date": last.release_date.isoformat() if last.release_date else None,
                "id": str(last.id),
            }
        )
    return Page(items=[_album_summary(a) for a in albums], next_cursor=next_cursor)


def _newest_first_after(after: dict[str, Any]) -> Any:
    # Albums without a date come last; the keyset handles both halves of that order.
    after_id = _cursor_id(after["id"])
    if after["release_date"] is None:
        return and_(Album.release_date.is_(None), Album.id < after_id)
    after_date = _cursor_date(after["release_date"])
    return or_(
        Album.release_date < after_date,
        and_(Album.release_date == after_date, Album.id < after_id),
        Album.release_date.is_(None),
    )


async def list_artist_albums(
    *,
    db_session: AsyncSession,
    artist_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    album_types: Sequence[AlbumType] | None = None,
) -> Page[AlbumSummary]:
    """Albums an artist is credited on, newest first; NotFound for an unknown artist."""
    if await db_session.get(Artist, artist_id) is None:
        raise NotFound(f"no artist with id {artist_id}")
    credited = select(AlbumArtist.album_id).where(AlbumArtist.artist_id == artist_id)
    query = (
        _album_list_query()
        .where(Album.id.in_(credited))
        .order_by(Album.release_date.desc().nulls_last(), Album.id.desc())
        .limit(limit + 1)
    )
    if album_types:
        query = query.where(Album.album_type.in_(list(album_types)))
    if cursor is not None:
        query = query.where(_newest_first_after(decode_cursor(cursor, {"release_date", "id"})))
    albums = list((await db_session.scalars(query)).all())
    return _page_of_albums(albums, limit)


async def list_new_releases(
    *, db_session: AsyncSession, limit: int, cursor: str | None
) -> Page[AlbumSummary]:
    """Dated releases, newest release date first."""
    query = (
        _album_list_query()
        .where(Album.release_date.is_not(None))
        .order_by(Album.release_date.desc(), Album.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        after = decode_cursor(cursor, {"release_date", "id"})
        if after["release_date"] is None:
            return Page(items=[], next_cursor=None)
        query = query.where(_newest_first_after(after))
    albums = list((await db_session.scalars(query)).all())
    return _page_of_albums(albums, limit)


# The album page's statements are built once: constructing a select() costs more than running
# it on SQLite, and this is the hottest read of the catalog. Plain columns, not ORM entities,
# for the same reason. One row per (album, credited artist) and per (track, credited artist).
_ALBUM_WITH_CREDITS = (
    select(
        Album.id,
        Album.title,
        Album.release_date,
        Album.album_type,
        Album.artwork_key,
        Album.musicbrainz_id,
        Album.created_at,
        Artist.id.label("artist_id"),
        Artist.name.label("artist_name"),
        AlbumArtist.role,
    )
    .outerjoin(AlbumArtist, AlbumArtist.album_id == Album.id)
    .outerjoin(Artist, Artist.id == AlbumArtist.artist_id)
    .where(Album.id == bindparam("album_id"))
    .order_by(AlbumArtist.position)
)
_ALBUM_GENRES = (
    select(Genre.name)
    .join(AlbumGenre, AlbumGenre.genre_id == Genre.id)
    .where(AlbumGenre.album_id == bindparam("album_id"))
    .order_by(Genre.name)
)
_ALBUM_TRACKS_WITH_CREDITS = (
    select(
        Track.id,
        Track.title,
        Track.duration_ms,
        Track.disc_number,
        Track.track_number,
        Track.isrc,
        Track.explicit,
        Track.status,
        Artist.id.label("artist_id"),
        Artist.name.label("artist_name"),
        TrackArtist.role,
    )
    .outerjoin(TrackArtist, TrackArtist.track_id == Track.id)
    .outerjoin(Artist, Artist.id == TrackArtist.artist_id)
    .where(Track.album_id == bindparam("album_id"))
    .order_by(Track.disc_number, Track.track_number, Track.title, Track.id, TrackArtist.position)
)


async def get_album(*, db_session: AsyncSession, album_id: uuid.UUID) -> AlbumRead:
    """One album with credits, genres and tracks in disc/track order; NotFound if unknown."""
    parameters = {"album_id": album_id}
    album_rows = (await db_session.execute(_ALBUM_WITH_CREDITS, parameters)).all()
    if not album_rows:
        raise NotFound(f"no album with id {album_id}")
    album = album_rows[0]
    genres = (await db_session.scalars(_ALBUM_GENRES, parameters)).all()
    tracks: list[AlbumTrackRead] = []
    for row in (await db_session.execute(_ALBUM_TRACKS_WITH_CREDITS, parameters)).all():
        if not tracks or tracks[-1].id != row.id:
            tracks.append(
                AlbumTrackRead(
                    id=row.id,
                    title=row.title,
                    duration_ms=row.duration_ms,
                    disc_number=row.disc_number,
                    track_number=row.track_number,
                    isrc=row.isrc,
                    explicit=row.explicit,
                    status=row.status,
                    artists=[],
                )
            )
        if row.artist_id is not None:
            tracks[-1].artists.append(
                ArtistCredit(id=row.artist_id, name=row.artist_name, role=row.role)
            )
    return AlbumRead(
        id=album.id,
        title=album.title,
        release_date=album.release_date,
        album_type=album.album_type,
        artwork_url=artwork_url(album.id, album.artwork_key),
        artists=[
            ArtistCredit(id=row.artist_id, name=row.artist_name, role=row.role)
            for row in album_rows
            if row.artist_id is not None
        ],
        genres=list(genres),
        total_tracks=len(tracks),
        duration_ms=sum(t.duration_ms for t in tracks),
        musicbrainz_id=album.musicbrainz_id,
        created_at=album.created_at,
        tracks=tracks,
    )


_REVISION_BUMPED = "encore.catalog.revision_bumped"


@event.listens_for(Session, "after_transaction_end")
def _forget_revision_bump(session: Session, transaction: SessionTransaction) -> None:
    # The next transaction on this session must bump the revision again.
    if transaction.parent is None:
        session.info.pop(_REVISION_BUMPED, None)


async def read_catalog_revision(*, db_session: AsyncSession) -> int:
    """The catalog's change counter (0 before any change)."""
    revision = await db_session.scalar(
        select(CatalogRevision.revision).where(CatalogRevision.id == 1)
    )
    return revision or 0


async def mark_catalog_changed(*, db_session: AsyncSession) -> None:
    """Bump the change counter in the caller's transaction, so caches drop what they rendered."""
    # Once per transaction is enough: readers only compare the value, never count steps.
    if db_session.info.get(_REVISION_BUMPED):
        return
    db_session.info[_REVISION_BUMPED] = True
    # The migration that creates the table inserts its single row.
    await db_session.execute(
        update(CatalogRevision)
        .where(CatalogRevision.id == 1)
        .values(revision=CatalogRevision.revision + 1)
    )


async def get_track(*, db_session: AsyncSession, track_id: uuid.UUID) -> TrackRead:
    """One track with its album, artists and genres; NotFound if unknown."""
    query = (
        select(Track)
        .where(Track.id == track_id)
        .options(
            selectinload(Track.credits),
            selectinload(Track.genres),
            selectinload(Track.album),
        )
    )
    track = await db_session.scalar(query)
    if track is None:
        raise NotFound(f"no track with id {track_id}")
    return _track_read(track)


def _track_read(track: Track) -> TrackRead:
    return TrackRead(
        **_album_track(track).model_dump(),
        album=AlbumRef(
            id=track.album.id,
            title=track.album.title,
            artwork_url=artwork_url(track.album.id, track.album.artwork_key),
        ),
        genres=[g.name for g in track.genres],
        musicbrainz_id=track.musicbrainz_id,
        stream_count=track.stream_count,
        created_at=track.created_at,
    )


async def get_album_artwork_key(*, db_session: AsyncSession, album_id: uuid.UUID) -> str:
    """Blob key of an album's artwork; NotFound when the album or its artwork is missing."""
    key = await db_session.scalar(select(Album.artwork_key).where(Album.id == album_id))
    if key is None:
        raise NotFound(f"no artwork for album {album_id}")
    return key


async def list_genres(
    *, db_session: AsyncSession, limit: int, cursor: str | None
) -> Page[GenreRead]:
    """Every genre, alphabetically."""
    query = select(Genre).order_by(Genre.name_key, Genre.id).limit(limit + 1)
    if cursor is not None:
        after = decode_cursor(cursor, {"name_key", "id"})
        query = query.where(
            tuple_(Genre.name_key, Genre.id) > (str(after["name_key"]), _cursor_id(after["id"]))
        )
    genres = list((await db_session.scalars(query)).all())
    next_cursor = None
    if len(genres) > limit:
        genres = genres[:limit]
        next_cursor = encode_cursor({"name_key": genres[-1].name_key, "id": str(genres[-1].id)})
    return Page(items=[GenreRead.model_validate(g) for g in genres], next_cursor=next_cursor)


async def count_tracks(*, db_session: AsyncSession) -> int:
    """Number of tracks in the catalog."""
    return int(await db_session.scalar(select(func.count()).select_from(Track)) or 0)


# ---------------------------------------------------------------------------------------------
# Building the catalog (import)


@dataclass(frozen=True)
class CreditSpec:
    """An artist to credit, by name (and MusicBrainz id when known), with a role."""

    name: str
    role: CreditRole = CreditRole.primary
    musicbrainz_id: uuid.UUID | None = None


@dataclass(frozen=True)
class NewTrack:
    """Everything needed to add one track to the catalog."""

    title: str
    duration_ms: int
    disc_number: int
    track_number: int | None
    isrc: str | None
    explicit: bool
    musicbrainz_id: uuid.UUID | None
    original_key: str
    content_hash: str
    original_size: int
    codec: str
    container: str
    sample_rate: int
    channels: int
    bit_rate: int | None
    artists: tuple[CreditSpec, ...]
    genres: tuple[str, ...]


async def get_or_create_artist(
    *, db_session: AsyncSession, name: str, musicbrainz_id: uuid.UUID | None = None
) -> Artist:
    """The artist with this MusicBrainz id, else with this name (accent/case-insensitive)."""
    name = " ".join(name.split()) or UNKNOWN_ARTIST
    if musicbrainz_id is not None:
        found = await db_session.scalar(
            select(Artist).where(Artist.musicbrainz_id == musicbrainz_id)
        )
        if found is not None:
            return found
    key = name_key(name)
    found = await db_session.scalar(
        select(Artist).where(Artist.name_key == key).order_by(Artist.id).limit(1)
    )
    if found is not None:
        if found.musicbrainz_id is None and musicbrainz_id is not None:
            found.musicbrainz_id = musicbrainz_id
        return found
    artist = Artist(
        name=name, name_key=key, sort_name=sort_name(name), musicbrainz_id=musicbrainz_id
    )
    db_session.add(artist)
    await db_session.flush()
    return artist


async def get_or_create_genre(*, db_session: AsyncSession, name: str) -> Genre:
    """The genre with this name (case-insensitive), created when new."""
    name = " ".join(name.split())[:100]
    key = name_key(name)
    found = await db_session.scalar(select(Genre).where(Genre.name_key == key))
    if found is not None:
        return found
    genre = Genre(name=name, name_key=key)
    db_session.add(genre)
    await db_session.flush()
    return genre


async def get_or_create_album(
    *,
    db_session: AsyncSession,
    title: str,
    artists: Sequence[CreditSpec],
    release_date: date | None,
    album_type: AlbumType,
    musicbrainz_id: uuid.UUID | None = None,
) -> Album:
    """The album with this MusicBrainz id, or this title by the same first primary artist."""
    title = " ".join(title.split()) or UNKNOWN_ALBUM
    if musicbrainz_id is not None:
        found = await db_session.scalar(select(Album).where(Album.musicbrainz_id == musicbrainz_id))
        if found is not None:
            return found
    specs = list(artists) or [CreditSpec(UNKNOWN_ARTIST)]
    credited = [
        (
            await get_or_create_artist(
                db_session=db_session, name=spec.name, musicbrainz_id=spec.musicbrainz_id
            ),
            spec.role,
        )
        for spec in specs
    ]
    key = name_key(title)
    lead = credited[0][0]
    found = await db_session.scalar(
        select(Album)
        .join(AlbumArtist, AlbumArtist.album_id == Album.id)
        .where(Album.title_key == key, AlbumArtist.artist_id == lead.id, AlbumArtist.position == 0)
        .limit(1)
    )
    if found is not None:
        if found.release_date is None and release_date is not None:
            found.release_date = release_date
        return found
    album = Album(
        title=title,
        title_key=key,
        release_date=release_date,
        album_type=album_type,
        musicbrainz_id=musicbrainz_id,
    )
    db_session.add(album)
    await db_session.flush()
    seen: set[uuid.UUID] = set()
    for position, (artist, role) in enumerate(credited):
        if artist.id in seen:
            continue
        seen.add(artist.id)
        db_session.add(
            AlbumArtist(album_id=album.id, artist_id=artist.id, role=role, position=position)
        )
    await db_session.flush()
    return album


async def track_with_hash_exists(*, db_session: AsyncSession, content_hash: str) -> bool:
    """True when a track with these exact original bytes is already in the catalog."""
    found = await db_session.scalar(select(Track.id).where(Track.content_hash == content_hash))
    return found is not None


async def known_content_hashes(*, db_session: AsyncSession) -> set[str]:
    """Content hashes of every track in the catalog (to skip known files before copying)."""
    return set((await db_session.scalars(select(Track.content_hash))).all())


async def add_track(*, db_session: AsyncSession, album: Album, new: NewTrack) -> Track:
    """Add a track to an album, with its artist credits and genres."""
    title = " ".join(new.title.split())[:500] or "Untitled"
    track = Track(
        album_id=album.id,
        title=title,
        title_key=name_key(title)[:500],
        duration_ms=new.duration_ms,
        disc_number=max(new.disc_number, 1),
        track_number=new.track_number,
        isrc=new.isrc,
        explicit=new.explicit,
        musicbrainz_id=new.musicbrainz_id,
        original_key=new.original_key,
        content_hash=new.content_hash,
        original_size=new.original_size,
        codec=new.codec,
        container=new.container,
        sample_rate=new.sample_rate,
        channels=new.channels,
        bit_rate=new.bit_rate,
        status=TrackStatus.processing,
    )
    db_session.add(track)
    await db_session.flush()
    specs = new.artists or (CreditSpec(UNKNOWN_ARTIST),)
    seen: set[uuid.UUID] = set()
    for position, spec in enumerate(specs):
        artist = await get_or_create_artist(
            db_session=db_session, name=spec.name, musicbrainz_id=spec.musicbrainz_id
        )
        if artist.id in seen:
            continue
        seen.add(artist.id)
        db_session.add(
            TrackArtist(track_id=track.id, artist_id=artist.id, role=spec.role, position=position)
        )
    genre_ids: set[uuid.UUID] = set()
    for genre_name in new.genres:
        if not genre_name.strip():
            continue
        genre = await get_or_create_genre(db_session=db_session, name=genre_name)
        if genre.id in genre_ids:
            continue
        genre_ids.add(genre.id)
        db_session.add(TrackGenre(track_id=track.id, genre_id=genre.id))
        linked = await db_session.scalar(
            select(AlbumGenre).where(
                AlbumGenre.album_id == album.id, AlbumGenre.genre_id == genre.id
            )
        )
        if linked is None:
            db_session.add(AlbumGenre(album_id=album.id, genre_id=genre.id))
    await db_session.flush()
    await mark_catalog_changed(db_session=db_session)
    return track


async def set_album_artwork(*, db_session: AsyncSession, album: Album, artwork_key: str) -> None:
    """Give an album artwork when it has none yet."""
    if album.artwork_key is None:
        album.artwork_key = artwork_key
        await db_session.flush()
        await mark_catalog_changed(db_session=db_session)


async def replace_album_artwork(
    *, db_session: AsyncSession, album: Album, artwork_key: str
) -> None:
    """Give an album new artwork (an upload by its artist)."""
    album.artwork_key = artwork_key
    await db_session.flush()
    await mark_catalog_changed(db_session=db_session)


async def record_import_failure(
    *, db_session: AsyncSession, path: str, reason: str, content_hash: str | None
) -> None:
    """Remember that a file could not be imported, and why (one row per path, newest reason)."""
    existing = await db_session.scalar(select(ImportFailure).where(ImportFailure.path == path))
    if existing is None:
        db_session.add(ImportFailure(path=path, reason=reason[:2000], content_hash=content_hash))
    else:
        existing.reason = reason[:2000]
        existing.content_hash = content_hash
    await db_session.flush()


async def clear_import_failure(*, db_session: AsyncSession, path: str) -> None:
    """Forget an earlier failure of a file that has now been imported."""
    existing = await db_session.scalar(select(ImportFailure).where(ImportFailure.path == path))
    if existing is not None:
        await db_session.delete(existing)
        await db_session.flush()


async def list_import_failures(*, db_session: AsyncSession) -> list[tuple[str, str]]:
    """(path, reason) of every file the imports could not use."""
    rows = await db_session.execute(
        select(ImportFailure.path, ImportFailure.reason).order_by(ImportFailure.path)
    )
    return [(path, reason) for path, reason in rows.all()]


async def assign_artist_owner(
    *, db_session: AsyncSession, artist_names: Sequence[str], user_id: uuid.UUID
) -> int:
    """Make a user the owner of the artists with these names; returns how many were matched."""
    keys = sorted({name_key(name) for name in artist_names})
    if not keys:
        return 0
    result = await db_session.execute(
        update(Artist).where(Artist.name_key.in_(keys)).values(owner_user_id=user_id)
    )
    await db_session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------------------------------------
# Processing and ownership


@dataclass(frozen=True)
class TrackSource:
    """What the media pipeline needs to process a track."""

    track_id: uuid.UUID
    original_key: str
    content_hash: str
    status: TrackStatus
    renditions_prefix: str | None


async def get_track_source(*, db_session: AsyncSession, track_id: uuid.UUID) -> TrackSource | None:
    """The original file of a track and where it stands, or None if the track is gone."""
    row = (
        await db_session.execute(
            select(
                Track.original_key, Track.content_hash, Track.status, Track.renditions_prefix
            ).where(Track.id == track_id)
        )
    ).first()
    if row is None:
        return None
    return TrackSource(
        track_id=track_id,
        original_key=row.original_key,
        content_hash=row.content_hash,
        status=row.status,
        renditions_prefix=row.renditions_prefix,
    )


async def mark_track_ready(
    *,
    db_session: AsyncSession,
    track_id: uuid.UUID,
    renditions_prefix: str,
    duration_ms: int,
    loudness_lufs: float,
    true_peak_dbtp: float,
    track_gain_db: float,
) -> None:
    """Record a track's published renditions and loudness, and make it playable."""
    await db_session.execute(
        update(Track)
        .where(Track.id == track_id)
        .values(
            status=TrackStatus.ready,
            failure_reason=None,
            renditions_prefix=renditions_prefix,
            duration_ms=duration_ms,
            loudness_lufs=loudness_lufs,
            true_peak_dbtp=true_peak_dbtp,
            track_gain_db=track_gain_db,
            updated_at=utcnow(),
        )
    )
    await mark_catalog_changed(db_session=db_session)


async def mark_track_failed(*, db_session: AsyncSession, track_id: uuid.UUID, reason: str) -> None:
    """Record that a track cannot be processed, and why."""
    await db_session.execute(
        update(Track)
        .where(Track.id == track_id)
        .values(status=TrackStatus.failed, failure_reason=reason[:500], updated_at=utcnow())
    )
    await mark_catalog_changed(db_session=db_session)


async def get_owned_artist(
    *, db_session: AsyncSession, artist_id: uuid.UUID, user_id: uuid.UUID
) -> Artist | None:
    """The artist if this account manages it, else None (another's artist looks absent)."""
    artist = await db_session.get(Artist, artist_id)
    if artist is None or artist.owner_user_id != user_id:
        return None
    return artist


async def get_album_of_artist(
    *, db_session: AsyncSession, album_id: uuid.UUID, artist_id: uuid.UUID
) -> Album | None:
    """The album if the artist is one of its primary artists, else None."""
    album = await db_session.get(Album, album_id)
    if album is None:
        return None
    credited = await db_session.scalar(
        select(AlbumArtist.artist_id).where(
            AlbumArtist.album_id == album_id,
            AlbumArtist.artist_id == artist_id,
            AlbumArtist.role == CreditRole.primary,
        )
    )
    return album if credited is not None else None


async def get_owned_album(
    *, db_session: AsyncSession, album_id: uuid.UUID, user_id: uuid.UUID
) -> Album | None:
    """The album if one of its primary artists is managed by this account, else None."""
    album = await db_session.get(Album, album_id)
    if album is None:
        return None
    owned = await db_session.scalar(
        select(AlbumArtist.artist_id)
        .join(Artist, Artist.id == AlbumArtist.artist_id)
        .where(
            AlbumArtist.album_id == album_id,
            AlbumArtist.role == CreditRole.primary,
            Artist.owner_user_id == user_id,
        )
        .limit(1)
    )
    return album if owned is not None else None


async def find_track_by_content_hash(
    *, db_session: AsyncSession, content_hash: str
) -> uuid.UUID | None:
    """The track holding exactly these original bytes, if any."""
    found: uuid.UUID | None = await db_session.scalar(
        select(Track.id).where(Track.content_hash == content_hash)
    )
    return found


async def tracks_awaiting_processing(
    *, db_session: AsyncSession, limit: int = 10_000
) -> list[uuid.UUID]:
    """Tracks still in `processing` (to enqueue their jobs)."""
    return list(
        (
            await db_session.scalars(
                select(Track.id).where(Track.status == TrackStatus.processing).limit(limit)
            )
        ).all()
    )


async def set_artist_owner(
    *, db_session: AsyncSession, artist_id: uuid.UUID, user_id: uuid.UUID | None
) -> None:
    """Make an account the manager of an artist (None: nobody); NotFound for unknown artists."""
    artist = await db_session.get(Artist, artist_id)
    if artist is None:
        raise NotFound(f"no artist with id {artist_id}")
    artist.owner_user_id = user_id
    await db_session.flush()


@dataclass(frozen=True)
class PlayableTrack:
    """What playback needs to know about a track."""

    status: TrackStatus
    renditions_prefix: str | None
    duration_ms: int
    track_gain_db: float | None
    true_peak_dbtp: float | None


async def get_playable_track(
    *, db_session: AsyncSession, track_id: uuid.UUID
) -> PlayableTrack | None:
    """A track's playback facts, or None if there is no such track."""
    row = (
        await db_session.execute(
            select(
                Track.status,
                Track.renditions_prefix,
                Track.duration_ms,
                Track.track_gain_db,
                Track.true_peak_dbtp,
            ).where(Track.id == track_id)
        )
    ).first()
    if row is None:
        return None
    return PlayableTrack(
        status=row.status,
        renditions_prefix=row.renditions_prefix,
        duration_ms=row.duration_ms,
        track_gain_db=row.track_gain_db,
        true_peak_dbtp=row.true_peak_dbtp,
    )


@dataclass(frozen=True, slots=True)
class TrackStreamFacts:
    """What counting a play needs of a track: its length and its primary artists."""

    duration_ms: int
    primary_artist_ids: tuple[uuid.UUID, ...]


async def get_track_stream_facts(
    *, db_session: AsyncSession, track_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, TrackStreamFacts]:
    """Length and primary artists of each known track among track_ids (unknown ones left out)."""
    if not track_ids:
        return {}
    rows = (
        await db_session.execute(
            select(Track.id, Track.duration_ms, TrackArtist.artist_id, TrackArtist.role)
            .outerjoin(TrackArtist, TrackArtist.track_id == Track.id)
            .where(Track.id.in_(list(track_ids)))
            .order_by(Track.id, TrackArtist.position)
        )
    ).all()
    durations: dict[uuid.UUID, int] = {}
    artists: dict[uuid.UUID, list[uuid.UUID]] = {}
    for track_id, duration_ms, artist_id, role in rows:
        durations[track_id] = duration_ms
        credited = artists.setdefault(track_id, [])
        if artist_id is not None and role == CreditRole.primary:
            credited.append(artist_id)
    return {
        track_id: TrackStreamFacts(duration_ms, tuple(artists[track_id]))
        for track_id, duration_ms in durations.items()
    }


async def add_stream_counts(
    *,
    db_session: AsyncSession,
    track_streams: Mapping[uuid.UUID, int],
    artist_streams: Mapping[uuid.UUID, int],
) -> None:
    """Add counted streams to tracks and artists (in the caller's transaction)."""
    # Counters are not catalog edits: no revision bump, so cached album documents stay valid
    # (they carry no counts). Sorted ids keep lock order stable between writers.
    tables: tuple[tuple[Table, Mapping[uuid.UUID, int]], ...] = (  # type: ignore[assignment]
        (Track.__table__, track_streams),
        (Artist.__table__, artist_streams),
    )
    for table, counts in tables:
        increments = [
            {"row_id": row_id, "added": added} for row_id, added in sorted(counts.items())
        ]
        if increments:
            # Core statements: an executemany of increments, not ORM bulk-by-primary-key sets.
            await db_session.execute(
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(stream_count=table.c.stream_count + bindparam("added")),
                increments,
            )


async def get_tracks(
    *, db_session: AsyncSession, track_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, TrackRead]:
    """Tracks by id with album, artists and genres (unknown ids left out)."""
    if not track_ids:
        return {}
    tracks = (
        await db_session.scalars(
            select(Track)
            .where(Track.id.in_(list(track_ids)))
            .options(
                selectinload(Track.credits),
                selectinload(Track.genres),
                selectinload(Track.album),
            )
        )
    ).all()
    return {track.id: _track_read(track) for track in tracks}


async def get_album_summaries(
    *, db_session: AsyncSession, album_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, AlbumSummary]:
    """Albums by id as listed (credits, artwork), unknown ids left out."""
    if not album_ids:
        return {}
    albums = (
        await db_session.scalars(_album_list_query().where(Album.id.in_(list(album_ids))))
    ).all()
    return {album.id: _album_summary(album) for album in albums}


async def get_artists(
    *, db_session: AsyncSession, artist_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, ArtistRead]:
    """Artists by id, unknown ids left out."""
    if not artist_ids:
        return {}
    artists = (
        await db_session.scalars(select(Artist).where(Artist.id.in_(list(artist_ids))))
    ).all()
    return {artist.id: ArtistRead.model_validate(artist) for artist in artists}


async def get_stream_counts(
    *, db_session: AsyncSession, kind: str, ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Streams of tracks or artists, or of albums (their tracks' sum), by id; kind names which."""
    if not ids:
        return {}
    id_list = list(ids)
    if kind == "track":
        query = select(Track.id, Track.stream_count).where(Track.id.in_(id_list))
    elif kind == "artist":
        query = select(Artist.id, Artist.stream_count).where(Artist.id.in_(id_list))
    elif kind == "album":
        query = (
            select(Track.album_id, func.sum(Track.stream_count))
            .where(Track.album_id.in_(id_list))
            .group_by(Track.album_id)
        )
    else:
        raise ValueError(f"no stream counts for {kind}")
    return {row_id: int(count or 0) for row_id, count in (await db_session.execute(query)).all()}


async def get_stream_counts_of_kinds(
    *, db_session: AsyncSession, ids_by_kind: Mapping[str, Collection[uuid.UUID]]
) -> dict[str, dict[uuid.UUID, int]]:
    """`get_stream_counts` for several kinds (track, album, artist) in one statement."""
    parts: list[Select[str, uuid.UUID, int]] = []
    for kind, ids in ids_by_kind.items():
        if not ids:
            continue
        id_list = list(ids)
        label = literal(kind, String).label("kind")
        if kind == "track":
            parts.append(select(label, Track.id, Track.stream_count).where(Track.id.in_(id_list)))
        elif kind == "artist":
            parts.append(
                select(label, Artist.id, Artist.stream_count).where(Artist.id.in_(id_list))
            )
        elif kind == "album":
            parts.append(
                select(label, Track.album_id, func.sum(Track.stream_count))
                .where(Track.album_id.in_(id_list))
                .group_by(Track.album_id)
            )
        else:
            raise ValueError(f"no stream counts for {kind}")
    counts: dict[str, dict[uuid.UUID, int]] = {kind: {} for kind in ids_by_kind}
    if not parts:
        return counts
    statement = parts[0] if len(parts) == 1 else union_all(*parts)
    for kind, row_id, count in (await db_session.execute(statement)).all():
        counts[kind][row_id] = int(count or 0)
    return counts


async def get_existing_ids(
    *, db_session: AsyncSession, kind: str, ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these track, album or artist ids (kind names which) are in the catalog."""
    if not ids:
        return set()
    models: dict[str, type[Track] | type[Album] | type[Artist]] = {
        "track": Track,
        "album": Album,
        "artist": Artist,
    }
    model = models[kind]
    return set((await db_session.scalars(select(model.id).where(model.id.in_(list(ids))))).all())


async def list_primary_track_ids(
    *, db_session: AsyncSession, artist_id: uuid.UUID
) -> list[uuid.UUID]:
    """Ids of the tracks on which the artist is a primary artist."""
    return list(
        (
            await db_session.scalars(
                select(TrackArtist.track_id).where(
                    TrackArtist.artist_id == artist_id, TrackArtist.role == CreditRole.primary
                )
            )
        ).all()
    )


async def tracks_in_genre(
    *, db_session: AsyncSession, genre: str, track_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these tracks are tagged with the genre (by name, case and accents ignored)."""
    if not track_ids:
        return set()
    rows = await db_session.scalars(
        select(TrackGenre.track_id)
        .join(Genre, Genre.id == TrackGenre.genre_id)
        .where(Genre.name_key == name_key(genre), TrackGenre.track_id.in_(list(track_ids)))
    )
    return set(rows.all())


async def find_artist_id_by_name(*, db_session: AsyncSession, name: str) -> uuid.UUID | None:
    """The id of the artist with this name (accent and case ignored), or None."""
    found: uuid.UUID | None = await db_session.scalar(
        select(Artist.id).where(Artist.name_key == name_key(name)).order_by(Artist.id).limit(1)
    )
    return found


# ---------------------------------------------------------------------------------------------
# Reading for recommendations


def _primary_artist_subquery() -> Any:
    # The first credited primary artist of each track.
    return (
        select(TrackArtist.artist_id)
        .where(TrackArtist.track_id == Track.id, TrackArtist.role == CreditRole.primary)
        .order_by(TrackArtist.position)
        .limit(1)
        .correlate(Track)
        .scalar_subquery()
    )


async def get_ready_track_artists(
    *, db_session: AsyncSession, track_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID | None]:
    """The ready tracks among track_ids, each with its first primary artist."""
    if not track_ids:
        return {}
    rows = await db_session.execute(
        select(Track.id, _primary_artist_subquery()).where(
            Track.id.in_(list(track_ids)), Track.status == TrackStatus.ready
        )
    )
    return {track_id: artist_id for track_id, artist_id in rows.all()}


async def list_popular_ready_tracks(
    *,
    db_session: AsyncSession,
    limit: int,
    artist_ids: Collection[uuid.UUID] | None = None,
    genre_ids: Collection[uuid.UUID] | None = None,
    exclude: Collection[uuid.UUID] = (),
) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    """Ready tracks, most streamed first, as (track, primary artist); optionally by artist/genre."""
    query = select(Track.id, _primary_artist_subquery()).where(Track.status == TrackStatus.ready)
    if artist_ids is not None:
        query = query.where(
            Track.id.in_(
                select(TrackArtist.track_id).where(TrackArtist.artist_id.in_(list(artist_ids)))
            )
        )
    if genre_ids is not None:
        query = query.where(
            Track.id.in_(
                select(TrackGenre.track_id).where(TrackGenre.genre_id.in_(list(genre_ids)))
            )
        )
    if exclude:
        query = query.where(Track.id.not_in(list(exclude)))
    rows = await db_session.execute(
        query.order_by(Track.stream_count.desc(), Track.id).limit(limit)
    )
    return [(track_id, artist_id) for track_id, artist_id in rows.all()]


async def get_artist_genre_ids(
    *, db_session: AsyncSession, artist_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Genres of the tracks credited to these artists."""
    if not artist_ids:
        return set()
    rows = await db_session.scalars(
        select(TrackGenre.genre_id)
        .join(TrackArtist, TrackArtist.track_id == TrackGenre.track_id)
        .where(TrackArtist.artist_id.in_(list(artist_ids)))
        .distinct()
    )
    return set(rows.all())


async def list_popular_artists(
    *,
    db_session: AsyncSession,
    limit: int,
    genre_ids: Collection[uuid.UUID] | None = None,
    exclude: Collection[uuid.UUID] = (),
) -> list[uuid.UUID]:
    """Artists most streamed first, optionally only those with tracks in these genres."""
    query = select(Artist.id)
    if genre_ids is not None:
        query = query.where(
            Artist.id.in_(
                select(TrackArtist.artist_id)
                .join(TrackGenre, TrackGenre.track_id == TrackArtist.track_id)
                .where(TrackGenre.genre_id.in_(list(genre_ids)))
            )
        )
    if exclude:
        query = query.where(Artist.id.not_in(list(exclude)))
    rows = await db_session.scalars(
        query.order_by(Artist.stream_count.desc(), Artist.id).limit(limit)
    )
    return list(rows.all())


async def genre_exists(*, db_session: AsyncSession, genre_id: uuid.UUID) -> bool:
    """Whether the catalog has this genre."""
    return (await db_session.scalar(select(Genre.id).where(Genre.id == genre_id))) is not None

"""Media logic: accepting artist uploads, album artwork sizes, and upload status.

Other domains use it as `from encore.media import service as media_service`.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath

from PIL import Image
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from encore.catalog import service as catalog_service
from encore.catalog.models import AlbumType, CreditRole
from encore.catalog.service import CreditSpec, NewTrack
from encore.config import Settings
from encore.media.artwork import InvalidArtwork, normalize_artwork
from encore.media.ladder import RENDITIONS
from encore.media.models import Upload, UploadStatus
from encore.media.probe import AudioProbe, UnreadableAudio, probe_audio
from encore.media.upload_stream import ReceivedUpload
from encore.pagination import Page, decode_cursor, encode_cursor
from encore.problems import Conflict, ContentTooLarge, InvalidInput, NotFound
from encore.storage import BlobNotFound, BlobStore

PROCESS_TRACK_JOB = "media.process_track"
# The renditions every ready track has, lowest bit rate first (what playback offers).
RENDITION_LADDER = tuple((spec.name, spec.bit_rate) for spec in RENDITIONS)
_RENDITION_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "audio/mp4",
    ".mp4": "audio/mp4",
    ".m4a": "audio/mp4",
    ".json": "application/json",
}


def rendition_content_type(file: str) -> str:
    """The media type of a rendition file (playlist, segment, progressive, peaks)."""
    return _RENDITION_CONTENT_TYPES.get(PurePosixPath(file).suffix, "application/octet-stream")


ARTWORK_SIZES = (64, 300, 640)
UPLOAD_ARTWORK_FORMATS = ("JPEG", "PNG", "WEBP")
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
# Tags bigger than this are not metadata but a way to smuggle data or exhaust parsers.
MAX_TAG_BLOCK_BYTES = 16 * 1024 * 1024
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")
_EXTENSIONS = {
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "ogg",
    "mp4": "m4a",
    "wav": "wav",
    "aac": "aac",
    "aiff": "aiff",
}


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}", extra={"errors": [{"field": f"form.{field}", "message": message}]}
    )


@dataclass(frozen=True)
class UploadForm:
    """The metadata fields of an upload, checked."""

    title: str
    artist_id: uuid.UUID
    album_id: uuid.UUID | None
    album_title: str | None
    album_type: AlbumType
    release_date: date | None
    track_number: int | None
    disc_number: int
    featured: tuple[str, ...]
    genres: tuple[str, ...]
    explicit: bool
    isrc: str | None


def _int_field(received: ReceivedUpload, name: str, low: int, high: int) -> int | None:
    text = received.field(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _invalid(name, "must be a whole number") from None
    if not low <= value <= high:
        raise _invalid(name, f"must be between {low} and {high}")
    return value


def _text_field(received: ReceivedUpload, name: str, *, max_chars: int) -> str | None:
    text = received.field(name)
    if text is None:
        return None
    cleaned = " ".join(text.split())
    if len(cleaned) > max_chars:
        raise _invalid(name, f"must be at most {max_chars} characters")
    return cleaned or None


def parse_upload_form(received: ReceivedUpload) -> UploadForm:
    """The upload's metadata from its form fields; InvalidInput naming the bad field."""
    title = _text_field(received, "title", max_chars=500)
    if not title:
        raise _invalid("title", "is required")
    artist_text = received.field("artist_id")
    if not artist_text:
        raise _invalid("artist_id", "is required: the id of an artist your account manages")
    try:
        artist_id = uuid.UUID(artist_text)
    except ValueError:
        raise _invalid("artist_id", "must be a UUID") from None
    album_id = None
    album_text = received.field("album_id")
    if album_text:
        try:
            album_id = uuid.UUID(album_text)
        except ValueError:
            raise _invalid("album_id", "must be a UUID") from None
    album_title = _text_field(received, "album_title", max_chars=500)
    if album_id is None and album_title is None:
        raise _invalid("album_title", "give album_id (an existing album) or album_title")
    album_type_text = received.field("album_type") or "single"
    try:
        album_type = AlbumType(album_type_text)
    except ValueError:
        raise _invalid("album_type", "must be album, single, ep or compilation") from None
    release_date = None
    if date_text := received.field("release_date"):
        try:
            release_date = date.fromisoformat(date_text)
        except ValueError:
            raise _invalid("release_date", "must be a date like 2024-05-17") from None
    isrc = (received.field("isrc") or "").replace("-", "").upper() or None
    if isrc is not None and not _ISRC.fullmatch(isrc):
        raise _invalid("isrc", "must be an ISRC such as GBAYE0601498")
    explicit_text = (received.field("explicit") or "false").lower()
    if explicit_text not in ("true", "false", "1", "0"):
        raise _invalid("explicit", "must be true or false")
    featured = tuple(
        " ".join(name.split())[:500] for name in received.fields.get("featured", []) if name.strip()
    )
    genres = tuple(
        " ".join(name.split())[:100] for name in received.fields.get("genres", []) if name.strip()
    )
    if len(featured) > 20:
        raise _invalid("featured", "at most 20 featured artists")
    if len(genres) > 10:
        raise _invalid("genres", "at most 10 genres")
    return UploadForm(
        title=title,
        artist_id=artist_id,
        album_id=album_id,
        album_title=album_title,
        album_type=album_type,
        release_date=release_date,
        track_number=_int_field(received, "track_number", 1, 999),
        disc_number=_int_field(received, "disc_number", 1, 99) or 1,
        featured=featured,
        genres=genres,
        explicit=explicit_text in ("true", "1"),
        isrc=isrc,
    )


def _tag_block_problem(path: Path) -> str | None:
    # ID3v2 declares its size in the first 10 bytes: refuse absurd ones before any parser
    # allocates for them. Other containers' tags are bounded by the mutagen reads below.
    with path.open("rb") as file:
        head = file.read(10)
    if head[:3] == b"ID3" and len(head) == 10:
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        if size > MAX_TAG_BLOCK_BYTES:
            return "the file's ID3 tag block is too large"
    try:
        import mutagen

        tagged = mutagen.File(path)
    except Exception:
        return None  # unreadable tags are not fatal: the form carries the metadata
    pictures = getattr(tagged, "pictures", None) or []
    if any(len(getattr(picture, "data", b"")) > MAX_TAG_BLOCK_BYTES for picture in pictures):
        return "the file embeds an oversized picture"
    return None


def check_upload_audio(path: Path, settings: Settings) -> AudioProbe:
    """Probe an uploaded file by its content and apply the limits; InvalidInput if refused."""
    try:
        probe = probe_audio(path)
    except UnreadableAudio as exc:
        raise InvalidInput(f"the file is not usable audio: {exc}") from None
    if not MIN_SAMPLE_RATE <= probe.sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidInput(f"unsupported sample rate {probe.sample_rate} Hz")
    if not 1 <= probe.channels <= MAX_CHANNELS:
        raise InvalidInput(f"unsupported channel count {probe.channels}")
    if probe.duration_ms > settings.upload_max_duration_seconds * 1000:
        raise ContentTooLarge(
            f"the audio lasts {probe.duration_ms // 1000} s; the limit is "
            f"{settings.upload_max_duration_seconds} s"
        )
    problem = _tag_block_problem(path)
    if problem is not None:
        raise InvalidInput(problem)
    return probe


async def storage_used(*, db_session: AsyncSession, user_id: uuid.UUID) -> int:
    """Bytes of original audio an account has uploaded (failed uploads do not count)."""
    used = await db_session.scalar(
        select(func.coalesce(func.sum(Upload.size_bytes), 0)).where(
            Upload.user_id == user_id, Upload.status != UploadStatus.failed
        )
    )
    return int(used or 0)


def original_blob_key(content_hash: str, probe: AudioProbe) -> str:
    """Content-addressed key of an original: `originals/ab/abcdef….flac`."""
    extension = _EXTENSIONS.get(probe.container, probe.container)
    return f"originals/{content_hash[:2]}/{content_hash}.{extension}"


async def create_upload(
    *,
    db_session: AsyncSession,
    store: BlobStore,
    settings: Settings,
    user_id: uuid.UUID,
    received: ReceivedUpload,
) -> Upload:
    """Check and store an upload, create its track and queue its processing, atomically."""
    from encore import bus

    if received.file_path is None or received.size == 0:
        raise _invalid("file", "attach the audio in a part named file")
    form = parse_upload_form(received)
    artist = await catalog_service.get_owned_artist(
        db_session=db_session, artist_id=form.artist_id, user_id=user_id
    )
    if artist is None:
        raise NotFound(f"no artist with id {form.artist_id} among the artists you manage")
    album = None
    if form.album_id is not None:
        album = await catalog_service.get_album_of_artist(
            db_session=db_session, album_id=form.album_id, artist_id=artist.id
        )
        if album is None:
            raise NotFound(f"no album with id {form.album_id} by this artist")
    used = await storage_used(db_session=db_session, user_id=user_id)
    if used + received.size > settings.artist_storage_quota_bytes:
        raise ContentTooLarge(
            f"this upload would take your storage to {used + received.size} bytes; "
            f"the quota is {settings.artist_storage_quota_bytes}"
        )
    existing = await catalog_service.find_track_by_content_hash(
        db_session=db_session, content_hash=received.sha256
    )
    if existing is not None:
        raise Conflict(
            "this exact audio file is already in the catalog", extra={"track_id": str(existing)}
        )
    probe = await asyncio.to_thread(check_upload_audio, received.file_path, settings)
    key = original_blob_key(received.sha256, probe)
    published = await store.publish(key, received.file_path)
    try:
        if album is None:
            album = await catalog_service.get_or_create_album(
                db_session=db_session,
                title=form.album_title or form.title,
                artists=[CreditSpec(artist.name)],
                release_date=form.release_date,
                album_type=form.album_type,
            )
        track = await catalog_service.add_track(
            db_session=db_session,
            album=album,
            new=NewTrack(
                title=form.title,
                duration_ms=probe.duration_ms,
                disc_number=form.disc_number,
                track_number=form.track_number,
                isrc=form.isrc,
                explicit=form.explicit,
                musicbrainz_id=None,
                original_key=key,
                content_hash=received.sha256,
                original_size=received.size,
                codec=probe.codec,
                container=probe.container,
                sample_rate=probe.sample_rate,
                channels=probe.channels,
                bit_rate=probe.bit_rate,
                artists=(
                    CreditSpec(artist.name, musicbrainz_id=artist.musicbrainz_id),
                    *(CreditSpec(name, role=CreditRole.featured) for name in form.featured),
                ),
                genres=form.genres,
            ),
        )
        upload = Upload(
            user_id=user_id,
            artist_id=artist.id,
            track_id=track.id,
            status=UploadStatus.queued,
            file_name=received.file_name,
            size_bytes=received.size,
            content_hash=received.sha256,
        )
        db_session.add(upload)
        await db_session.flush()
        # In the same transaction as the track: a job exists exactly when the track does.
        await bus.enqueue_job(
            db_session=db_session,
            kind=PROCESS_TRACK_JOB,
            payload={"track_id": str(track.id)},
            dedupe_key=f"{PROCESS_TRACK_JOB}:{track.id}",
        )
    except BaseException:
        # Nothing refers to the stored original yet; a file we just added must not linger.
        if published:
            await store.delete(key)
        raise
    return upload


async def get_upload(
    *, db_session: AsyncSession, upload_id: uuid.UUID, user_id: uuid.UUID
) -> Upload:
    """One of the account's uploads; NotFound for anyone else's."""
    upload = await db_session.get(Upload, upload_id)
    if upload is None or upload.user_id != user_id:
        raise NotFound(f"no upload with id {upload_id}")
    return upload


async def list_uploads(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[Upload]:
    """The account's uploads, newest first."""
    query = select(Upload).where(Upload.user_id == user_id).order_by(Upload.id.desc())
    if cursor is not None:
        after = decode_cursor(cursor, {"id"})
        try:
            query = query.where(Upload.id < uuid.UUID(str(after["id"])))
        except ValueError:
            raise InvalidInput("cursor is not valid") from None
    uploads = list((await db_session.scalars(query.limit(limit + 1))).all())
    next_cursor = (
        encode_cursor({"id": str(uploads[limit - 1].id)}) if len(uploads) > limit else None
    )
    return Page(items=uploads[:limit], next_cursor=next_cursor)


async def set_upload_status(
    *,
    db_session: AsyncSession,
    track_id: uuid.UUID,
    status: UploadStatus,
    reason: str | None = None,
) -> None:
    """Move the uploads of a track to a new status (what the uploader sees)."""
    await db_session.execute(
        update(Upload)
        .where(Upload.track_id == track_id)
        .values(status=status, failure_reason=reason[:500] if reason else None)
    )


# ---------------------------------------------------------------------------------------------
# Artwork


def artwork_variant_key(base_key: str, size: int) -> str:
    """Key of a square-bounded size of an artwork: `artwork/<sha>-300.jpg`."""
    return base_key.removesuffix(".jpg") + f"-{size}.jpg"


def _resize(data: bytes, size: int) -> bytes:
    with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
        image.load()
        resized = image.convert("RGB")
        resized.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        resized.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


async def artwork_variant(*, store: BlobStore, base_key: str, size: int) -> bytes:
    """The artwork at one of ARTWORK_SIZES, made from the stored original on first use."""
    if size not in ARTWORK_SIZES:
        raise InvalidInput(f"size must be one of {', '.join(map(str, ARTWORK_SIZES))}")
    key = artwork_variant_key(base_key, size)
    try:
        return await store.get(key)
    except BlobNotFound:
        pass
    # Content-addressed: two processes making the same size write the same bytes.
    data = await asyncio.to_thread(_resize, await store.get(base_key), size)
    await store.put(key, data)
    return data


async def replace_album_artwork(
    *,
    db_session: AsyncSession,
    store: BlobStore,
    user_id: uuid.UUID,
    album_id: uuid.UUID,
    image: bytes,
) -> str:
    """Check, re-encode and store a cover for an album the account manages; its base key."""
    album = await catalog_service.get_owned_album(
        db_session=db_session, album_id=album_id, user_id=user_id
    )
    if album is None:
        raise NotFound(f"no album with id {album_id} among your artists' albums")
    try:
        artwork = await asyncio.to_thread(normalize_artwork, image, UPLOAD_ARTWORK_FORMATS)
    except InvalidArtwork as exc:
        raise InvalidInput(f"the image is not usable artwork: {exc}") from None
    await store.put(artwork.key, artwork.data)
    for size in ARTWORK_SIZES:
        await artwork_variant(store=store, base_key=artwork.key, size=size)
    await catalog_service.replace_album_artwork(
        db_session=db_session, album=album, artwork_key=artwork.key
    )
    return artwork.key

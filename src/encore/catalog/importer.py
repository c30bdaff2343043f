"""Import a folder of music into the catalog.

Three stages, so that the slow, CPU-bound part uses every core and the database has a single
writer:

1. `find_audio_files` walks the folder (symlinks followed only while they stay inside it).
2. `scan_files` hashes, probes and reads the tags of each file in a pool of processes; what
   comes back is small (no audio, artwork only once per worker).
3. `import_library` copies each new original into the blob store and writes the catalog rows
   in batches, one transaction per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from encore.catalog import service as catalog_service
from encore.catalog.models import Album, AlbumType, CreditRole
from encore.catalog.service import UNKNOWN_ALBUM, UNKNOWN_ARTIST, CreditSpec, NewTrack
from encore.media.artwork import MAX_ARTWORK_BYTES, InvalidArtwork, normalize_artwork
from encore.media.probe import AudioProbe, UnreadableAudio, probe_audio
from encore.media.tags import ArtistTag, TrackTags, UnreadableTags, read_tags

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from encore.config import Settings
    from encore.storage import BlobStore

__all__ = [
    "AUDIO_EXTENSIONS",
    "ArtworkPayload",
    "ImportProgress",
    "ImportReport",
    "LibraryListing",
    "ScanTask",
    "ScannedFile",
    "find_audio_files",
    "import_library",
    "original_key",
    "print_import_summary",
    "run_import_command",
    "scan_audio_file",
    "scan_files",
]

logger = structlog.get_logger("encore.catalog.importer")

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wav", ".aif", ".aiff"}
)

# Side-car cover images, most specific name first.
_SIDECAR_STEMS = ("cover", "folder", "front", "album")
_SIDECAR_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

VARIOUS_ARTISTS = "Various Artists"
BATCH_SIZE = 100
"""Tracks written per transaction: a crash loses at most this many, never half a track."""

# Files sent to a worker per task: fewer round trips without starving the other workers.
_MAX_CHUNK = 8
# Tasks queued per worker, so workers keep scanning while the writer is busy.
_TASKS_PER_WORKER = 8

_CRASH_REASON = "the audio decoder crashed on this file"

# Container (as the probe names it) -> extension of the stored original.
_ORIGINAL_EXTENSIONS = {
    "mp3": "mp3",
    "flac": "flac",
    "mp4": "m4a",
    "wav": "wav",
    "aac": "aac",
}
_LEADING_TRACK_NUMBER = re.compile(r"^\s*(\d{1,3})\s*[-._]\s+(?=\S)")


# ---------------------------------------------------------------------------------------------
# 1. Finding files


@dataclass(frozen=True, slots=True)
class ScanTask:
    """One file to scan: the path the user sees, the real path to read, its side-car cover."""

    path: str
    real_path: str
    sidecar: str | None = None


@dataclass
class LibraryListing:
    """Audio files under a folder, and what was passed over with the reason."""

    files: list[ScanTask] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _sidecar(names: Iterable[tuple[str, str]]) -> str | None:
    found = {name.casefold(): real for name, real in names}
    for stem in _SIDECAR_STEMS:
        for suffix in _SIDECAR_SUFFIXES:
            real = found.get(stem + suffix)
            if real is not None:
                return real
    return None


def find_audio_files(root: Path) -> LibraryListing:
    """Audio files under `root`, sorted; symlinks leaving `root` and hidden files are skipped.

    A file reachable by several paths (through symlinks) is listed once, under a path without
    symlinks when there is one: links are followed only after the real folders are walked.
    """
    listing = LibraryListing()
    real_root = root.resolve(strict=True)
    # (folder as the user sees it, the same folder with every symlink resolved)
    folders: deque[tuple[Path, Path]] = deque([(root.absolute(), real_root)])
    linked_folders: deque[tuple[Path, Path]] = deque()
    linked_files: list[ScanTask] = []
    seen_folders = {real_root}
    seen_files: set[str] = set()
    while folders or linked_folders:
        if folders:
            shown, real = folders.popleft()
        else:
            shown, real = linked_folders.popleft()
            if real in seen_folders:
                continue
            seen_folders.add(real)
        try:
            entries = sorted(os.scandir(shown), key=lambda entry: entry.name)
        except OSError as exc:
            listing.skipped.append((str(shown), f"cannot read folder: {exc.strerror or exc}"))
            continue
        audio: list[tuple[str, Path, bool]] = []  # (shown path, real path, through a link)
        images: list[tuple[str, str]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files, and macOS "._x.mp3" resource forks that only fail
            target = real / entry.name
            try:
                is_link = entry.is_symlink()
                if is_link:
                    target = Path(entry.path).resolve(strict=True)
                    if not target.is_relative_to(real_root):
                        listing.skipped.append(
                            (entry.path, "symbolic link to a place outside the imported folder")
                        )
                        continue
                is_dir = target.is_dir()
            except (OSError, RuntimeError) as exc:  # a broken link, or a link loop
                listing.skipped.append((entry.path, f"unreadable link: {exc}"))
                continue
            if is_dir:
                if is_link:
                    linked_folders.append((Path(entry.path), target))
                elif target not in seen_folders:
                    seen_folders.add(target)
                    folders.append((Path(entry.path), target))
                continue
            suffix = Path(entry.name).suffix.lower()
            if suffix in AUDIO_EXTENSIONS:
                audio.append((entry.path, target, is_link))
            elif suffix in _SIDECAR_SUFFIXES:
                images.append((entry.name, str(target)))
        sidecar = _sidecar(images)
        for path, target, is_link in audio:
            task = ScanTask(path, str(target), sidecar)
            if is_link:
                linked_files.append(task)
            elif task.real_path not in seen_files:
                seen_files.add(task.real_path)
                listing.files.append(task)
    for task in linked_files:
        if task.real_path not in seen_files:
            seen_files.add(task.real_path)
            listing.files.append(task)
    listing.files.sort(key=lambda task: task.path)
    return listing


# ---------------------------------------------------------------------------------------------
# 2. Scanning (runs in worker processes)


@dataclass(frozen=True, slots=True)
class ArtworkPayload:
    """Album artwork found for a file: its blob key, and its JPEG bytes the first time only."""

    key: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """What scanning one file found; small and picklable, as it crosses a process boundary."""

    path: str
    content_hash: str | None = None
    size: int = 0
    already_known: bool = False
    failure: str | None = None
    probe: AudioProbe | None = None
    tags: TrackTags | None = None
    artwork: ArtworkPayload | None = None


# Per worker process: hashes already in the catalog (set once by the pool initializer), and
# artwork already normalized and shipped, so an album's cover crosses the boundary once.
_known_hashes: frozenset[str] = frozenset()
_artwork_by_source: dict[str, str | None] = {}
_artwork_shipped: set[str] = set()


def _start_worker(known_hashes: frozenset[str]) -> None:
    global _known_hashes
    _known_hashes = known_hashes
    _artwork_by_source.clear()
    _artwork_shipped.clear()


def _hash_file(path: str) -> tuple[str, int]:
    with Path(path).open("rb") as file:
        digest = hashlib.file_digest(file, "sha256")
        return digest.hexdigest(), file.tell()


def _artwork_payload(source_id: str, load: Callable[[], bytes | None]) -> ArtworkPayload | None:
    # Normalize each artwork source once per worker, and send its bytes the first time only.
    if source_id not in _artwork_by_source:
        try:
            data = load()
            artwork = normalize_artwork(data) if data else None
        except (InvalidArtwork, OSError):
            artwork = None  # unusable artwork never stops the track itself
        _artwork_by_source[source_id] = artwork.key if artwork is not None else None
        if artwork is not None and artwork.key not in _artwork_shipped:
            _artwork_shipped.add(artwork.key)
            return ArtworkPayload(artwork.key, artwork.data)
    key = _artwork_by_source[source_id]
    return ArtworkPayload(key, None) if key is not None else None


def _sidecar_bytes(path: str) -> bytes | None:
    file = Path(path)
    if file.stat().st_size > MAX_ARTWORK_BYTES:
        return None
    return file.read_bytes()


def scan_audio_file(task: ScanTask) -> ScannedFile:
    """Hash, probe and read the tags and artwork of one file; failures become a reason."""
    try:
        content_hash, size = _hash_file(task.real_path)
    except OSError as exc:
        return ScannedFile(task.path, failure=f"cannot read file: {exc.strerror or exc}")
    if content_hash in _known_hashes:
        return ScannedFile(task.path, content_hash, size, already_known=True)
    try:
        probe = probe_audio(Path(task.real_path))
    except UnreadableAudio as exc:
        return ScannedFile(task.path, content_hash, size, failure=str(exc))
    try:
        tags = read_tags(Path(task.real_path))
    except UnreadableTags:
        # The audio plays; a damaged tag only costs the metadata (the title comes from the
        # file name).
        tags = TrackTags()
    artwork = None
    if tags.artwork:
        embedded = tags.artwork
        source = "embedded:" + hashlib.sha256(embedded).hexdigest()
        artwork = _artwork_payload(source, lambda: embedded)
    if artwork is None and task.sidecar is not None:
        sidecar = task.sidecar
        artwork = _artwork_payload("file:" + sidecar, lambda: _sidecar_bytes(sidecar))
    return ScannedFile(
        task.path,
        content_hash,
        size,
        probe=probe,
        tags=replace(tags, artwork=None),
        artwork=artwork,
    )


def _scan_chunk(
    tasks: Sequence[ScanTask], scanner: Callable[[ScanTask], ScannedFile]
) -> list[ScannedFile]:
    results = []
    for task in tasks:
        try:
            results.append(scanner(task))
        except Exception as exc:
            # One odd file must not cost the rest of the chunk, or the import.
            results.append(
                ScannedFile(task.path, failure=f"unexpected error: {type(exc).__name__}: {exc}")
            )
    return results


def _chunks(tasks: Sequence[ScanTask], workers: int) -> deque[list[ScanTask]]:
    size = max(1, min(_MAX_CHUNK, len(tasks) // (workers * 4) or 1))
    return deque(list(tasks[i : i + size]) for i in range(0, len(tasks), size))


def _new_pool(workers: int, known_hashes: frozenset[str]) -> ProcessPoolExecutor:
    # spawn, not fork: the parent runs an event loop and database driver threads, which a
    # forked child would inherit in whatever state they were in.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(known_hashes,),
    )


async def scan_files(
    tasks: Sequence[ScanTask],
    *,
    workers: int,
    known_hashes: frozenset[str] = frozenset(),
    scanner: Callable[[ScanTask], ScannedFile] = scan_audio_file,
) -> AsyncGenerator[ScannedFile, None]:
    """Scan files in `workers` processes, yielding results as they finish (in any order).

    A file that crashes a worker (a decoder bug) is found by re-scanning the files that were
    in flight one at a time, and reported as a failure; the other files are scanned normally.
    """
    if not tasks:
        return
    workers = max(1, min(workers, len(tasks)))
    queue = _chunks(tasks, workers)
    suspects: deque[list[ScanTask]] = deque()
    pool = _new_pool(workers, known_hashes)
    # future -> (its files, whether it ran alone in the pool)
    in_flight: dict[asyncio.Future[list[ScannedFile]], tuple[list[ScanTask], bool]] = {}

    def submit(chunk: list[ScanTask], alone: bool) -> None:
        future = asyncio.wrap_future(pool.submit(_scan_chunk, chunk, scanner))
        in_flight[future] = (chunk, alone)

    try:
        while queue or suspects or in_flight:
            if suspects:
                # After a crash, suspects run one at a time: the one that crashes again is it.
                if not in_flight:
                    submit(suspects.popleft(), True)
            else:
                while queue and len(in_flight) < workers * _TASKS_PER_WORKER:
                    submit(queue.popleft(), False)
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            crashed = False
            # In submission order (the dict's), so a worker's first mention of an artwork,
            # which carries its bytes, is handled before its later ones.
            for future in [future for future in in_flight if future in done]:
                chunk, alone = in_flight.pop(future)
                try:
                    results = future.result()
                except BrokenProcessPool:
                    crashed = True
                    if alone:
                        yield ScannedFile(chunk[0].path, failure=_CRASH_REASON)
                    else:
                        suspects.extend([task] for task in chunk)
                    continue
                for result in results:
                    yield result
            if not crashed:
                continue
            # A broken pool fails every future it still has; finish them, then start anew.
            for future, (chunk, _alone) in list(in_flight.items()):
                try:
                    results = await future
                except BrokenProcessPool:
                    suspects.extend([task] for task in chunk)
                    continue
                for result in results:
                    yield result
            in_flight.clear()
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _new_pool(workers, known_hashes)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# 3. Writing the catalog


@dataclass
class ImportReport:
    """What an import did: counts, the files it could not use and why, and how long it took."""

    root: str
    # Groups the processing jobs of this import, so a progress bar can follow them.
    job_group: str = field(default_factory=lambda: f"import:{uuid.uuid4()}")
    found: int = 0
    imported: int = 0
    already_known: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    # Tracks whose renditions could not be made (their jobs ended dead).
    processing_failed: int = 0

    @property
    def tracks_per_s(self) -> float:
        """Files handled per second of the whole import."""
        return self.found / self.duration_s if self.duration_s > 0 else 0.0


ImportProgress = Callable[[int, int], None]
"""Called with (files scanned, files found) as the scan advances."""


def original_key(content_hash: str, probe: AudioProbe) -> str:
    """Content-addressed blob key of an original: `originals/<h[:2]>/<h>.<ext>`."""
    if probe.container == "ogg":
        extension = "opus" if probe.codec == "opus" else "ogg"
    else:
        extension = _ORIGINAL_EXTENSIONS.get(probe.container, "bin")
    return f"originals/{content_hash[:2]}/{content_hash}.{extension}"


_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp4": "audio/mp4",
    "wav": "audio/wav",
    "aac": "audio/aac",
}


def _title_from_path(path: str) -> tuple[str, int | None]:
    # "03 - Song Name.mp3" -> ("Song Name", 3); "Song_Name.flac" -> ("Song Name", None)
    stem = Path(path).stem.replace("_", " ")
    match = _LEADING_TRACK_NUMBER.match(stem)
    if match is not None:
        return stem[match.end() :].strip() or stem, int(match.group(1)) or None
    return " ".join(stem.split()) or "Untitled", None


def _credits(artists: Iterable[ArtistTag]) -> list[CreditSpec]:
    return [
        CreditSpec(
            name=artist.name,
            role=CreditRole.featured if artist.featured else CreditRole.primary,
            musicbrainz_id=artist.musicbrainz_id,
        )
        for artist in artists
    ]


def _album_type(tags: TrackTags) -> AlbumType:
    if tags.release_type in {kind.value for kind in AlbumType}:
        return AlbumType(tags.release_type)
    return AlbumType.compilation if tags.compilation else AlbumType.album


@dataclass(frozen=True, slots=True)
class _TrackWrite:
    scanned: ScannedFile
    original_key: str


@dataclass(frozen=True, slots=True)
class _FailureWrite:
    path: str
    reason: str
    content_hash: str | None


@dataclass(frozen=True, slots=True)
class _ClearFailure:
    path: str


_Write = _TrackWrite | _FailureWrite | _ClearFailure


# Albums already resolved in the current transaction, by title and album artists: tracks
# arrive album by album, so most lookups are repeats.
_AlbumCache = dict[tuple[str, tuple[tuple[str, str], ...], uuid.UUID | None], Album]


async def _write_track(
    db_session: AsyncSession, write: _TrackWrite, albums: _AlbumCache, job_group: str
) -> None:
    scanned = write.scanned
    probe = scanned.probe
    if probe is None or scanned.content_hash is None:
        raise ValueError("a track needs a probe and a content hash")
    tags = scanned.tags or TrackTags()
    title, number_from_name = _title_from_path(scanned.path)
    track_artists = _credits(tags.artists)
    if tags.album_artists:
        album_artists = _credits(tags.album_artists)
    elif tags.compilation:
        album_artists = [CreditSpec(VARIOUS_ARTISTS)]
    else:
        album_artists = [c for c in track_artists if c.role is CreditRole.primary]
    album_title = tags.album or UNKNOWN_ALBUM
    album_artists = album_artists or [CreditSpec(UNKNOWN_ARTIST)]
    cache_key = (
        catalog_service.name_key(album_title),
        tuple((catalog_service.name_key(c.name), c.role.value) for c in album_artists),
        tags.musicbrainz_album_id,
    )
    album = albums.get(cache_key)
    if album is None:
        album = await catalog_service.get_or_create_album(
            db_session=db_session,
            title=album_title,
            artists=album_artists,
            release_date=tags.release_date,
            album_type=_album_type(tags),
            musicbrainz_id=tags.musicbrainz_album_id,
        )
        albums[cache_key] = album
    if scanned.artwork is not None:
        await catalog_service.set_album_artwork(
            db_session=db_session, album=album, artwork_key=scanned.artwork.key
        )
    new = NewTrack(
        title=tags.title or title,
        duration_ms=probe.duration_ms,
        disc_number=tags.disc_number or 1,
        track_number=tags.track_number or (None if tags.title else number_from_name),
        isrc=tags.isrc,
        explicit=tags.explicit,
        musicbrainz_id=tags.musicbrainz_recording_id,
        original_key=write.original_key,
        content_hash=scanned.content_hash,
        original_size=scanned.size,
        codec=probe.codec,
        container=probe.container,
        sample_rate=probe.sample_rate,
        channels=probe.channels,
        bit_rate=probe.bit_rate,
        artists=tuple(track_artists) or (CreditSpec(UNKNOWN_ARTIST),),
        genres=tags.genres,
    )
    # Imported here, not at the top: scanning processes import this module and need neither.
    from encore import bus
    from encore.media import service as media_service

    track = await catalog_service.add_track(db_session=db_session, album=album, new=new)
    # Same transaction as the track: every imported track gets its renditions made.
    await bus.enqueue_job(
        db_session=db_session,
        kind=media_service.PROCESS_TRACK_JOB,
        payload={"track_id": str(track.id)},
        dedupe_key=f"{media_service.PROCESS_TRACK_JOB}:{track.id}",
        group_key=job_group,
    )


class _CatalogWriter:
    """The single writer: applies writes in batches, one transaction per batch."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], report: ImportReport
    ) -> None:
        self._session_factory = session_factory
        self._report = report
        self._pending: list[_Write] = []
        self._pending_tracks = 0

    async def add(self, write: _Write) -> None:
        self._pending.append(write)
        if isinstance(write, _TrackWrite):
            self._pending_tracks += 1
            if self._pending_tracks >= BATCH_SIZE:
                await self.flush()

    async def flush(self) -> None:
        writes, self._pending, self._pending_tracks = self._pending, [], 0
        if not writes:
            return
        try:
            async with self._session_factory() as db_session:
                albums: _AlbumCache = {}
                for write in writes:
                    await self._apply(db_session, write, albums)
                await db_session.commit()
        except Exception as exc:
            # One bad row (say, a track another import added meanwhile) must not cost the
            # batch: replay it a write per transaction to find and report the culprit.
            logger.warning("import_batch_failed", error=f"{type(exc).__name__}: {exc}")
            for write in writes:
                await self._apply_alone(write)
            return
        self._count(writes)

    async def _apply_alone(self, write: _Write) -> None:
        try:
            async with self._session_factory() as db_session:
                await self._apply(db_session, write, {})
                await db_session.commit()
        except Exception as exc:
            if not isinstance(write, _TrackWrite):
                raise
            reason = f"the catalog rejected the track: {type(exc).__name__}"
            logger.warning("import_track_rejected", path=write.scanned.path, error=str(exc))
            await self._apply_alone(
                _FailureWrite(write.scanned.path, reason, write.scanned.content_hash)
            )
            return
        self._count([write])

    def _count(self, writes: Iterable[_Write]) -> None:
        for write in writes:
            if isinstance(write, _TrackWrite):
                self._report.imported += 1
            elif isinstance(write, _FailureWrite):
                self._report.failed.append((write.path, write.reason))

    async def _apply(self, db_session: AsyncSession, write: _Write, albums: _AlbumCache) -> None:
        if isinstance(write, _TrackWrite):
            await _write_track(db_session, write, albums, self._report.job_group)
        elif isinstance(write, _FailureWrite):
            await catalog_service.record_import_failure(
                db_session=db_session,
                path=write.path,
                reason=write.reason,
                content_hash=write.content_hash,
            )
        else:
            await catalog_service.clear_import_failure(db_session=db_session, path=write.path)


async def _store_artwork(store: BlobStore, artwork: ArtworkPayload, stored: set[str]) -> bool:
    # True when the artwork is in the store. Its bytes come with the first file of each
    # worker that found it; files handled earlier never name artwork whose bytes come later.
    if artwork.key in stored:
        return True
    if artwork.data is None:
        return False
    try:
        if not await store.exists(artwork.key):
            await store.put(artwork.key, artwork.data, content_type="image/jpeg")
    except Exception as exc:
        # Without its artwork, the album still imports.
        logger.warning("artwork_not_stored", key=artwork.key, error=f"{type(exc).__name__}: {exc}")
        return False
    stored.add(artwork.key)
    return True


async def import_library(
    *,
    root: Path,
    session_factory: async_sessionmaker[AsyncSession],
    store: BlobStore,
    workers: int,
    progress: ImportProgress | None = None,
) -> ImportReport:
    """Import every audio file under `root` that the catalog does not have yet."""
    started = time.perf_counter()
    report = ImportReport(root=str(root))
    listing = await asyncio.to_thread(find_audio_files, root)
    report.found = len(listing.files)
    report.skipped = listing.skipped
    async with session_factory() as db_session:
        known = await catalog_service.known_content_hashes(db_session=db_session)
        earlier_failures = {
            path for path, _ in await catalog_service.list_import_failures(db_session=db_session)
        }
    real_paths = {task.path: task.real_path for task in listing.files}
    writer = _CatalogWriter(session_factory, report)
    stored_artwork: set[str] = set()
    seen = set(known)
    scanned_count = 0
    if progress is not None:
        progress(0, report.found)
    scan = scan_files(listing.files, workers=workers, known_hashes=frozenset(known))
    async with contextlib.aclosing(scan) as results:
        async for scanned in results:
            scanned_count += 1
            if progress is not None:
                progress(scanned_count, report.found)
            if scanned.artwork is not None and not await _store_artwork(
                store, scanned.artwork, stored_artwork
            ):
                scanned = replace(scanned, artwork=None)
            if scanned.failure is not None:
                await writer.add(_FailureWrite(scanned.path, scanned.failure, scanned.content_hash))
                continue
            if scanned.path in earlier_failures:
                await writer.add(_ClearFailure(scanned.path))
            if scanned.already_known or scanned.content_hash in seen:
                report.already_known += 1
                continue
            assert scanned.content_hash is not None and scanned.probe is not None
            key = original_key(scanned.content_hash, scanned.probe)
            try:
                await store.publish(
                    key,
                    Path(real_paths[scanned.path]),
                    content_type=_CONTENT_TYPES.get(scanned.probe.container),
                )
            except Exception as exc:
                # A store error for one file is reported with it; the import goes on.
                reason = f"could not copy the file to the store: {type(exc).__name__}: {exc}"
                await writer.add(_FailureWrite(scanned.path, reason, scanned.content_hash))
                continue
            seen.add(scanned.content_hash)
            await writer.add(_TrackWrite(scanned, key))
    await writer.flush()
    report.duration_s = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------------------------------
# The `encore import` command


def print_import_summary(console: Console, report: ImportReport) -> None:
    """Print an import's counts, and the files it skipped with their reasons, as tables."""
    from rich.table import Table

    summary = Table(title=f"Import of {report.root}", show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    summary.add_row("audio files found", str(report.found))
    summary.add_row("imported", f"[green]{report.imported}[/green]")
    summary.add_row("already in the catalog", str(report.already_known))
    summary.add_row("failed", f"[red]{len(report.failed)}[/red]" if report.failed else "0")
    summary.add_row("skipped links and folders", str(len(report.skipped)))
    if report.processing_failed:
        summary.add_row("could not be processed", f"[red]{report.processing_failed}[/red]")
    summary.add_row("duration", f"{report.duration_s:.1f} s")
    summary.add_row("files per second", f"{report.tracks_per_s:.0f}")
    console.print(summary)
    problems = [(path, reason) for path, reason in report.failed] + report.skipped
    if problems:
        shown = 50
        table = Table(title="Not imported")
        table.add_column("file", overflow="fold")
        table.add_column("reason")
        root = Path(report.root).absolute()
        for path, reason in problems[:shown]:
            # Paths relative to the imported folder: shorter, and what the user recognizes.
            relative = Path(path).relative_to(root) if Path(path).is_relative_to(root) else path
            table.add_row(str(relative), reason)
        console.print(table)
        if len(problems) > shown:
            console.print(f"... and {len(problems) - shown} more")


async def run_import_command(
    *, settings: Settings, root: Path, console: Console, process: bool = True
) -> ImportReport:
    """Run `encore import`: import `root`, process its tracks (unless not wanted), summarize."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from encore.db import create_engine, create_session_factory, upgrade_database
    from encore.storage import open_blob_store

    engine = create_engine(settings)
    try:
        if settings.migrate_on_start:
            await upgrade_database(engine)
        store = open_blob_store(settings)
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("Scanning", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            session_factory = create_session_factory(engine)
            report = await import_library(
                root=root,
                session_factory=session_factory,
                store=store,
                workers=settings.import_workers or os.cpu_count() or 1,
                progress=advance,
            )
            if process and report.imported:
                processing = bar.add_task("Processing", total=report.imported)
                await process_imported_tracks(
                    settings=settings,
                    session_factory=session_factory,
                    store=store,
                    report=report,
                    progress=lambda done: bar.update(processing, completed=done),
                )
    finally:
        await engine.dispose()
    print_import_summary(console, report)
    return report


async def process_imported_tracks(
    *,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    store: BlobStore,
    report: ImportReport,
    progress: Callable[[int], None],
) -> None:
    """Run the import's processing jobs here (as `encore worker` would) until all are settled."""
    from encore.bus import JobState, WorkerPool, open_job_queue

    queue = open_job_queue(settings, session_factory)
    pool = WorkerPool.from_settings(
        settings=settings,
        session_factory=session_factory,
        store=store,
        count=settings.import_workers or os.cpu_count() or 1,
    )
    async with pool:
        while True:
            counts = await queue.job_counts_by_state(group_key=report.job_group)
            progress(counts[JobState.done] + counts[JobState.dead])
            if counts[JobState.queued] == 0 and counts[JobState.running] == 0:
                report.processing_failed = counts[JobState.dead]
                return
            await asyncio.sleep(0.5)

"""A demo library: invented artists and albums of synthesized, tagged audio, then imported.

Everything is made on the spot with PyAV, mutagen and Pillow (no downloads), and made the
same way every time, so loading the demo twice adds nothing the second time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from encore.media.synthesis import (
    A_MINOR,
    C_MAJOR,
    F_MAJOR,
    G_MAJOR,
    AudioFormat,
    TagSpec,
    Tone,
    make_cover_art,
    write_tagged_track,
)

if TYPE_CHECKING:
    from rich.console import Console

    from encore.catalog.importer import ImportReport
    from encore.config import Settings

__all__ = [
    "DEMO_ALBUMS",
    "DemoAlbum",
    "demo_credentials_path",
    "demo_library_path",
    "run_demo_command",
    "write_demo_library",
]

# Fixed namespace: the demo's MusicBrainz-style ids are the same on every machine.
_DEMO_NAMESPACE = uuid.UUID("6f1c1d7e-5b0a-4a57-9d64-2c7f4f0e8a31")


@dataclass(frozen=True)
class DemoAlbum:
    """One invented release of the demo library."""

    artist: str
    title: str
    date: str
    release_type: str
    genre: str
    audio_format: AudioFormat
    colour: tuple[int, int, int]
    tracks: tuple[str, ...]
    root_hz: float = 1.0  # transposition factor of the album's chords
    cover: str = "embedded"  # "embedded", "cover.jpg" (side-car) or "none"


DEMO_ALBUMS: tuple[DemoAlbum, ...] = (
    DemoAlbum(
        artist="Sigrún Vale",
        title="Glacier Hymns",
        date="2021-03-19",
        release_type="album",
        genre="Ambient",
        audio_format=AudioFormat.flac,
        colour=(70, 130, 180),
        tracks=("Meltwater", "Hvítá at Dawn", "Blue Ice Choir", "Katla Sleeps", "Driftglass"),
        root_hz=0.75,
    ),
    DemoAlbum(
        artist="Sigrún Vale",
        title="Northern Static",
        date="2023-10-06",
        release_type="ep",
        genre="Electronic",
        audio_format=AudioFormat.ogg,
        colour=(110, 60, 150),
        tracks=("Aurora Protocol", "Static Bloom", "Polar Night Signal"),
        root_hz=1.5,
    ),
    DemoAlbum(
        artist="The Copper Lanterns",
        title="Paper Harbors",
        date="2019-05-03",
        release_type="album",
        genre="Indie Rock",
        audio_format=AudioFormat.mp3,
        colour=(184, 115, 51),
        tracks=(
            "Lighthouse Static",
            "Paper Harbors",
            "Tidewater (feat. Sigrún Vale)",
            "Rusty Anchors",
            "Last Ferry Home",
        ),
        cover="cover.jpg",
    ),
    DemoAlbum(
        artist="Mateo Reyes Quartet",
        title="Blue Hour Sessions",
        date="2017-11-10",
        release_type="album",
        genre="Jazz",
        audio_format=AudioFormat.m4a,
        colour=(30, 50, 90),
        tracks=("Blue Hour", "Café Solo", "Late Train to Valparaíso", "Brushes"),
        root_hz=1.25,
    ),
    DemoAlbum(
        artist="Nightjar & The Tide",
        title="Lanterns Out",
        date="2024-02-14",
        release_type="single",
        genre="Folk",
        audio_format=AudioFormat.wav,
        colour=(40, 110, 90),
        tracks=("Lanterns Out", "Lanterns Out (Acoustic)"),
    ),
)

_PROGRESSIONS = (
    (C_MAJOR, G_MAJOR, A_MINOR, F_MAJOR),
    (A_MINOR, F_MAJOR, C_MAJOR, G_MAJOR),
    (F_MAJOR, C_MAJOR, G_MAJOR, A_MINOR),
    (C_MAJOR, A_MINOR, F_MAJOR, G_MAJOR),
)


def _demo_id(*parts: str) -> str:
    return str(uuid.uuid5(_DEMO_NAMESPACE, "/".join(parts)))


def _safe_name(text: str) -> str:
    # Characters that are awkward in file names on some systems become "_".
    return "".join("_" if ch in '<>:"/\\|?*' or ord(ch) < 32 else ch for ch in text).strip()


def _demo_track(
    album_index: int, album: DemoAlbum, number: int, title: str, cover: bytes | None
) -> tuple[Tone, TagSpec]:
    progression = _PROGRESSIONS[(number + album_index) % len(_PROGRESSIONS)]
    chords = tuple(tuple(hz * album.root_hz for hz in chord) for chord in progression)
    artists: tuple[str, ...] = (album.artist,)
    artist_ids: tuple[str, ...] = (_demo_id("artist", album.artist),)
    if " (feat. " in title:
        # The guest is credited the way taggers write it: in the artist string.
        title, guest = title.removesuffix(")").split(" (feat. ", 1)
        artists = (f"{album.artist} feat. {guest}",)
        artist_ids = (*artist_ids, _demo_id("artist", guest))
    tone = Tone(chords=chords, seconds=8 + (number * 5 + album_index * 3) % 8, amplitude=0.25)
    tags = TagSpec(
        title=title,
        artists=artists,
        album_artists=(album.artist,),
        album=album.title,
        track_number=number,
        track_total=len(album.tracks),
        disc_number=1,
        disc_total=1,
        date=album.date,
        genres=(album.genre,),
        # "QZ" is the prefix ISRC agencies hand out freely; these codes are made up.
        isrc=f"QZENC{album.date[2:4]}{album_index:03d}{number:02d}",
        release_type=album.release_type,
        musicbrainz_recording_id=_demo_id("recording", album.title, title),
        musicbrainz_album_id=_demo_id("release", album.title),
        musicbrainz_artist_ids=artist_ids,
        musicbrainz_album_artist_ids=(_demo_id("artist", album.artist),),
        cover=cover,
    )
    return tone, tags


def write_demo_library(target: Path) -> list[Path]:
    """Write the demo library under `target` (files already there are kept) and list its files."""
    written: list[Path] = []
    for album_index, album in enumerate(DEMO_ALBUMS):
        folder = target / _safe_name(album.artist) / _safe_name(album.title)
        folder.mkdir(parents=True, exist_ok=True)
        cover = make_cover_art(f"{album.artist} - {album.title}", colour=album.colour)
        if album.cover == "cover.jpg":
            sidecar = folder / "cover.jpg"
            if not sidecar.exists():
                _write_atomically(sidecar, partial(Path.write_bytes, data=cover))
        embedded = cover if album.cover == "embedded" else None
        for number, title in enumerate(album.tracks, start=1):
            name = f"{number:02d} {_safe_name(title)}.{album.audio_format.value}"
            path = folder / name
            if not path.exists():
                tone, tags = _demo_track(album_index, album, number, title, embedded)
                _write_atomically(path, partial(write_tagged_track, tone=tone, tags=tags))
            written.append(path)
    return written


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    # A demo interrupted halfway leaves no half-written file to be imported as corrupt.
    temp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(temp)
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


def _demo_data_path(settings: Settings) -> Path:
    # Beside the SQLite database, so a second Encore with its own database has its own demo.
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            return Path(database).resolve().parent
    return Path("var").resolve()


def demo_library_path(settings: Settings) -> Path:
    """Where the demo library is written: beside the SQLite database, else under ./var."""
    return _demo_data_path(settings) / "demo-library"


def demo_credentials_path(settings: Settings) -> Path:
    """Where the demo accounts' passwords are written: beside the demo library."""
    from encore.auth.demo import DEMO_CREDENTIALS_FILE

    return _demo_data_path(settings) / DEMO_CREDENTIALS_FILE


async def run_demo_command(
    *, settings: Settings, console: Console, only_if_empty: bool
) -> ImportReport | None:
    """Run `encore demo`: migrate, write and import the demo library, make the demo accounts."""
    from encore.auth.demo import demo_accounts_exist
    from encore.catalog import service as catalog_service
    from encore.catalog.importer import run_import_command
    from encore.db import create_engine, create_session_factory, upgrade_database

    engine = create_engine(settings)
    try:
        await upgrade_database(engine)
        async with create_session_factory(engine)() as db_session:
            tracks = await catalog_service.count_tracks(db_session=db_session)
            accounts_exist = await demo_accounts_exist(db_session=db_session)
    finally:
        await engine.dispose()
    if only_if_empty and tracks:
        console.print(f"catalog already has {tracks} tracks; demo not loaded")
        _show_existing_accounts(settings, console, accounts_exist=accounts_exist)
        return None
    target = demo_library_path(settings)
    console.print(f"writing the demo library to {target}")
    files = await asyncio.to_thread(write_demo_library, target)
    console.print(f"{len(files)} demo tracks written; importing them")
    report = await run_import_command(settings=settings, root=target, console=console)
    await _make_demo_accounts(settings, console)
    return report


async def _make_demo_accounts(settings: Settings, console: Console) -> None:
    from rich.table import Table

    from encore.auth.demo import create_demo_accounts, save_demo_credentials
    from encore.db import create_engine, create_session_factory

    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as db_session:
            created = await create_demo_accounts(
                db_session=db_session,
                artist_names=sorted({album.artist for album in DEMO_ALBUMS}),
            )
            # The file is written before the commit: a password must never exist only in
            # the database, where nobody can read it back.
            path = demo_credentials_path(settings)
            if created:
                await asyncio.to_thread(save_demo_credentials, path, created)
            await db_session.commit()
    finally:
        await engine.dispose()
    if not created:
        _show_existing_accounts(settings, console, accounts_exist=True)
        return
    table = Table(title="Demo accounts", title_justify="left")
    for column in ("username", "role", "password"):
        table.add_column(column)
    for username, role, password in created:
        table.add_row(username, role, password)
    console.print(table)
    console.print(f"these passwords are also in {path} (readable only by you)", soft_wrap=True)


def _show_existing_accounts(settings: Settings, console: Console, *, accounts_exist: bool) -> None:
    path = demo_credentials_path(settings)
    if path.exists():
        console.print(f"demo accounts and their passwords: {path}", soft_wrap=True)
    elif accounts_exist:
        console.print(
            f"the demo accounts exist but {path} is gone, and their passwords with it; "
            "make yourself an account with `encore users create NAME --email EMAIL`",
            soft_wrap=True,
        )
    else:
        console.print("to sign in, make an account with `encore users create NAME --email EMAIL`")

"""Importing a folder of synthesized, tagged audio, on SQLite and PostgreSQL.

The library holds what real folders hold: tagged albums in several formats, embedded and
side-car covers, a multi-artist tag and a featured guest, an untagged file, a corrupt file,
hidden and non-audio files, and symbolic links inside and outside the folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from encore.catalog import service as catalog_service
from encore.catalog.demo import DEMO_ALBUMS, demo_library_path, write_demo_library
from encore.catalog.importer import (
    ImportReport,
    ScannedFile,
    ScanTask,
    find_audio_files,
    import_library,
    scan_audio_file,
    scan_files,
)
from encore.cli import app as cli_app
from encore.config import Settings
from encore.db import create_engine, create_session_factory
from encore.media.synthesis import AudioFormat, TagSpec, Tone, make_cover_art, write_tagged_track
from encore.storage import BlobStore

SHORT = Tone(seconds=1.0)


def _write_library(root: Path, outside: Path) -> None:
    embedded = make_cover_art("Glacier Hymns", size=200)
    hymns = root / "Sigrún Vale" / "Glacier Hymns"
    album = {
        "album": "Glacier Hymns",
        "album_artists": ("Sigrún Vale",),
        "date": "2021-03-19",
        "genres": ("Ambient",),
        "track_total": 3,
        "cover": embedded,
    }
    # Written out of order: the album must list them by track number.
    write_tagged_track(
        hymns / "03 Driftglass.ogg",
        SHORT,
        TagSpec(title="Driftglass", artists=("Sigrún Vale",), track_number=3, **album),
    )
    write_tagged_track(
        hymns / "01 Meltwater.flac",
        SHORT,
        TagSpec(
            title="Meltwater",
            artists=("Sigrún Vale", "Mateo Reyes"),  # a multi-valued artist tag
            track_number=1,
            isrc="QZENC2100101",
            **album,
        ),
    )
    write_tagged_track(
        hymns / "02 Blue Ice.m4a",
        SHORT,
        TagSpec(title="Blue Ice", artists=("Sigrún Vale feat. Ola Nord",), track_number=2, **album),
    )
    harbors = root / "The Copper Lanterns" / "Paper Harbors"
    for number, title in ((2, "Rusty Anchors"), (1, "Lighthouse Static")):
        write_tagged_track(
            harbors / f"{title}.mp3",
            SHORT,
            TagSpec(
                title=title,
                artists=("The Copper Lanterns",),
                album="Paper Harbors",
                track_number=number,
                date="2019",
                release_type="ep",
                genres=("Indie Rock",),
            ),
        )
    (harbors / "cover.jpg").write_bytes(make_cover_art("Paper Harbors", size=300))
    write_tagged_track(root / "untagged_demo_take.wav", SHORT, TagSpec())
    # Corrupt: the start of a real FLAC file, cut off.
    whole = write_tagged_track(root / "whole.flac", SHORT, TagSpec(title="Whole"))
    (root / "broken.flac").write_bytes(whole.read_bytes()[:700])
    whole.unlink()
    (root / "notes.txt").write_text("not music")
    (root / ".hidden.mp3").write_bytes(b"junk")
    # Links: one to a file inside (a second path to it), two leading outside, one looping.
    # Inside links are relative, so copies of the library keep them inside.
    (root / "meltwater-link.flac").symlink_to(Path("Sigrún Vale/Glacier Hymns/01 Meltwater.flac"))
    (root / "loop").symlink_to(Path())
    write_tagged_track(outside / "secret.mp3", SHORT, TagSpec(title="Outside The Root"))
    (root / "escape.mp3").symlink_to(outside / "secret.mp3")
    (root / "escape-folder").symlink_to(outside)


@pytest.fixture(scope="session")
def library_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The test library, synthesized once: (root, the folder outside it)."""
    base = tmp_path_factory.mktemp("import-library")
    root, outside = base / "library", base / "outside"
    root.mkdir()
    outside.mkdir()
    _write_library(root, outside)
    return root, outside


@pytest.fixture
def library(tmp_path: Path, library_template: tuple[Path, Path]) -> Path:
    """A copy of the test library that this test may change."""
    root = tmp_path / "library"
    shutil.copytree(library_template[0], root, symlinks=True)
    return root


async def _import(settings: Settings, store: BlobStore, root: Path) -> ImportReport:
    engine = create_engine(settings)
    try:
        return await import_library(
            root=root,
            session_factory=create_session_factory(engine),
            store=store,
            workers=2,
        )
    finally:
        await engine.dispose()


async def _album(client: httpx.AsyncClient, artist: str, title: str) -> dict[str, Any]:
    artists = (await client.get("/v1/artists", params={"limit": 100})).json()["items"]
    artist_id = next(a["id"] for a in artists if a["name"] == artist)
    albums = (await client.get(f"/v1/artists/{artist_id}/albums")).json()["items"]
    album_id = next(a["id"] for a in albums if a["title"] == title)
    response = await client.get(f"/v1/albums/{album_id}")
    assert response.status_code == 200
    album: dict[str, Any] = response.json()
    return album


async def test_import_builds_the_catalog(
    settings: Settings,
    store: BlobStore,
    db_session: AsyncSession,
    client: httpx.AsyncClient,
    library: Path,
) -> None:
    report = await _import(settings, store, library)

    assert (report.found, report.imported, report.already_known) == (7, 6, 0)
    assert report.failed == [(str(library / "broken.flac"), report.failed[0][1])]
    assert "corrupt" in report.failed[0][1] or "no decodable" in report.failed[0][1]
    skipped = {Path(path).name: reason for path, reason in report.skipped}
    assert set(skipped) == {"escape.mp3", "escape-folder"}
    assert all("outside" in reason for reason in skipped.values())
    assert await catalog_service.list_import_failures(db_session=db_session) == report.failed

    hymns = await _album(client, "Sigrún Vale", "Glacier Hymns")
    assert hymns["release_date"] == "2021-03-19"
    assert hymns["album_type"] == "album"
    assert hymns["genres"] == ["Ambient"]
    assert [a["name"] for a in hymns["artists"]] == ["Sigrún Vale"]
    assert [(t["track_number"], t["title"]) for t in hymns["tracks"]] == [
        (1, "Meltwater"),
        (2, "Blue Ice"),
        (3, "Driftglass"),
    ]
    credits = [[(a["name"], a["role"]) for a in t["artists"]] for t in hymns["tracks"]]
    assert credits == [
        [("Sigrún Vale", "primary"), ("Mateo Reyes", "primary")],
        [("Sigrún Vale", "primary"), ("Ola Nord", "featured")],
        [("Sigrún Vale", "primary")],
    ]
    assert hymns["tracks"][0]["isrc"] == "QZENC2100101"
    assert all(900 <= t["duration_ms"] <= 1100 for t in hymns["tracks"])
    artwork = await client.get(hymns["artwork_url"])
    assert artwork.status_code == 200
    assert artwork.headers["content-type"] == "image/jpeg"

    harbors = await _album(client, "The Copper Lanterns", "Paper Harbors")
    assert harbors["album_type"] == "ep"
    assert harbors["release_date"] == "2019-01-01"
    assert [t["title"] for t in harbors["tracks"]] == ["Lighthouse Static", "Rusty Anchors"]
    cover = await client.get(harbors["artwork_url"])  # from the side-car cover.jpg
    assert cover.headers["content-type"] == "image/jpeg"

    unknown = await _album(client, "Unknown Artist", "Unknown Album")
    assert [t["title"] for t in unknown["tracks"]] == ["untagged demo take"]
    assert unknown["artwork_url"] is None

    track = (await client.get(f"/v1/tracks/{hymns['tracks'][0]['id']}")).json()
    assert track["genres"] == ["Ambient"]
    artists = (await client.get("/v1/artists", params={"limit": 100})).json()["items"]
    assert "Outside The Root" not in {a["name"] for a in artists}
    originals = [blob async for blob in store.list("originals")]
    assert len(originals) == 6
    assert {Path(blob.key).suffix for blob in originals} == {
        ".flac",
        ".opus",
        ".m4a",
        ".mp3",
        ".wav",
    }


async def test_reimport_adds_nothing_then_only_new_files(
    settings: Settings, store: BlobStore, db_session: AsyncSession, library: Path
) -> None:
    first = await _import(settings, store, library)
    assert first.imported == 6

    again = await _import(settings, store, library)
    assert (again.imported, again.already_known, len(again.failed)) == (0, 6, 1)
    assert await catalog_service.count_tracks(db_session=db_session) == 6

    # A new file, and the broken one replaced by a good recording.
    write_tagged_track(
        library / "Later" / "new.mp3", SHORT, TagSpec(title="Added Later", artists=("Newcomer",))
    )
    write_tagged_track(library / "broken.flac", SHORT, TagSpec(title="Fixed"))
    later = await _import(settings, store, library)

    assert (later.imported, later.already_known, later.failed) == (2, 6, [])
    assert await catalog_service.count_tracks(db_session=db_session) == 8
    assert await catalog_service.list_import_failures(db_session=db_session) == []


async def test_duplicate_files_in_one_import_are_imported_once(
    settings: Settings, store: BlobStore, db_session: AsyncSession, tmp_path: Path
) -> None:
    root = tmp_path / "dupes"
    original = write_tagged_track(root / "a.flac", SHORT, TagSpec(title="Twin"))
    shutil.copyfile(original, root / "b.flac")

    report = await _import(settings, store, root)

    assert (report.imported, report.already_known) == (1, 1)
    assert await catalog_service.count_tracks(db_session=db_session) == 1


# ---------------------------------------------------------------------------------------------
# The command line


def _use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    # The CLI reads its settings from the environment, as a user's shell would give them.
    monkeypatch.setenv("ENCORE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ENCORE_STORAGE_URL", settings.storage_url)
    monkeypatch.setenv("ENCORE_IMPORT_WORKERS", "2")
    monkeypatch.setenv("ENCORE_LOG_LEVEL", "warning")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo library, synthesized once for every test that loads the demo."""
    target = tmp_path_factory.mktemp("demo") / "demo-library"
    write_demo_library(target)
    return target


def test_cli_import_and_demo(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    library: Path,
    demo_template: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo library goes under ./var on PostgreSQL
    _use_settings(monkeypatch, settings)
    runner = CliRunner()

    imported = runner.invoke(cli_app, ["import", str(library)])
    assert imported.exit_code == 0, imported.output
    assert "imported" in imported.output
    assert "broken.flac" in imported.output

    skipped = runner.invoke(cli_app, ["demo", "--if-empty"])
    assert skipped.exit_code == 0, skipped.output
    assert "catalog already has 6 tracks; demo not loaded" in skipped.output

    # The demo only writes files that are not there yet: reuse the ones synthesized once.
    shutil.copytree(demo_template, demo_library_path(settings))
    demo = runner.invoke(cli_app, ["demo"])
    assert demo.exit_code == 0, demo.output
    demo_tracks = sum(len(album.tracks) for album in DEMO_ALBUMS)
    assert f"{demo_tracks} demo tracks written" in demo.output
    assert asyncio.run(_count_tracks(settings)) == 6 + demo_tracks


async def _count_tracks(settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as db_session:
            return await catalog_service.count_tracks(db_session=db_session)
    finally:
        await engine.dispose()


def test_demo_library_is_varied() -> None:
    artists = {album.artist for album in DEMO_ALBUMS}
    tracks = sum(len(album.tracks) for album in DEMO_ALBUMS)

    assert 3 <= len(artists) <= 4 and 4 <= len(DEMO_ALBUMS) <= 5 and 15 <= tracks <= 20
    assert any(not name.isascii() for name in artists)
    assert {"ep", "single"} <= {album.release_type for album in DEMO_ALBUMS}
    assert len({album.audio_format for album in DEMO_ALBUMS}) >= 4
    assert any("feat." in title for album in DEMO_ALBUMS for title in album.tracks)


# ---------------------------------------------------------------------------------------------
# Walking and scanning (no database)


def test_find_audio_files_stays_inside_the_root(library: Path) -> None:
    listing = find_audio_files(library)

    names = sorted(str(Path(task.path).relative_to(library)) for task in listing.files)
    # The linked file is listed once, under its own path; nothing outside, hidden or looping.
    assert names == [
        "Sigrún Vale/Glacier Hymns/01 Meltwater.flac",
        "Sigrún Vale/Glacier Hymns/02 Blue Ice.m4a",
        "Sigrún Vale/Glacier Hymns/03 Driftglass.ogg",
        "The Copper Lanterns/Paper Harbors/Lighthouse Static.mp3",
        "The Copper Lanterns/Paper Harbors/Rusty Anchors.mp3",
        "broken.flac",
        "untagged_demo_take.wav",
    ]
    assert all(Path(task.real_path).is_relative_to(library.resolve()) for task in listing.files)
    sidecars = {Path(task.path).name: task.sidecar for task in listing.files}
    assert sidecars["Rusty Anchors.mp3"] == str(
        (library / "The Copper Lanterns" / "Paper Harbors" / "cover.jpg").resolve()
    )


def crash_on_request(task: ScanTask) -> ScannedFile:
    """A scanner that kills its worker process on files named crash*, like a decoder bug."""
    if Path(task.path).name.startswith("crash"):
        os._exit(3)
    return scan_audio_file(task)


async def test_a_file_that_crashes_a_worker_fails_alone(tmp_path: Path) -> None:
    tasks = []
    for name in ("a.flac", "crash.flac", "b.flac", "c.flac", "d.flac"):
        path = tmp_path / name
        write_tagged_track(path, Tone(seconds=0.3), TagSpec(title=name))
        tasks.append(ScanTask(str(path), str(path)))

    results = {
        Path(result.path).name: result
        async for result in scan_files(tasks, workers=2, scanner=crash_on_request)
    }

    assert set(results) == {"a.flac", "crash.flac", "b.flac", "c.flac", "d.flac"}
    assert results["crash.flac"].failure == "the audio decoder crashed on this file"
    assert all(results[name].failure is None for name in ("a.flac", "b.flac", "c.flac", "d.flac"))
    assert all(results[name].probe is not None for name in ("a.flac", "b.flac"))


@pytest.mark.parametrize("audio_format", [AudioFormat.aac], ids=str)
async def test_scan_reads_raw_aac_with_id3(tmp_path: Path, audio_format: AudioFormat) -> None:
    path = write_tagged_track(
        tmp_path / f"raw.{audio_format.value}", SHORT, TagSpec(title="Raw", artists=("ADTS",))
    )

    result = scan_audio_file(ScanTask(str(path), str(path)))

    assert result.failure is None and result.probe is not None and result.tags is not None
    assert (result.probe.container, result.tags.title) == ("aac", "Raw")

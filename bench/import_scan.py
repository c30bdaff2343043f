"""Import scanning speed: tracks/s to hash, probe and tag-read 2,000 synthesized files.

Synthesizes a library of short, tagged files in five formats (mp3, flac, ogg/Opus, m4a, wav;
cached between runs, not timed), then measures

- the scan: `encore.catalog.importer.scan_files` over the worker pool (hash + PyAV probe +
  mutagen tags + artwork), including the start of the pool, and
- a reference in the same run: only reading and SHA-256-hashing every file on a pool of the
  same size (the floor any scanner pays), and
- the whole import into a fresh SQLite database and file:// store (scan, copying the
  originals, writing the catalog).

Goal: >= 200 tracks/s for the scan on 2 cores. Run with `python -m bench.import_scan`; the
result is printed and written to bench/results/import_scan.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import cpu_model
from encore.catalog.importer import find_audio_files, import_library, scan_files
from encore.config import load_settings
from encore.db import create_engine, create_session_factory, upgrade_database
from encore.media.synthesis import (
    A_MINOR,
    C_MAJOR,
    F_MAJOR,
    G_MAJOR,
    AudioFormat,
    TagSpec,
    Tone,
    make_cover_art,
    synthesize_audio,
    write_tags,
)
from encore.storage import open_blob_store

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "import_scan.json"
GOAL_TRACKS_PER_S = 200.0
FORMATS = (AudioFormat.mp3, AudioFormat.flac, AudioFormat.ogg, AudioFormat.m4a, AudioFormat.wav)
TRACKS_PER_ALBUM = 10
ALBUMS_PER_ARTIST = 4
LIBRARY_VERSION = 1  # bump when the synthesized library changes, to rebuild the cache


def build_library(target: Path, files: int, seconds: float) -> list[Path]:
    """Write `files` tagged tracks under `target` (reused when a complete copy is there)."""
    marker = target / ".complete"
    if marker.exists():
        return sorted(
            p for p in target.rglob("*") if p.suffix in {".mp3", ".flac", ".ogg", ".m4a", ".wav"}
        )
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    # One recording per format and chord; each file is a copy with its own tags, hence its
    # own bytes and content hash. Encoding 2,000 files would only slow the setup down.
    chords = (C_MAJOR, G_MAJOR, A_MINOR, F_MAJOR)
    recordings: dict[tuple[AudioFormat, int], bytes] = {}
    for audio_format in FORMATS:
        for index, chord in enumerate(chords):
            path = target / f"base-{index}.{audio_format.value}"
            synthesize_audio(path, Tone(chords=(chord,), seconds=seconds))
            recordings[(audio_format, index)] = path.read_bytes()
            path.unlink()
    paths = []
    covers: dict[int, bytes] = {}
    for number in range(files):
        album = number // TRACKS_PER_ALBUM
        artist = album // ALBUMS_PER_ARTIST
        audio_format = FORMATS[album % len(FORMATS)]
        if album not in covers:
            covers[album] = make_cover_art(
                f"Album {album}", size=500, colour=(album * 37 % 256, album * 91 % 256, 120)
            )
        folder = target / f"Artist {artist:03d}" / f"Album {album:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        track = number % TRACKS_PER_ALBUM + 1
        path = folder / f"{track:02d} Track {number}.{audio_format.value}"
        path.write_bytes(recordings[(audio_format, number % len(chords))])
        artists = (f"Artist {artist:03d}",)
        if number % 7 == 0:
            artists = (f"Artist {artist:03d} feat. Guest {number % 13}",)
        write_tags(
            path,
            TagSpec(
                title=f"Track {number}",
                artists=artists,
                album_artists=(f"Artist {artist:03d}",),
                album=f"Album {album:04d}",
                track_number=track,
                track_total=TRACKS_PER_ALBUM,
                date=f"{2000 + album % 25}-0{1 + album % 9}-1{album % 10}",
                genres=(("Rock", "Jazz", "Electronic", "Folk", "Ambient")[artist % 5],),
                isrc=f"QZBEN{album % 100:02d}{number:05d}",
                cover=covers[album],
            ),
        )
        paths.append(path)
    marker.write_text(f"{files} files in {time.perf_counter() - started:.1f} s\n")
    return paths


async def measure_scan(root: Path, workers: int) -> dict[str, Any]:
    """Time the scan alone (walk excluded, pool start included) over every file under root."""
    listing = find_audio_files(root)
    started = time.perf_counter()
    failures = 0
    async with contextlib.aclosing(scan_files(listing.files, workers=workers)) as results:
        async for scanned in results:
            failures += scanned.failure is not None
    elapsed = time.perf_counter() - started
    return {
        "files": len(listing.files),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "tracks_per_s": round(len(listing.files) / elapsed, 1),
    }


def _read_and_hash(paths: list[str]) -> int:
    for path in paths:
        with Path(path).open("rb") as file:
            hashlib.file_digest(file, "sha256")
    return len(paths)


def measure_reference(root: Path, workers: int) -> dict[str, Any]:
    """The floor any scanner pays: read and SHA-256 every file, on a pool of the same size."""
    files = [task.real_path for task in find_audio_files(root).files]
    chunks = [files[start :: workers * 8] for start in range(workers * 8)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = sum(pool.map(_read_and_hash, chunks))
    elapsed = time.perf_counter() - started
    return {"files": done, "seconds": round(elapsed, 3), "tracks_per_s": round(done / elapsed, 1)}


async def measure_import(root: Path, workdir: Path, workers: int) -> dict[str, Any]:
    """Time a whole import of root into a fresh SQLite database and file:// store."""
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'encore.db'}",
        storage_url=f"file://{workdir / 'media'}",
    )
    engine = create_engine(settings)
    try:
        await upgrade_database(engine)
        report = await import_library(
            root=root,
            session_factory=create_session_factory(engine),
            store=open_blob_store(settings),
            workers=workers,
        )
    finally:
        await engine.dispose()
    return {
        "files": report.found,
        "imported": report.imported,
        "failed": len(report.failed),
        "seconds": round(report.duration_s, 3),
        "tracks_per_s": round(report.tracks_per_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: build (or reuse) the library, measure, print, write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="synthesized files to scan")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio length of each file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "encore-bench-import-scan",
        help="where the synthesized library is kept between runs",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)

    library = args.cache / f"v{LIBRARY_VERSION}-{args.files}-{args.seconds:g}s"
    started = time.perf_counter()
    build_library(library, args.files, args.seconds)
    print(f"library ready in {time.perf_counter() - started:.1f} s: {library}", file=sys.stderr)

    scan = asyncio.run(measure_scan(library, args.workers))
    reference = measure_reference(library, args.workers)
    with tempfile.TemporaryDirectory(prefix="encore-bench-import-") as scratch:
        full = asyncio.run(measure_import(library, Path(scratch), args.workers))

    result = {
        "benchmark": "import_scan",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "python": platform.python_version(),
        "workers": args.workers,
        "library": {"files": args.files, "seconds_per_file": args.seconds},
        "scan": scan,
        "reference_read_and_hash": reference,
        "scan_ratio_to_reference": round(scan["tracks_per_s"] / reference["tracks_per_s"], 3),
        "import": full,
        "goal": {"scan_tracks_per_s": GOAL_TRACKS_PER_S},
        "goal_met": scan["tracks_per_s"] >= GOAL_TRACKS_PER_S,
    }
    print(
        f"import_scan: scan {scan['files']} files in {scan['seconds']:.2f} s = "
        f"{scan['tracks_per_s']:.0f} tracks/s ({args.workers} workers, goal >= "
        f"{GOAL_TRACKS_PER_S:.0f}: {'met' if result['goal_met'] else 'NOT met'}; "
        f"{result['scan_ratio_to_reference']:.2f}x of read+hash alone at "
        f"{reference['tracks_per_s']:.0f} tracks/s); "
        f"full import into SQLite {full['tracks_per_s']:.0f} tracks/s "
        f"({full['imported']} imported in {full['seconds']:.2f} s)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"results written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

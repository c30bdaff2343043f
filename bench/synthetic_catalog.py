"""A synthetic catalog (~100k tracks) bulk-inserted into a migrated Encore database."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from encore.catalog import service as catalog_service
from encore.catalog.models import (
    Album,
    AlbumArtist,
    AlbumGenre,
    AlbumType,
    Artist,
    CreditRole,
    Genre,
    Track,
    TrackArtist,
    TrackGenre,
    TrackStatus,
)
from encore.config import load_settings
from encore.db import create_engine, new_id, upgrade_database


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ADJECTIVES = _words(
    "Silver Golden Broken Quiet Electric Velvet Hollow Neon Crimson Distant Wild Paper Glass "
    "Midnight Northern Lonely Burning Frozen Endless Secret Static Lucid Violet Restless "
    "Falling Hidden Sacred Shallow Bitter Gentle Savage Faded Radiant Little Heavy Cosmic "
    "Sleeping Wandering Copper Amber Scarlet Azure Iron Honey Rusty Sunken Lost Bright"
)
NOUNS = _words(
    "River Heart Machine Garden Ocean Echo Mirror Shadow Harbor Signal Horizon Ember Satellite "
    "Lantern Desert Forest Avenue Tide Kingdom Cathedral Engine Feather Highway Island Thunder "
    "Orchard Compass Meadow Window Canyon Comet Valley Wolf Raven Ghost Cloud Fever Circuit "
    "Paradise Frontier Station Winter Summer Anthem Lullaby Voltage Monsoon Tundra Prism"
)
FIRST_NAMES = _words(
    "Ada Björn Camila Dmitri Elena Farah Gustavo Hana Idris Jonas Kaia Léa Mateo Nadia Oskar "
    "Priya Quentin Rosa Søren Tariq Uma Valentín Wen Ximena Yusuf Zoë Amara Bruno Chiara Dario "
    "Emeka Freya Goran Hiroshi Inès Jamal Kofi Lucía Mika Noor Olamide Pavel Rania Sven Thandiwe"
)
LAST_NAMES = _words(
    "Almeida Bauer Castillo Dubois Eriksen Fontaine García Haddad Ivanova Jensen Kowalski "
    "Lindqvist Moreau Nakamura Okafor Petrov Quiroga Rossi Schäfer Takahashi Uribe Varga "
    "Weber Xu Yilmaz Zielinski Adeyemi Brennan Costa Dvořák Esposito Fischer Gómez Hansen"
)
GENRE_NAMES = (
    "Rock",
    "Pop",
    "Jazz",
    "Electronic",
    "Hip-Hop",
    "R&B",
    "Soul",
    "Funk",
    "Classical",
    "Folk",
    "Country",
    "Blues",
    "Reggae",
    "Metal",
    "Punk",
    "Indie",
    "Ambient",
    "House",
    "Techno",
    "Drum & Bass",
    "Dubstep",
    "Latin",
    "Bossa Nova",
    "Afrobeat",
    "K-Pop",
    "J-Pop",
    "Gospel",
    "Disco",
    "Trip-Hop",
    "Shoegaze",
    "Post-Rock",
    "Synthwave",
    "Lo-Fi",
    "Soundtrack",
    "World",
    "Chanson",
    "Flamenco",
    "Grime",
    "Emo",
    "Krautrock",
)
ISRC_COUNTRIES = ("US", "GB", "FR", "DE", "SE", "JP", "BR", "NG", "KR", "CA")
# Rows per executemany call: large enough to amortize round trips, small enough to keep
# PostgreSQL's bind-parameter limit and memory in check.
CHUNK_ROWS = 5_000


@dataclass
class SyntheticCatalog:
    """Rows of every catalog table, ready for bulk insert."""

    artists: list[dict[str, Any]] = field(default_factory=list)
    genres: list[dict[str, Any]] = field(default_factory=list)
    albums: list[dict[str, Any]] = field(default_factory=list)
    album_artists: list[dict[str, Any]] = field(default_factory=list)
    album_genres: list[dict[str, Any]] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    track_artists: list[dict[str, Any]] = field(default_factory=list)
    track_genres: list[dict[str, Any]] = field(default_factory=list)

    def album_ids(self) -> list[uuid.UUID]:
        """Ids of the albums, in insertion order."""
        return [row["id"] for row in self.albums]

    def tables(self) -> Iterator[tuple[Table, list[dict[str, Any]]]]:
        """Each table with its rows, parents before children (foreign keys are enforced)."""
        yield Artist.__table__, self.artists  # type: ignore[misc]
        yield Genre.__table__, self.genres  # type: ignore[misc]
        yield Album.__table__, self.albums  # type: ignore[misc]
        yield AlbumArtist.__table__, self.album_artists  # type: ignore[misc]
        yield AlbumGenre.__table__, self.album_genres  # type: ignore[misc]
        yield Track.__table__, self.tracks  # type: ignore[misc]
        yield TrackArtist.__table__, self.track_artists  # type: ignore[misc]
        yield TrackGenre.__table__, self.track_genres  # type: ignore[misc]


def _artist_name(rng: random.Random) -> str:
    pattern = rng.random()
    if pattern < 0.45:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    if pattern < 0.70:
        return f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}s"
    if pattern < 0.85:
        return f"{rng.choice(NOUNS)} {rng.choice(NOUNS)}"
    if pattern < 0.93:
        return f"DJ {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"{rng.choice(FIRST_NAMES)} & the {rng.choice(NOUNS)}s"


def _title(rng: random.Random) -> str:
    pattern = rng.random()
    if pattern < 0.35:
        return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if pattern < 0.55:
        return f"{rng.choice(NOUNS)} of the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if pattern < 0.70:
        return f"The {rng.choice(NOUNS)}"
    if pattern < 0.85:
        return f"{rng.choice(NOUNS)} & {rng.choice(NOUNS)}"
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} (Part {rng.randint(1, 4)})"


def generate_catalog(
    *, tracks: int = 100_000, artists: int = 8_000, seed: int = 20_261_124
) -> SyntheticCatalog:
    """Rows of a deterministic-looking catalog: ~`tracks` tracks on albums of 6 to 14 tracks."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    catalog = SyntheticCatalog()

    for _ in range(artists):
        name = _artist_name(rng)
        catalog.artists.append(
            {
                "id": new_id(),
                "name": name,
                "name_key": catalog_service.name_key(name),
                "sort_name": catalog_service.sort_name(name),
                "musicbrainz_id": uuid.UUID(int=rng.getrandbits(128), version=4)
                if rng.random() < 0.3
                else None,
                "created_at": now,
            }
        )
    artist_ids = [row["id"] for row in catalog.artists]

    for name in GENRE_NAMES:
        catalog.genres.append(
            {"id": new_id(), "name": name, "name_key": catalog_service.name_key(name)}
        )
    genre_ids = [row["id"] for row in catalog.genres]

    first_release = date(1960, 1, 1)
    release_span_days = (date(2026, 6, 30) - first_release).days
    made = 0
    while made < tracks:
        album_id = new_id()
        size = min(rng.randint(6, 14), tracks - made)
        title = _title(rng)
        has_artwork = rng.random() < 0.8
        catalog.albums.append(
            {
                "id": album_id,
                "title": title,
                "title_key": catalog_service.name_key(title),
                "release_date": first_release + timedelta(days=rng.randrange(release_span_days))
                if rng.random() < 0.97
                else None,
                "album_type": AlbumType.ep
                if size <= 7 and rng.random() < 0.5
                else (AlbumType.compilation if rng.random() < 0.05 else AlbumType.album),
                "artwork_key": f"artwork/{rng.getrandbits(256):064x}.jpg" if has_artwork else None,
                "musicbrainz_id": uuid.UUID(int=rng.getrandbits(128), version=4)
                if rng.random() < 0.3
                else None,
                "created_at": now,
            }
        )
        primaries = rng.sample(artist_ids, 2 if rng.random() < 0.2 else 1)
        for position, artist_id in enumerate(primaries):
            catalog.album_artists.append(
                {
                    "album_id": album_id,
                    "artist_id": artist_id,
                    "role": CreditRole.primary,
                    "position": position,
                }
            )
        album_genres = rng.sample(genre_ids, rng.randint(1, 2))
        for genre_id in album_genres:
            catalog.album_genres.append({"album_id": album_id, "genre_id": genre_id})

        discs = 2 if size >= 12 and rng.random() < 0.1 else 1
        per_disc = -(-size // discs)
        for index in range(size):
            track_id = new_id()
            content_hash = f"{rng.getrandbits(256):064x}"
            status = rng.random()
            track_title = _title(rng)
            catalog.tracks.append(
                {
                    "id": track_id,
                    "album_id": album_id,
                    "title": track_title,
                    "title_key": catalog_service.name_key(track_title),
                    "duration_ms": rng.randint(90_000, 420_000),
                    "disc_number": 1 + index // per_disc,
                    "track_number": 1 + index % per_disc,
                    "isrc": f"{rng.choice(ISRC_COUNTRIES)}{rng.getrandbits(40):010X}"[:12]
                    if rng.random() < 0.85
                    else None,
                    "explicit": rng.random() < 0.1,
                    "musicbrainz_id": None,
                    "original_key": f"originals/{content_hash[:2]}/{content_hash}.flac",
                    "content_hash": content_hash,
                    "original_size": rng.randint(8_000_000, 60_000_000),
                    "codec": "flac",
                    "container": "flac",
                    "sample_rate": 44_100,
                    "channels": 2,
                    "bit_rate": rng.randint(700_000, 1_100_000),
                    "status": TrackStatus.ready
                    if status < 0.95
                    else (TrackStatus.processing if status < 0.98 else TrackStatus.failed),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            credited = list(primaries)
            if rng.random() < 0.15:
                featured = rng.choice(artist_ids)
                if featured not in credited:
                    credited.append(featured)
            for position, artist_id in enumerate(credited):
                catalog.track_artists.append(
                    {
                        "track_id": track_id,
                        "artist_id": artist_id,
                        "role": CreditRole.primary
                        if artist_id in primaries
                        else CreditRole.featured,
                        "position": position,
                    }
                )
            for genre_id in album_genres:
                catalog.track_genres.append({"track_id": track_id, "genre_id": genre_id})
        made += size
    return catalog


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def insert_catalog(connection: AsyncConnection, catalog: SyntheticCatalog) -> None:
    """Bulk-insert every row of the catalog (executemany through SQLAlchemy Core)."""
    for table, rows in catalog.tables():
        for chunk in _chunks(rows, CHUNK_ROWS):
            await connection.execute(table.insert(), list(chunk))


async def fill_synthetic_catalog(
    database_url: str,
    *,
    tracks: int = 100_000,
    artists: int = 8_000,
    seed: int = 20_261_124,
) -> list[uuid.UUID]:
    """Migrate the database, fill it with a synthetic catalog and return the album ids."""
    engine = create_engine(load_settings(database_url=database_url))
    try:
        await upgrade_database(engine)
        catalog = generate_catalog(tracks=tracks, artists=artists, seed=seed)
        async with engine.begin() as connection:
            await insert_catalog(connection, catalog)
    finally:
        await engine.dispose()
    return catalog.album_ids()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fill DATABASE_URL with a synthetic catalog and print what it took."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url", help="e.g. sqlite+aiosqlite:///var/bench.db")
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--artists", type=int, default=8_000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    album_ids = asyncio.run(
        fill_synthetic_catalog(args.database_url, tracks=args.tracks, artists=args.artists)
    )
    print(
        f"{len(album_ids)} albums, {args.tracks} tracks, {args.artists} artists "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

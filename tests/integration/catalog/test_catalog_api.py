"""The catalog read API, from the outside, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from encore.app import create_app
from encore.catalog import service as catalog_service
from encore.catalog.models import Album, AlbumType, CreditRole
from encore.catalog.service import CreditSpec, NewTrack
from encore.config import Settings
from tests.fixtures.oauth import asgi_client, service_token

PROBLEM = "application/problem+json"


def _new_track(title: str, number: int | None, *, disc: int = 1, **changes: object) -> NewTrack:
    digest = uuid.uuid4().hex * 2
    base = NewTrack(
        title=title,
        duration_ms=180_000 + (number or 0) * 1000,
        disc_number=disc,
        track_number=number,
        isrc=None,
        explicit=False,
        musicbrainz_id=None,
        original_key=f"originals/{digest[:2]}/{digest}.flac",
        content_hash=digest,
        original_size=1234,
        codec="flac",
        container="flac",
        sample_rate=44100,
        channels=2,
        bit_rate=None,
        artists=(CreditSpec("Daft Punk"),),
        genres=("Electronic",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@dataclass
class Catalog:
    """Ids of the small catalog the tests read."""

    album_id: uuid.UUID
    single_id: uuid.UUID
    undated_id: uuid.UUID
    artist_id: uuid.UUID
    guest_id: uuid.UUID
    track_ids: dict[str, uuid.UUID]


@pytest.fixture
async def catalog(db_session: AsyncSession) -> Catalog:
    """Two Daft Punk releases (one with a featured guest) and an undated album by someone else."""
    album = await catalog_service.get_or_create_album(
        db_session=db_session,
        title="Discovery",
        artists=[CreditSpec("Daft Punk")],
        release_date=date(2001, 3, 12),
        album_type=AlbumType.album,
    )
    tracks = {}
    # Added out of order on purpose: the API must sort by disc, then track number.
    for title, number, disc, extra in [
        ("Digital Love", 3, 1, {}),
        ("One More Time", 1, 1, {"explicit": True, "isrc": "GBDUW0000059"}),
        (
            "Aerodynamic",
            2,
            1,
            {
                "artists": (
                    CreditSpec("Daft Punk"),
                    CreditSpec("Romanthony", role=CreditRole.featured),
                )
            },
        ),
        ("Bonus Beat", 1, 2, {}),
    ]:
        track = await catalog_service.add_track(
            db_session=db_session, album=album, new=_new_track(title, number, disc=disc, **extra)
        )
        tracks[title] = track.id
    single = await catalog_service.get_or_create_album(
        db_session=db_session,
        title="Around the World",
        artists=[CreditSpec("Daft Punk")],
        release_date=date(1997, 3, 17),
        album_type=AlbumType.single,
    )
    await catalog_service.add_track(
        db_session=db_session, album=single, new=_new_track("Around the World", 1)
    )
    undated = await catalog_service.get_or_create_album(
        db_session=db_session,
        title="Homework Demos",
        artists=[CreditSpec("Björk")],
        release_date=None,
        album_type=AlbumType.ep,
    )
    await catalog_service.add_track(
        db_session=db_session,
        album=undated,
        new=_new_track("Untitled", None, artists=(CreditSpec("Björk"),), genres=("Art Pop",)),
    )
    await db_session.commit()
    artist = await catalog_service.get_or_create_artist(db_session=db_session, name="daft  punk")
    guest = await catalog_service.get_or_create_artist(db_session=db_session, name="Romanthony")
    return Catalog(
        album_id=album.id,
        single_id=single.id,
        undated_id=undated.id,
        artist_id=artist.id,
        guest_id=guest.id,
        track_ids=tracks,
    )


async def test_album_lists_artists_with_roles_and_tracks_in_disc_track_order(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    response = await client.get(f"/v1/albums/{catalog.album_id}")

    assert response.status_code == 200
    album = response.json()
    assert album["id"] == str(catalog.album_id)
    assert album["title"] == "Discovery"
    assert album["release_date"] == "2001-03-12"
    assert album["album_type"] == "album"
    assert album["artists"] == [
        {"id": str(catalog.artist_id), "name": "Daft Punk", "role": "primary"}
    ]
    assert album["genres"] == ["Electronic"]
    assert [(t["disc_number"], t["track_number"], t["title"]) for t in album["tracks"]] == [
        (1, 1, "One More Time"),
        (1, 2, "Aerodynamic"),
        (1, 3, "Digital Love"),
        (2, 1, "Bonus Beat"),
    ]
    assert all(t["status"] == "processing" for t in album["tracks"])
    assert album["total_tracks"] == 4
    assert album["duration_ms"] == sum(t["duration_ms"] for t in album["tracks"])
    aerodynamic = album["tracks"][1]
    assert aerodynamic["artists"] == [
        {"id": str(catalog.artist_id), "name": "Daft Punk", "role": "primary"},
        {"id": str(catalog.guest_id), "name": "Romanthony", "role": "featured"},
    ]
    assert album["tracks"][0]["explicit"] is True
    assert album["tracks"][0]["isrc"] == "GBDUW0000059"
    # Timestamps carry an explicit UTC offset on both backends (SQLite stores them naive).
    created = datetime.fromisoformat(album["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert album["artwork_url"] is None


async def test_track_shows_album_artists_genres_and_never_storage_internals(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    track_id = catalog.track_ids["Aerodynamic"]

    response = await client.get(f"/v1/tracks/{track_id}")

    assert response.status_code == 200
    track = response.json()
    assert track["title"] == "Aerodynamic"
    assert track["album"] == {
        "id": str(catalog.album_id),
        "title": "Discovery",
        "artwork_url": None,
    }
    assert [a["role"] for a in track["artists"]] == ["primary", "featured"]
    assert track["genres"] == ["Electronic"]
    assert track["status"] == "processing"
    for internal in ("original_key", "content_hash", "original_size"):
        assert internal not in track


async def test_artist_and_artist_albums_newest_first(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    artist = (await client.get(f"/v1/artists/{catalog.artist_id}")).json()
    assert artist["name"] == "Daft Punk"
    assert artist["sort_name"] == "daft punk"

    albums = (await client.get(f"/v1/artists/{catalog.artist_id}/albums")).json()
    assert [a["title"] for a in albums["items"]] == ["Discovery", "Around the World"]
    assert albums["next_cursor"] is None

    singles = await client.get(
        f"/v1/artists/{catalog.artist_id}/albums", params={"album_type": "single"}
    )
    assert [a["title"] for a in singles.json()["items"]] == ["Around the World"]


async def test_a_featured_guest_has_no_albums_of_their_own(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    response = await client.get(f"/v1/artists/{catalog.guest_id}/albums")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_new_releases_are_dated_albums_newest_first_one_page_at_a_time(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    first = (await client.get("/v1/browse/new-releases", params={"limit": 1})).json()
    assert [a["title"] for a in first["items"]] == ["Discovery"]
    assert first["items"][0]["artists"][0]["name"] == "Daft Punk"
    assert first["next_cursor"]

    second = (
        await client.get(
            "/v1/browse/new-releases", params={"limit": 1, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [a["title"] for a in second["items"]] == ["Around the World"]
    assert second["next_cursor"] is None


async def test_artists_paginate_alphabetically_by_sort_name(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    names: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, str | int] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/artists", params=params)).json()
        names += [a["name"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["Björk", "Daft Punk", "Romanthony"]


async def test_genres_are_listed_alphabetically(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    page = (await client.get("/v1/genres")).json()
    assert [g["name"] for g in page["items"]] == ["Art Pop", "Electronic"]
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "path",
    ["/v1/albums/{id}", "/v1/tracks/{id}", "/v1/artists/{id}", "/v1/artists/{id}/albums"],
)
async def test_unknown_id_is_a_404_problem(
    client: httpx.AsyncClient, catalog: Catalog, path: str
) -> None:
    response = await client.get(path.format(id=uuid.uuid4()))

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 404
    assert problem["title"] == "Not found"
    assert problem["type"].endswith("/not-found")
    assert "no " in problem["detail"]


@pytest.mark.parametrize(
    "path", ["/v1/albums/42", "/v1/tracks/not-a-uuid", "/v1/artists/'%20OR%201=1--"]
)
async def test_malformed_id_is_a_422_problem_naming_the_field(
    client: httpx.AsyncClient, catalog: Catalog, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert [e["field"] for e in problem["errors"]] == [f"path.{path.split('/')[2].rstrip('s')}_id"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"cursor": "eyJ4IjoxfQ"},  # valid base64 JSON of the wrong shape
        {"cursor": "x" * 600},
    ],
)
async def test_bad_paging_parameters_are_a_422_problem(
    client: httpx.AsyncClient, catalog: Catalog, params: dict[str, object]
) -> None:
    response = await client.get("/v1/browse/new-releases", params=params)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"]


async def test_forged_cursor_with_bad_values_is_a_422_not_a_crash(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    from encore.pagination import encode_cursor

    for forged in (
        {"release_date": "yesterday", "id": str(uuid.uuid4())},
        {"release_date": "2001-01-01", "id": "not-a-uuid"},
    ):
        response = await client.get(
            "/v1/browse/new-releases", params={"cursor": encode_cursor(forged)}
        )
        assert response.status_code == 422, forged
        assert response.headers["content-type"] == PROBLEM


async def test_album_without_artwork_has_a_404_artwork(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    response = await client.get(f"/v1/albums/{catalog.album_id}/artwork")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


async def test_writes_to_the_catalog_read_api_are_405_problems(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    response = await client.delete(f"/v1/albums/{catalog.album_id}")

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == "GET"
    assert (await client.get(f"/v1/albums/{catalog.album_id}")).status_code == 200


async def test_album_carries_an_etag_and_a_matching_if_none_match_is_a_304(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    first = await client.get(f"/v1/albums/{catalog.album_id}")
    etag = first.headers["etag"]

    again = await client.get(f"/v1/albums/{catalog.album_id}", headers={"If-None-Match": etag})
    other = await client.get(
        f"/v1/albums/{catalog.album_id}", headers={"If-None-Match": '"not-this-one"'}
    )

    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert other.status_code == 200
    assert other.json() == first.json()


async def _client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings)
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        http.headers["Authorization"] = f"Bearer {await service_token(application, http)}"
        yield http


async def _add_bonus_track(db_session: AsyncSession, album_id: uuid.UUID) -> None:
    album = await db_session.get(Album, album_id)
    assert album is not None
    await catalog_service.add_track(
        db_session=db_session, album=album, new=_new_track("Late Addition", 9)
    )
    await db_session.commit()


async def test_a_change_committed_elsewhere_shows_once_the_revision_is_rechecked(
    settings: Settings, db_session: AsyncSession, catalog: Catalog
) -> None:
    # Revalidating on every request: the app sees a write made through another engine at once.
    eager = settings.model_copy(update={"catalog_cache_revalidate_seconds": 0.0})
    async for http in _client_for(eager):
        before = await http.get(f"/v1/albums/{catalog.album_id}")
        await _add_bonus_track(db_session, catalog.album_id)
        after = await http.get(
            f"/v1/albums/{catalog.album_id}", headers={"If-None-Match": before.headers["etag"]}
        )

    assert before.json()["total_tracks"] == 4
    assert after.status_code == 200
    assert after.json()["total_tracks"] == 5
    assert after.headers["etag"] != before.headers["etag"]


async def test_rendered_albums_are_served_from_memory_between_revision_checks(
    settings: Settings, db_session: AsyncSession, catalog: Catalog
) -> None:
    lazy = settings.model_copy(update={"catalog_cache_revalidate_seconds": 3600.0})
    async for http in _client_for(lazy):
        before = await http.get(f"/v1/albums/{catalog.album_id}")
        await _add_bonus_track(db_session, catalog.album_id)
        cached = await http.get(f"/v1/albums/{catalog.album_id}")

    assert cached.json() == before.json()
    assert cached.headers["etag"] == before.headers["etag"]


async def test_with_the_cache_off_every_read_is_fresh(
    settings: Settings, db_session: AsyncSession, catalog: Catalog
) -> None:
    uncached = settings.model_copy(
        update={"catalog_cache_entries": 0, "catalog_cache_revalidate_seconds": 3600.0}
    )
    async for http in _client_for(uncached):
        await http.get(f"/v1/albums/{catalog.album_id}")
        await _add_bonus_track(db_session, catalog.album_id)
        after = await http.get(f"/v1/albums/{catalog.album_id}")

    assert after.json()["total_tracks"] == 5

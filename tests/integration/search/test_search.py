"""Search from the outside: the same examples on SQLite (FTS5) and PostgreSQL (pg_trgm)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, insert, update

from encore.catalog import service as catalog_service
from encore.catalog.models import Album, AlbumType, Artist, Track, TrackArtist, TrackStatus
from encore.db import new_id, utcnow
from encore.search import service as search_service
from encore.search.models import SearchKind
from tests.fixtures.library import PROBLEM, SmallCatalog, add_releases, listener
from tests.fixtures.oauth import asgi_client, resources_of

RELEASES = [
    ("The Beatles", "Abbey Road", ["Come Together", "Something", "Here Comes the Sun"]),
    ("Nirvana", "Nevermind", ["Smells Like Teen Spirit", "Come as You Are"]),
    ("Björk", "Homogenic", ["Jóga", "Bachelorette"]),
    ("Motörhead", "Ace of Spades", ["Ace of Spades"]),
    ("Radiohead", "OK Computer", ["Paranoid Android", "Karma Police"]),
    ("Daft Punk", "Homework", ["Around the World", "Da Funk"]),
    ("The Bee Gees", "Spirits Having Flown", ["Tragedy"]),
    ("Nina Simone", "Pastel Blues", ["Sinnerman"]),
    ("Radio Birdman", "Radios Appear", ["Aloha Steve and Danno"]),
    ("Björn Again", "Live", ["Waterloo"]),
]


@pytest.fixture
async def catalog(app: FastAPI) -> SmallCatalog:
    """A handful of well-known releases with accents, articles and near-namesakes."""
    return await add_releases(app, RELEASES)


async def _search(client: httpx.AsyncClient, q: str, kinds: str, **params: Any) -> Any:
    response = await client.get("/v1/search", params={"q": q, "type": kinds, **params})
    assert response.status_code == 200, response.text
    return response.json()


def _names(page: dict[str, Any]) -> list[str]:
    return [item.get("name") or item.get("title") for item in page["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("beatels", "The Beatles"),
        ("nirvna", "Nirvana"),
        ("bjork", "Björk"),
        ("BJÖRK", "Björk"),
        ("motorhead", "Motörhead"),
        ("radioh", "Radiohead"),
        ("the beatles", "The Beatles"),
        ("Radiohed", "Radiohead"),
        ("daft", "Daft Punk"),
    ],
)
async def test_artist_examples(
    client: httpx.AsyncClient, catalog: SmallCatalog, query: str, expected: str
) -> None:
    results = await _search(client, query, "artist")
    assert _names(results["artists"])[0] == expected, results
    assert results["tracks"] is None and results["albums"] is None


async def test_multi_word_queries_match_across_fields(
    client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    results = await _search(client, "daft punk around", "track,album,artist")
    assert _names(results["tracks"])[0] == "Around the World"
    assert results["tracks"]["items"][0]["artists"][0]["name"] == "Daft Punk"
    assert _names(results["artists"]) == ["Daft Punk"] or results["artists"]["items"] == []
    typo = await _search(client, "daft pnuk arond", "track")
    assert _names(typo["tracks"])[0] == "Around the World"
    album = await _search(client, "nevermnd nirvana", "album")
    assert _names(album["albums"])[0] == "Nevermind"


async def test_search_as_you_type(client: httpx.AsyncClient, catalog: SmallCatalog) -> None:
    for typed in ["r", "ra", "rad", "radi", "radio", "radioh", "radiohe"]:
        results = await _search(client, typed, "artist")
        names = _names(results["artists"])
        if len(typed) >= 2:
            assert "Radiohead" in names, (typed, names)
    exact = await _search(client, "radio birdman", "artist")
    assert _names(exact["artists"])[0] == "Radio Birdman"


async def test_relevance_then_popularity(
    app: FastAPI, client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    first = await _search(client, "come", "track")
    assert set(_names(first["tracks"])[:2]) == {"Come Together", "Come as You Are"}
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            update(Track)
            .where(Track.id == catalog.tracks["Come as You Are"])
            .values(stream_count=1000)
        )
        await db_session.commit()
    ranked = await _search(client, "come", "track")
    assert _names(ranked["tracks"])[:2] == ["Come as You Are", "Come Together"]
    # Relevance still comes first: an exact title beats a popular near match.
    exact = await _search(client, "come together", "track")
    assert _names(exact["tracks"])[0] == "Come Together"


async def test_popularity_orders_ties_of_every_kind_in_one_search(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    made = await add_releases(
        app,
        [("Echo North", "Echo Red", ["Echo Fox"]), ("Echo South", "Echo Tan", ["Echo Owl"])],
    )

    async def streams(track: dict[str, int], artist: dict[str, int]) -> dict[str, list[str]]:
        async with resources_of(app).session_factory() as db_session:
            for title, count in track.items():
                await db_session.execute(
                    update(Track).where(Track.id == made.tracks[title]).values(stream_count=count)
                )
            for name, count in artist.items():
                await db_session.execute(
                    update(Artist).where(Artist.id == made.artists[name]).values(stream_count=count)
                )
            await db_session.commit()
        found = await _search(client, "echo", "track,album,artist")
        return {kind: _names(found[kind]) for kind in ("tracks", "albums", "artists")}

    # An album's popularity is its tracks' streams.
    assert await streams({"Echo Fox": 5, "Echo Owl": 9}, {"Echo North": 1, "Echo South": 7}) == {
        "tracks": ["Echo Owl", "Echo Fox"],
        "albums": ["Echo Tan", "Echo Red"],
        "artists": ["Echo South", "Echo North"],
    }
    assert await streams({"Echo Fox": 20}, {"Echo North": 8}) == {
        "tracks": ["Echo Fox", "Echo Owl"],
        "albums": ["Echo Red", "Echo Tan"],
        "artists": ["Echo North", "Echo South"],
    }


async def test_pages_through_results_with_a_cursor(
    client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    first = await _search(client, "come", "track", limit=1)
    assert len(first["tracks"]["items"]) == 1
    cursor = first["tracks"]["next_cursor"]
    assert cursor is not None
    second = await _search(client, "come", "track", limit=1, cursor=cursor)
    assert _names(second["tracks"]) != _names(first["tracks"])


@pytest.mark.parametrize(
    "query",
    [
        '"',
        "'",
        '""""',
        "AND",
        "OR NOT",
        "NEAR(a b)",
        "title:beatles",
        "{doc}: x",
        "beat*",
        "^the",
        "%",
        "_",
        "%_%",
        "\\",
        "a\\%b",
        "'; DROP TABLE tracks; --",
        "🎸🥁",
        "björk 🎵",
        "nul\x00byte",
        "\x01\x02\x7f",
        " ",
        "x" * 200,
        "ab " * 60,
        "( ) [ ] - + ~ * :",
    ],
)
async def test_any_characters_are_safe(
    client: httpx.AsyncClient, catalog: SmallCatalog, query: str
) -> None:
    response = await client.get("/v1/search", params={"q": query})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"tracks", "albums", "artists", "playlists"}


async def test_accented_and_odd_names_are_found_by_their_characters(
    client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    joga = await _search(client, "joga", "track")
    assert _names(joga["tracks"])[0] == "Jóga"


@pytest.mark.parametrize(
    "params",
    [
        {"q": ""},
        {"q": "x" * 201},
        {"q": "beatles", "type": "song"},
        {"q": "beatles", "limit": 0},
        {"q": "beatles", "limit": 51},
        {"q": "beatles", "cursor": "garbage"},
        {},
    ],
)
async def test_bad_searches_are_problems(
    client: httpx.AsyncClient, catalog: SmallCatalog, params: dict[str, Any]
) -> None:
    response = await client.get("/v1/search", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_search_needs_a_token(anonymous_client: httpx.AsyncClient) -> None:
    response = await anonymous_client.get("/v1/search", params={"q": "beatles"})
    assert response.status_code == 401


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client."""
    async with asgi_client(app) as client:
        yield client


async def test_playlists_public_ones_and_your_own(
    app: FastAPI, http: httpx.AsyncClient, client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    ada = await listener(app, "ada")
    bob = await listener(app, "bob")
    for name, public in [("Summer Hits", True), ("Summer Secrets", False)]:
        created = await http.post(
            "/v1/me/playlists", json={"name": name, "public": public}, headers=ada.headers
        )
        assert created.status_code == 201

    async def found(headers: dict[str, str] | None) -> list[str]:
        target = http if headers else client
        response = await target.get(
            "/v1/search", params={"q": "sumer", "type": "playlist"}, headers=headers or {}
        )
        return sorted(_names(response.json()["playlists"]))

    assert await found(ada.headers) == ["Summer Hits", "Summer Secrets"]
    assert await found(bob.headers) == ["Summer Hits"]
    assert await found(None) == ["Summer Hits"]


async def test_the_index_follows_catalog_writes_of_every_kind(
    app: FastAPI, client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    # A bulk Core insert (as the benchmarks' synthetic catalog does), bypassing the ORM.
    artist_id, album_id, track_id = new_id(), new_id(), new_id()
    now = utcnow()
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            insert(Artist),
            [
                {
                    "id": artist_id,
                    "name": "Sigur Rós",
                    "name_key": catalog_service.name_key("Sigur Rós"),
                    "sort_name": "sigur ros",
                    "created_at": now,
                }
            ],
        )
        await db_session.execute(
            insert(Album),
            [
                {
                    "id": album_id,
                    "title": "Ágætis byrjun",
                    "title_key": catalog_service.name_key("Ágætis byrjun"),
                    "album_type": AlbumType.album,
                    "created_at": now,
                }
            ],
        )
        await db_session.execute(
            insert(Track),
            [
                {
                    "id": track_id,
                    "album_id": album_id,
                    "title": "Svefn-g-englar",
                    "title_key": catalog_service.name_key("Svefn-g-englar"),
                    "duration_ms": 1000,
                    "disc_number": 1,
                    "explicit": False,
                    "original_key": "originals/x.flac",
                    "content_hash": uuid.uuid4().hex,
                    "original_size": 1,
                    "codec": "flac",
                    "container": "flac",
                    "sample_rate": 44_100,
                    "channels": 2,
                    "status": TrackStatus.ready,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        await db_session.execute(
            insert(TrackArtist),
            [{"track_id": track_id, "artist_id": artist_id, "role": "primary", "position": 0}],
        )
        await db_session.commit()
    results = await _search(client, "sigur ros svefn", "track")
    assert _names(results["tracks"]) == ["Svefn-g-englar"]
    assert _names((await _search(client, "agatis byrjun", "album"))["albums"]) == ["Ágætis byrjun"]

    # Renames reach the documents of the artist, and of its tracks.
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            update(Artist)
            .where(Artist.id == artist_id)
            .values(name="Jónsi", name_key=catalog_service.name_key("Jónsi"))
        )
        await db_session.commit()
    assert _names((await _search(client, "jonsi", "artist"))["artists"]) == ["Jónsi"]
    assert _names((await _search(client, "jonsi svefn", "track"))["tracks"]) == ["Svefn-g-englar"]
    assert (await _search(client, "sigur ros svefn", "track"))["tracks"]["items"] == []

    # Deleting the album takes its tracks out of search.
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(delete(Album).where(Album.id == album_id))
        await db_session.commit()
    assert (await _search(client, "svefn", "track"))["tracks"]["items"] == []
    assert (await _search(client, "byrjun", "album"))["albums"]["items"] == []


async def test_corrections_follow_writes_made_elsewhere(
    app: FastAPI,
    client: httpx.AsyncClient,
    catalog: SmallCatalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The vocabulary is reloaded when the documents' counter moved; no second's wait here.
    monkeypatch.setattr(search_service, "VOCABULARY_RELOAD_SECONDS", 0.0)
    # Only a correction finds "sigur" from "sigr" (one word: no word can be left out).
    assert (await _search(client, "sigr", "artist"))["artists"]["items"] == []
    # A bulk Core insert, as another process or a bulk load makes: only the triggers see it.
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            insert(Artist),
            [
                {
                    "id": new_id(),
                    "name": "Sigur Rós",
                    "name_key": catalog_service.name_key("Sigur Rós"),
                    "sort_name": "sigur ros",
                    "created_at": utcnow(),
                }
            ],
        )
        await db_session.commit()
    # The search that notices the change goes on with the vocabulary it has (it never waits
    # for a reload) and has it reloaded in the background; later ones correct against the
    # new words.
    assert (await _search(client, "sigr", "artist"))["artists"]["items"] == []
    async with resources_of(app).session_factory() as db_session:
        await search_service.settle_vocabulary(db_session=db_session)
    assert _names((await _search(client, "sigr", "artist"))["artists"]) == ["Sigur Rós"]
    assert _names((await _search(client, "sigr ros", "artist"))["artists"]) == ["Sigur Rós"]


async def test_words_keep_their_punctuation_whole_and_as_a_start(
    app: FastAPI, client: httpx.AsyncClient, catalog: SmallCatalog
) -> None:
    await add_releases(
        app,
        [
            ("AC/DC", "Back in Black", ["Hells Bells"]),
            ("Guns N' Roses", "G N' R Lies", ["Patience"]),
        ],
    )
    for query in ("ac/dc", "AC/DC ", "ac/", "guns n' roses", "guns n'"):
        names = _names((await _search(client, query, "artist"))["artists"])
        assert names and names[0] in {"AC/DC", "Guns N' Roses"}, (query, names)
    # A word is what lies between spaces: "ac" starts "ac/dc", "dc" starts no word of it.
    assert _names((await _search(client, "ac", "artist"))["artists"]) == ["AC/DC"]
    assert (await _search(client, "dc ", "artist"))["artists"]["items"] == []


async def test_the_word_index_drops_the_words_of_renamed_and_deleted_documents(
    app: FastAPI, catalog: SmallCatalog
) -> None:
    async with resources_of(app).session_factory() as db_session:
        before = await search_service.load_vocabulary(db_session=db_session)
        await db_session.execute(
            update(Artist)
            .where(Artist.id == catalog.artists["Nina Simone"])
            .values(name="Eunice Waymon", name_key=catalog_service.name_key("Eunice Waymon"))
        )
        await db_session.execute(delete(Track).where(Track.id == catalog.tracks["Sinnerman"]))
        await db_session.commit()
        after = await search_service.load_vocabulary(db_session=db_session)
    assert before.frequencies["artist"]["simone"] == 1
    assert "simone" not in after.frequencies["artist"]
    assert after.frequencies["artist"]["waymon"] == 1
    # The album's document names its artist: renamed there too, by the catalog triggers.
    assert after.frequencies["album"]["waymon"] == 1
    assert "simone" not in after.frequencies["album"]
    assert before.frequencies["track"]["sinnerman"] == 1
    assert "sinnerman" not in after.frequencies["track"]
    assert after.documents["track"] == before.documents["track"] - 1


async def test_one_search_over_several_kinds_ranks_each_kind_as_alone(
    app: FastAPI, catalog: SmallCatalog
) -> None:
    kinds = [SearchKind.track, SearchKind.album, SearchKind.artist]
    async with resources_of(app).session_factory() as db_session:
        for raw in ("daft pnuk arond", "come", "nevermnd", "radioh", "zzzz"):
            query = search_service.parse_query(raw)
            together = await search_service.search(
                db_session=db_session, query=query, kinds=kinds, offset=0, limit=5, viewer_id=None
            )
            for kind in kinds:
                alone = await search_service.search_kind(
                    db_session=db_session, query=query, kind=kind, offset=0, limit=5, viewer_id=None
                )
                assert together[kind] == alone, (raw, kind)
        # Each kind goes on to corrections on its own: "daft pnuk arond" is a track as
        # corrected, and an artist with one word left out.
        found = await search_service.search(
            db_session=db_session,
            query=search_service.parse_query("daft pnuk arond"),
            kinds=kinds,
            offset=0,
            limit=5,
            viewer_id=None,
        )
    assert [hit.entity_id for hit in found[SearchKind.track][0]][:1] == [
        catalog.tracks["Around the World"]
    ]
    assert [hit.entity_id for hit in found[SearchKind.artist][0]][:1] == [
        catalog.artists["Daft Punk"]
    ]


async def test_words_newer_than_the_vocabulary_are_found_as_typed(
    client: httpx.AsyncClient,
    app: FastAPI,
    catalog: SmallCatalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The vocabulary says no document has the word; the documents are asked all the same.
    monkeypatch.setattr(search_service, "VOCABULARY_RELOAD_SECONDS", 3_600.0)
    assert (await _search(client, "sigur", "artist"))["artists"]["items"] == []
    await add_releases(app, [("Sigur Rós", "Takk", ["Hoppípolla"])])
    assert _names((await _search(client, "sigur", "artist"))["artists"]) == ["Sigur Rós"]
    assert _names((await _search(client, "sigur ros hopp", "track"))["tracks"]) == ["Hoppípolla"]

"""read_tags on synthesized, tagged files of every format, and the parsing rules."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from encore.media.synthesis import (
    AudioFormat,
    TagSpec,
    Tone,
    make_cover_art,
    synthesize_audio,
    write_tagged_track,
    write_tags,
)
from encore.media.tags import (
    MAX_ARTISTS,
    MAX_TEXT_CHARS,
    ArtistTag,
    TrackTags,
    UnreadableTags,
    parse_artist_credits,
    parse_date,
    parse_position,
    read_tags,
)

RECORDING = str(uuid.UUID("b1a9c0e9-d987-4042-ae91-78d6a3267d69"))
RELEASE = str(uuid.UUID("48140466-cff6-3222-bd55-63c27e43190d"))
ARTIST_IDS = (
    str(uuid.UUID("056e4f3e-d505-4dad-8ec1-d04f521cbb56")),
    str(uuid.UUID("5b11f4ce-a62d-471e-81fc-a69a8278c7da")),
)


@pytest.fixture(scope="module")
def cover() -> bytes:
    """A small JPEG cover."""
    return make_cover_art("Discovery", size=120)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[AudioFormat, bytes]:
    """Untagged audio bytes per format (each test tags a copy)."""
    folder = tmp_path_factory.mktemp("tags")
    return {
        audio_format: synthesize_audio(
            folder / f"tone.{audio_format.value}", Tone(seconds=0.5)
        ).read_bytes()
        for audio_format in AudioFormat
    }


def _tagged(
    tmp_path: Path, recordings: dict[AudioFormat, bytes], audio_format: AudioFormat, tags: TagSpec
) -> Path:
    path = tmp_path / f"track.{audio_format.value}"
    path.write_bytes(recordings[audio_format])
    write_tags(path, tags)
    return path


@pytest.mark.parametrize("audio_format", list(AudioFormat), ids=str)
def test_every_tag_round_trips(
    tmp_path: Path, recordings: dict[AudioFormat, bytes], cover: bytes, audio_format: AudioFormat
) -> None:
    spec = TagSpec(
        title="Harder, Better, Faster, Stronger",
        artists=("Daft Punk", "Romanthony"),
        album_artists=("Daft Punk",),
        album="Discovery",
        track_number=4,
        track_total=14,
        disc_number=1,
        disc_total=2,
        date="2001-03-12",
        genres=("Electronic", "House"),
        isrc="GB-DUW-01-00063",
        compilation=True,
        release_type="album",
        explicit=True,
        musicbrainz_recording_id=RECORDING,
        musicbrainz_album_id=RELEASE,
        musicbrainz_artist_ids=ARTIST_IDS,
        musicbrainz_album_artist_ids=ARTIST_IDS[:1],
        cover=cover,
    )
    tags = read_tags(_tagged(tmp_path, recordings, audio_format, spec))

    assert tags.title == "Harder, Better, Faster, Stronger"
    assert tags.artists == (
        ArtistTag("Daft Punk", musicbrainz_id=uuid.UUID(ARTIST_IDS[0])),
        ArtistTag("Romanthony", musicbrainz_id=uuid.UUID(ARTIST_IDS[1])),
    )
    assert tags.album_artists == (ArtistTag("Daft Punk", musicbrainz_id=uuid.UUID(ARTIST_IDS[0])),)
    assert tags.album == "Discovery"
    assert (tags.track_number, tags.track_total) == (4, 14)
    assert (tags.disc_number, tags.disc_total) == (1, 2)
    assert tags.release_date == date(2001, 3, 12)
    assert tags.genres == ("Electronic", "House")
    assert tags.isrc == "GBDUW0100063"
    assert tags.compilation is True
    assert tags.release_type == "album"
    assert tags.explicit is True
    assert tags.musicbrainz_recording_id == uuid.UUID(RECORDING)
    assert tags.musicbrainz_album_id == uuid.UUID(RELEASE)
    assert tags.artwork == cover


@pytest.mark.parametrize("audio_format", list(AudioFormat), ids=str)
def test_untagged_file_has_empty_tags(
    tmp_path: Path, recordings: dict[AudioFormat, bytes], audio_format: AudioFormat
) -> None:
    path = tmp_path / f"bare.{audio_format.value}"
    path.write_bytes(recordings[audio_format])

    assert read_tags(path) == TrackTags()


def test_featured_artists_from_the_artist_string(
    tmp_path: Path, recordings: dict[AudioFormat, bytes]
) -> None:
    spec = TagSpec(title="Tidewater (feat. Mara Quill)", artists=("The Copper Lanterns ft. Ola",))
    tags = read_tags(_tagged(tmp_path, recordings, AudioFormat.mp3, spec))

    assert tags.artists == (
        ArtistTag("The Copper Lanterns"),
        ArtistTag("Ola", featured=True),
        ArtistTag("Mara Quill", featured=True),
    )


def test_picard_artists_tag_with_a_display_string(
    tmp_path: Path, recordings: dict[AudioFormat, bytes]
) -> None:
    path = _tagged(tmp_path, recordings, AudioFormat.flac, TagSpec(title="x"))
    from mutagen.flac import FLAC

    audio = FLAC(path)
    audio["artist"] = "Simon & Garfunkel feat. Paul Desmond & Friends"
    audio["artists"] = ["Simon & Garfunkel", "Paul Desmond & Friends"]
    audio.save()

    assert read_tags(path).artists == (
        ArtistTag("Simon & Garfunkel"),
        ArtistTag("Paul Desmond & Friends", featured=True),
    )


def test_title_is_truncated_and_artists_are_capped(
    tmp_path: Path, recordings: dict[AudioFormat, bytes]
) -> None:
    many = tuple(f"Artist {n}" for n in range(MAX_ARTISTS + 15))
    spec = TagSpec(title="la " * 400, artists=many, album="b" * 900)
    tags = read_tags(_tagged(tmp_path, recordings, AudioFormat.ogg, spec))

    assert tags.title is not None and len(tags.title) <= MAX_TEXT_CHARS
    assert tags.album == "b" * MAX_TEXT_CHARS
    assert [a.name for a in tags.artists] == list(many[:MAX_ARTISTS])


def test_oversized_artwork_is_ignored(tmp_path: Path, recordings: dict[AudioFormat, bytes]) -> None:
    huge = b"\xff\xd8\xff\xe0" + bytes(10 * 1024 * 1024)
    tags = read_tags(_tagged(tmp_path, recordings, AudioFormat.flac, TagSpec(cover=huge)))

    assert tags.artwork is None


def test_front_cover_is_preferred(tmp_path: Path, recordings: dict[AudioFormat, bytes]) -> None:
    from mutagen.flac import FLAC, Picture

    path = _tagged(tmp_path, recordings, AudioFormat.flac, TagSpec(title="x"))
    audio = FLAC(path)
    for kind, data in ((4, b"back"), (3, b"front")):
        picture = Picture()
        picture.type, picture.mime, picture.data = kind, "image/jpeg", data
        audio.add_picture(picture)
    audio.save()

    assert read_tags(path).artwork == b"front"


def test_malformed_values_are_dropped(tmp_path: Path, recordings: dict[AudioFormat, bytes]) -> None:
    path = _tagged(tmp_path, recordings, AudioFormat.flac, TagSpec(title="x"))
    from mutagen.flac import FLAC

    audio = FLAC(path)
    audio["tracknumber"] = "A1"
    audio["date"] = "sometime in the 90s"
    audio["isrc"] = "not-an-isrc-code"
    audio["musicbrainz_trackid"] = "not-a-uuid"
    audio["releasetype"] = "bootleg"
    audio.save()

    tags = read_tags(path)
    assert (tags.track_number, tags.release_date, tags.isrc) == (None, None, None)
    assert (tags.musicbrainz_recording_id, tags.release_type) == (None, None)


def test_damaged_file_raises_unreadable_tags(tmp_path: Path) -> None:
    path = tmp_path / "damaged.flac"
    path.write_bytes(b"fLaC" + b"\xff" * 64)

    with pytest.raises(UnreadableTags):
        read_tags(path)


def test_write_tagged_track_makes_a_playable_tagged_file(tmp_path: Path) -> None:
    path = write_tagged_track(
        tmp_path / "song.m4a", Tone(seconds=0.5), TagSpec(title="Song", artists=("Band",))
    )

    tags = read_tags(path)
    assert (tags.title, tags.artists) == ("Song", (ArtistTag("Band"),))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", (3, None)),
        ("03", (3, None)),
        ("3/12", (3, 12)),
        (" 3 / 12 ", (3, 12)),
        ("3 of 12", (3, 12)),
        ("0", (None, None)),
        ("A1", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_parse_position(value: str | None, expected: tuple[int | None, int | None]) -> None:
    assert parse_position(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2019", date(2019, 1, 1)),
        ("2019-05", date(2019, 5, 1)),
        ("2019-05-03", date(2019, 5, 3)),
        ("2019-05-03T10:11:12", date(2019, 5, 3)),
        ("2019-13-45", date(2019, 1, 1)),
        ("0000", None),
        ("May 2019", None),
        (None, None),
    ],
)
def test_parse_date(value: str | None, expected: date | None) -> None:
    assert parse_date(value) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Simon & Garfunkel"], [("Simon & Garfunkel", False)]),
        (["Earth, Wind & Fire"], [("Earth, Wind & Fire", False)]),
        (["AC/DC"], [("AC/DC", False)]),
        (["Daft Punk; Pharrell Williams"], [("Daft Punk", False), ("Pharrell Williams", False)]),
        (["A", "B"], [("A", False), ("B", False)]),
        (["A feat. B"], [("A", False), ("B", True)]),
        (["A Feat. B; C"], [("A", False), ("B", True), ("C", True)]),
        (["A ft. B"], [("A", False), ("B", True)]),
        (["A featuring B"], [("A", False), ("B", True)]),
        (["A (feat. B)"], [("A", False), ("B", True)]),
        (["A [ft. B]"], [("A", False), ("B", True)]),
        (["A feat. A"], [("A", False)]),
        ([" ", ""], []),
    ],
)
def test_parse_artist_credits(values: list[str], expected: list[tuple[str, bool]]) -> None:
    credits = parse_artist_credits(values)

    assert [(c.name, c.featured) for c in credits] == expected

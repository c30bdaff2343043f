"""Read the tags of an audio file with mutagen: ID3 (mp3, wav, aac), Vorbis comments (flac, ogg,
opus) and MP4 atoms (m4a), into one format-neutral `TrackTags`.

Tags are written by many programs with many habits, so everything is parsed leniently and
bounded: titles and names are truncated, artists and genres capped, artwork size-checked,
and values that do not parse (a track number "A1", an ISRC of the wrong shape, a malformed
MusicBrainz id) are dropped rather than trusted.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import mutagen
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, ID3NoHeaderError
from mutagen.mp4 import MP4Tags

__all__ = [
    "MAX_ARTISTS",
    "MAX_EMBEDDED_ARTWORK_BYTES",
    "MAX_GENRES",
    "MAX_TEXT_CHARS",
    "ArtistTag",
    "TrackTags",
    "UnreadableTags",
    "parse_artist_credits",
    "parse_date",
    "parse_position",
    "read_tags",
]

MAX_TEXT_CHARS = 500
"""Longest title, album or artist name kept; longer values are truncated."""

MAX_ARTISTS = 20
"""Most artists credited on one track or album."""

MAX_GENRES = 10
MAX_GENRE_CHARS = 100

MAX_EMBEDDED_ARTWORK_BYTES = 10 * 1024 * 1024
"""Embedded pictures larger than this are ignored."""

# "A feat. B", "A ft. B", "A featuring B", and the same in parentheses or brackets.
_FEATURING = re.compile(r"\s+(?:feat\.?|ft\.|featuring)\s+", re.IGNORECASE)
_FEATURING_BRACKETED = re.compile(
    r"\s*[\(\[](?:feat\.?|ft\.|featuring)\s+(?P<names>[^\)\]]+)[\)\]]", re.IGNORECASE
)
# Only "; " separates several artists in one value: "&", "and", "," and "/" are part of too
# many real names (Simon & Garfunkel, Earth, Wind & Fire, AC/DC) to split on.
_ARTIST_SEPARATOR = re.compile(r"\s*;\s+|\x00")
_POSITION = re.compile(r"^\s*(\d{1,4})\s*(?:(?:/|of)\s*(\d{1,4}))?", re.IGNORECASE)
_DATE = re.compile(r"^\s*(\d{4})(?:[-./](\d{1,2})(?:[-./](\d{1,2}))?)?")
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}\d{7}$")
_TRUE = frozenset({"1", "true", "yes", "y"})
_RELEASE_TYPES = ("album", "single", "ep", "compilation")

# Keys of the MusicBrainz Picard tag mapping, per tag format.
_ID3_TXXX = {
    "album_id": "MusicBrainz Album Id",
    "artist_ids": "MusicBrainz Artist Id",
    "album_artist_ids": "MusicBrainz Album Artist Id",
    "release_type": "MusicBrainz Album Type",
    "artists": "ARTISTS",
    "advisory": "ITUNESADVISORY",
}
_MP4_FREEFORM = "----:com.apple.iTunes:"


# mutagen's parsers are not hardened against every malformed structure: besides its own
# errors, damaged tags raise these.
_PARSE_ERRORS = (
    mutagen.MutagenError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    EOFError,
    UnicodeError,
    struct.error,
)
_ID3: Any = ID3  # untyped constructor


class UnreadableTags(Exception):
    """mutagen could not parse the file's tags; `str()` says why."""


@dataclass(frozen=True, slots=True)
class ArtistTag:
    """One credited artist: a name, whether featured, and a MusicBrainz id when tagged."""

    name: str
    featured: bool = False
    musicbrainz_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class TrackTags:
    """What an audio file's tags say about it; every field may be missing."""

    title: str | None = None
    artists: tuple[ArtistTag, ...] = ()
    album_artists: tuple[ArtistTag, ...] = ()
    album: str | None = None
    track_number: int | None = None
    track_total: int | None = None
    disc_number: int | None = None
    disc_total: int | None = None
    release_date: date | None = None
    genres: tuple[str, ...] = ()
    isrc: str | None = None
    compilation: bool = False
    release_type: str | None = None
    explicit: bool = False
    musicbrainz_recording_id: uuid.UUID | None = None
    musicbrainz_album_id: uuid.UUID | None = None
    artwork: bytes | None = field(default=None, repr=False)


@dataclass
class _RawTags:
    """Tag values as lists of strings, before parsing; one shape for every tag format."""

    title: list[str] = field(default_factory=list)
    artist: list[str] = field(default_factory=list)
    artists: list[str] = field(default_factory=list)
    album_artist: list[str] = field(default_factory=list)
    album: list[str] = field(default_factory=list)
    track: list[str] = field(default_factory=list)
    track_total: list[str] = field(default_factory=list)
    disc: list[str] = field(default_factory=list)
    disc_total: list[str] = field(default_factory=list)
    date: list[str] = field(default_factory=list)
    genre: list[str] = field(default_factory=list)
    isrc: list[str] = field(default_factory=list)
    compilation: list[str] = field(default_factory=list)
    release_type: list[str] = field(default_factory=list)
    advisory: list[str] = field(default_factory=list)
    recording_id: list[str] = field(default_factory=list)
    album_id: list[str] = field(default_factory=list)
    artist_ids: list[str] = field(default_factory=list)
    album_artist_ids: list[str] = field(default_factory=list)
    pictures: list[tuple[int, bytes]] = field(default_factory=list)  # (picture type, data)


def _texts(values: Iterable[Any]) -> list[str]:
    texts = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        for part in str(value).split("\x00"):
            part = part.strip()
            if part:
                texts.append(part)
    return texts


def _truncate(text: str) -> str:
    return " ".join(text.split())[:MAX_TEXT_CHARS].strip()


# ---------------------------------------------------------------------------------------------
# Format-specific readers


def _read_id3(tags: Any) -> _RawTags:
    # mutagen's ID3 methods are untyped; Any keeps that from spreading through this module.
    raw = _RawTags()

    def frame_texts(frame_id: str) -> list[str]:
        return _texts(text for frame in tags.getall(frame_id) for text in frame.text)

    raw.title = frame_texts("TIT2")
    raw.artist = frame_texts("TPE1")
    raw.album_artist = frame_texts("TPE2")
    raw.album = frame_texts("TALB")
    raw.track = frame_texts("TRCK")
    raw.disc = frame_texts("TPOS")
    raw.date = frame_texts("TDRC") or frame_texts("TDOR") or frame_texts("TYER")
    raw.genre = _texts(genre for frame in tags.getall("TCON") for genre in frame.genres)
    raw.isrc = frame_texts("TSRC")
    raw.compilation = frame_texts("TCMP")
    by_description: dict[str, list[str]] = {}
    for frame in tags.getall("TXXX"):
        by_description.setdefault(frame.desc.casefold(), []).extend(_texts(frame.text))
    for attribute, description in _ID3_TXXX.items():
        setattr(raw, attribute, by_description.get(description.casefold(), []))
    for frame in tags.getall("UFID"):
        if frame.owner == "http://musicbrainz.org":
            raw.recording_id = _texts([frame.data])
    raw.pictures = [(int(frame.type), bytes(frame.data)) for frame in tags.getall("APIC")]
    return raw


def _read_vorbis(tags: Any, pictures: Sequence[Picture]) -> _RawTags:
    raw = _RawTags()

    def values(*keys: str) -> list[str]:
        for key in keys:
            found = _texts(tags.get(key, []))
            if found:
                return found
        return []

    raw.title = values("title")
    raw.artist = values("artist")
    raw.artists = values("artists")
    raw.album_artist = values("albumartist", "album artist", "album_artist")
    raw.album = values("album")
    raw.track = values("tracknumber")
    raw.track_total = values("tracktotal", "totaltracks")
    raw.disc = values("discnumber")
    raw.disc_total = values("disctotal", "totaldiscs")
    raw.date = values("date", "originaldate", "year")
    raw.genre = values("genre")
    raw.isrc = values("isrc")
    raw.compilation = values("compilation")
    raw.release_type = values("releasetype", "musicbrainz_albumtype")
    raw.advisory = values("itunesadvisory")
    raw.recording_id = values("musicbrainz_trackid")
    raw.album_id = values("musicbrainz_albumid")
    raw.artist_ids = values("musicbrainz_artistid")
    raw.album_artist_ids = values("musicbrainz_albumartistid")
    raw.pictures = [(int(picture.type), bytes(picture.data)) for picture in pictures]
    # Ogg files carry pictures as base64 FLAC picture blocks inside a comment.
    for encoded in tags.get("metadata_block_picture", []):
        try:
            picture = Picture(base64.b64decode(encoded, validate=False))  # type: ignore[no-untyped-call]
        except (ValueError, mutagen.MutagenError, TypeError):
            continue
        raw.pictures.append((int(picture.type), bytes(picture.data)))
    return raw


def _read_mp4(tags: Any) -> _RawTags:
    raw = _RawTags()

    def values(key: str) -> list[str]:
        return _texts(tags.get(key, []))

    def freeform(name: str) -> list[str]:
        return _texts(tags.get(_MP4_FREEFORM + name, []))

    raw.title = values("\xa9nam")
    raw.artist = values("\xa9ART")
    raw.album_artist = values("aART")
    raw.album = values("\xa9alb")
    for key, number, total in (("trkn", "track", "track_total"), ("disk", "disc", "disc_total")):
        pairs = tags.get(key, [])
        if pairs:
            first = pairs[0]
            setattr(raw, number, [str(first[0])] if first[0] else [])
            setattr(raw, total, [str(first[1])] if len(first) > 1 and first[1] else [])
    raw.date = values("\xa9day")
    raw.genre = values("\xa9gen")
    raw.isrc = freeform("ISRC")
    raw.compilation = ["1"] if tags.get("cpil") else []
    # iTunes content rating: 1 and 4 mean explicit, 2 clean.
    raw.advisory = ["1"] if any(value in (1, 4) for value in tags.get("rtng", [])) else []
    raw.release_type = freeform("MusicBrainz Album Type")
    raw.artists = freeform("ARTISTS")
    raw.recording_id = freeform("MusicBrainz Track Id")
    raw.album_id = freeform("MusicBrainz Album Id")
    raw.artist_ids = freeform("MusicBrainz Artist Id")
    raw.album_artist_ids = freeform("MusicBrainz Album Artist Id")
    raw.pictures = [(3, bytes(cover)) for cover in tags.get("covr", [])]
    return raw


# ---------------------------------------------------------------------------------------------
# Parsing values


def parse_position(value: str | None) -> tuple[int | None, int | None]:
    """(number, total) of a track or disc position such as "3", "03" or "3/12"."""
    if not value:
        return None, None
    match = _POSITION.match(value)
    if match is None:
        return None, None
    number = int(match.group(1)) or None
    total = int(match.group(2)) if match.group(2) else None
    return number, total or None


def parse_date(value: str | None) -> date | None:
    """A release date from "2019", "2019-05" or "2019-05-03" (missing parts become 1)."""
    if not value:
        return None
    match = _DATE.match(value)
    if match is None:
        return None
    year = int(match.group(1))
    if not 1000 <= year <= 2999:
        return None
    month = int(match.group(2) or 1)
    day = int(match.group(3) or 1)
    try:
        return date(year, month, day)
    except ValueError:
        # "2019-13-45" still says 2019.
        return date(year, 1, 1)


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def _split_featuring(value: str) -> tuple[list[str], list[str]]:
    featured: list[str] = []
    for match in _FEATURING_BRACKETED.finditer(value):
        featured.extend(_ARTIST_SEPARATOR.split(match.group("names")))
    value = _FEATURING_BRACKETED.sub("", value)
    main, *guests = _FEATURING.split(value)
    for guest in guests:
        featured.extend(_ARTIST_SEPARATOR.split(guest))
    return _ARTIST_SEPARATOR.split(main), featured


def parse_artist_credits(
    values: Sequence[str],
    *,
    artists: Sequence[str] = (),
    musicbrainz_ids: Sequence[str] = (),
    title: str | None = None,
) -> tuple[ArtistTag, ...]:
    """Artists credited by an artist tag's values ("A feat. B", "A; B", or a list).

    `artists` is the multi-valued ARTISTS tag (Picard), used when present because it has the
    names unambiguously; the display values still tell who is featured. A "(feat. X)" in the
    title credits X as featured too.
    """
    primary: list[str] = []
    featured: list[str] = []
    for value in values:
        main, guests = _split_featuring(value)
        primary.extend(main)
        featured.extend(guests)
    if title:
        for match in _FEATURING_BRACKETED.finditer(title):
            featured.extend(_ARTIST_SEPARATOR.split(match.group("names")))
    if len(artists) > 1:
        # A name that appears in the featuring part of the display string is a guest.
        guest_texts = [text.casefold() for text in featured]
        names = [
            (name, any(name.strip().casefold() in text for text in guest_texts)) for name in artists
        ]
    else:
        names = [(name, False) for name in primary] + [(name, True) for name in featured]
    ids = [_uuid(value) for value in musicbrainz_ids]
    credits: list[ArtistTag] = []
    seen: set[str] = set()
    for index, (name, guest) in enumerate(names):
        name = _truncate(name)
        key = name.casefold()
        if not name or key in seen:
            continue
        seen.add(key)
        # Picard writes one id per artist, in order; anything else cannot be matched up.
        mbid = ids[index] if len(ids) == len(names) else None
        credits.append(ArtistTag(name=name, featured=guest, musicbrainz_id=mbid))
        if len(credits) >= MAX_ARTISTS:
            break
    # A track whose only artists are guests still needs someone in the lead.
    if credits and all(credit.featured for credit in credits):
        first = credits[0]
        credits[0] = ArtistTag(first.name, featured=False, musicbrainz_id=first.musicbrainz_id)
    return tuple(credits)


def _genres(values: Sequence[str]) -> tuple[str, ...]:
    genres: list[str] = []
    seen: set[str] = set()
    for value in values:
        for part in _ARTIST_SEPARATOR.split(value):
            name = " ".join(part.split())[:MAX_GENRE_CHARS]
            if name and name.casefold() not in seen:
                seen.add(name.casefold())
                genres.append(name)
    return tuple(genres[:MAX_GENRES])


def _isrc(values: Sequence[str]) -> str | None:
    for value in values:
        code = re.sub(r"[\s-]", "", value).upper()
        if _ISRC.match(code):
            return code
    return None


def _artwork(pictures: Sequence[tuple[int, bytes]]) -> bytes | None:
    usable = [
        (kind, data) for kind, data in pictures if 0 < len(data) <= MAX_EMBEDDED_ARTWORK_BYTES
    ]
    # Picture type 3 is the front cover; otherwise take the first picture there is.
    for kind, data in usable:
        if kind == 3:
            return data
    return usable[0][1] if usable else None


def _release_type(values: Sequence[str]) -> str | None:
    for value in values:
        for part in re.split(r"[;/,\x00]", value):
            kind = part.strip().casefold()
            if kind in _RELEASE_TYPES:
                return kind
    return None


def _first(values: Sequence[str]) -> str | None:
    return values[0] if values else None


def _track_tags(raw: _RawTags) -> TrackTags:
    title = _truncate(raw.title[0]) if raw.title else None
    track_number, track_total = parse_position(_first(raw.track))
    disc_number, disc_total = parse_position(_first(raw.disc))
    track_total = parse_position(_first(raw.track_total))[0] or track_total
    disc_total = parse_position(_first(raw.disc_total))[0] or disc_total
    album = _truncate(raw.album[0]) if raw.album else None
    return TrackTags(
        title=title or None,
        artists=parse_artist_credits(
            raw.artist, artists=raw.artists, musicbrainz_ids=raw.artist_ids, title=title
        ),
        album_artists=parse_artist_credits(raw.album_artist, musicbrainz_ids=raw.album_artist_ids),
        album=album or None,
        track_number=track_number,
        track_total=track_total,
        disc_number=disc_number,
        disc_total=disc_total,
        release_date=parse_date(_first(raw.date)),
        genres=_genres(raw.genre),
        isrc=_isrc(raw.isrc),
        compilation=any(value.casefold() in _TRUE for value in raw.compilation),
        release_type=_release_type(raw.release_type),
        explicit=any(value.casefold() in _TRUE for value in raw.advisory),
        musicbrainz_recording_id=_uuid(_first(raw.recording_id)),
        musicbrainz_album_id=_uuid(_first(raw.album_id)),
        artwork=_artwork(raw.pictures),
    )


def _open_tags(path: Path) -> tuple[Any, list[Any]]:
    # (tags, FLAC pictures) of the file, or (None, []) when it has no tags.
    failure: Exception | None = None
    try:
        audio = mutagen.File(path)
    except _PARSE_ERRORS as exc:
        audio, failure = None, exc
    if audio is not None:
        return audio.tags, list(audio.pictures) if isinstance(audio, FLAC) else []
    # A raw ADTS AAC stream starts with an ID3v2 tag, which makes mutagen take it for an MP3
    # it then cannot sync to; the tag itself is still there to read.
    try:
        return _ID3(path), []
    except ID3NoHeaderError:
        if failure is None:
            return None, []
        raise _unreadable(failure) from None
    except _PARSE_ERRORS as exc:
        raise _unreadable(failure or exc) from None


def _unreadable(exc: Exception) -> UnreadableTags:
    if isinstance(exc, mutagen.MutagenError):
        return UnreadableTags(f"cannot parse tags: {exc}")
    return UnreadableTags(f"cannot parse tags ({type(exc).__name__})")


def read_tags(path: Path) -> TrackTags:
    """The tags of an audio file (empty TrackTags when it has none); UnreadableTags if damaged."""
    tags, pictures = _open_tags(path)
    try:
        if tags is None:
            return _track_tags(_read_vorbis({}, pictures)) if pictures else TrackTags()
        if isinstance(tags, ID3):
            return _track_tags(_read_id3(tags))
        if isinstance(tags, MP4Tags):
            return _track_tags(_read_mp4(tags))
        if hasattr(tags, "get") and hasattr(tags, "keys"):
            return _track_tags(_read_vorbis(tags, pictures))
    except _PARSE_ERRORS as exc:
        raise _unreadable(exc) from None
    return TrackTags()

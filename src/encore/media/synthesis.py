"""Synthesize real, tagged audio files: chords encoded with PyAV, tags written with mutagen.

The demo library, the tests and the benchmarks need music files without downloading any:
these are genuine mp3, flac, ogg (Opus), m4a (AAC), aac (ADTS) and wav files that every
player and FFmpeg accept, with the tags and cover art a tagger such as Picard would write.
"""

from __future__ import annotations

import array
import base64
import contextlib
import enum
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import mutagen.aiff
import mutagen.flac
import mutagen.id3
import mutagen.mp3
import mutagen.mp4
import mutagen.oggopus
import mutagen.wave
from av.audio.stream import AudioStream
from PIL import Image, ImageDraw

# mutagen is only partly typed (untyped constructors and methods, Optional tags); used
# through Any, its documented API needs no `type: ignore` on every line.
id3: Any = mutagen.id3
FLAC: Any = mutagen.flac.FLAC
Picture: Any = mutagen.flac.Picture
MP3: Any = mutagen.mp3.MP3
MP4: Any = mutagen.mp4.MP4
MP4Cover: Any = mutagen.mp4.MP4Cover
MP4FreeForm: Any = mutagen.mp4.MP4FreeForm
OggOpus: Any = mutagen.oggopus.OggOpus
WAVE: Any = mutagen.wave.WAVE
AIFF: Any = mutagen.aiff.AIFF

__all__ = [
    "AudioFormat",
    "TagSpec",
    "Tone",
    "make_cover_art",
    "synthesize_audio",
    "write_tagged_track",
    "write_tags",
]


class AudioFormat(enum.StrEnum):
    """A file format Encore imports, named by its usual file extension."""

    mp3 = "mp3"
    flac = "flac"
    ogg = "ogg"  # Opus in Ogg: FFmpeg's own Vorbis encoder is experimental
    m4a = "m4a"
    aac = "aac"  # raw ADTS stream, tagged with a leading ID3v2 header
    wav = "wav"
    aiff = "aiff"

    @classmethod
    def of(cls, path: Path) -> AudioFormat:
        """The format a file name's extension names; ValueError for any other extension."""
        return cls(path.suffix.lower().lstrip("."))


@dataclass(frozen=True)
class _Encoding:
    muxer: str
    codec: str
    bit_rate: int | None
    fixed_rate: int | None = None  # Opus only runs at 48 kHz (among others, not 44.1)


_ENCODINGS = {
    AudioFormat.mp3: _Encoding("mp3", "libmp3lame", 128_000),
    AudioFormat.flac: _Encoding("flac", "flac", None),
    AudioFormat.ogg: _Encoding("ogg", "libopus", 96_000, fixed_rate=48_000),
    AudioFormat.m4a: _Encoding("ipod", "aac", 128_000),
    AudioFormat.aac: _Encoding("adts", "aac", 128_000),
    AudioFormat.wav: _Encoding("wav", "pcm_s16le", None),
    AudioFormat.aiff: _Encoding("aiff", "pcm_s16be", None),
}

A_MINOR = (220.0, 261.63, 329.63)
C_MAJOR = (261.63, 329.63, 392.0)
F_MAJOR = (174.61, 220.0, 261.63)
G_MAJOR = (196.0, 246.94, 293.66)


@dataclass(frozen=True)
class Tone:
    """What to play: chords one after the other, each an equal share of `seconds`."""

    chords: tuple[tuple[float, ...], ...] = (C_MAJOR,)
    seconds: float = 2.0
    sample_rate: int = 44_100
    channels: int = 2
    amplitude: float = 0.3


@dataclass(frozen=True)
class TagSpec:
    """Tags to write, as a tagger would: several values where the format allows them."""

    title: str | None = None
    artists: tuple[str, ...] = ()
    album_artists: tuple[str, ...] = ()
    album: str | None = None
    track_number: int | None = None
    track_total: int | None = None
    disc_number: int | None = None
    disc_total: int | None = None
    date: str | None = None
    genres: tuple[str, ...] = ()
    isrc: str | None = None
    compilation: bool = False
    release_type: str | None = None
    explicit: bool = False
    musicbrainz_recording_id: str | None = None
    musicbrainz_album_id: str | None = None
    musicbrainz_artist_ids: tuple[str, ...] = ()
    musicbrainz_album_artist_ids: tuple[str, ...] = ()
    cover: bytes | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------
# Audio


def _pcm(tone: Tone, sample_rate: int) -> bytes:
    # Interleaved signed 16-bit samples, built with the standard library only (no numpy).
    total = max(1, int(tone.seconds * sample_rate))
    chords = tone.chords or ((440.0,),)
    per_chord = max(1, total // len(chords))
    fade = min(per_chord // 4, int(0.02 * sample_rate)) or 1  # 20 ms ramps: no clicks
    mono = array.array("h")
    for index, chord in enumerate(chords):
        count = per_chord if index < len(chords) - 1 else total - per_chord * index
        steps = [2 * math.pi * frequency / sample_rate for frequency in chord]
        scale = tone.amplitude * 32767 / max(1, len(chord))
        start = len(mono)
        mono.extend(
            int(scale * sum(math.sin(step * (start + i)) for step in steps)) for i in range(count)
        )
        for i in range(min(fade, count)):
            gain = i / fade
            mono[start + i] = int(mono[start + i] * gain)
            mono[start + count - 1 - i] = int(mono[start + count - 1 - i] * gain)
    if tone.channels == 1:
        interleaved = mono
    else:
        interleaved = array.array("h", bytes(2 * len(mono) * tone.channels))
        for channel in range(tone.channels):
            interleaved[channel :: tone.channels] = mono
    if sys.byteorder != "little":
        interleaved.byteswap()
    return interleaved.tobytes()


def synthesize_audio(
    path: Path, tone: Tone | None = None, audio_format: AudioFormat | None = None
) -> Path:
    """Encode `tone` into a new audio file at `path` (format from the extension by default)."""
    tone = tone or Tone()
    audio_format = audio_format or AudioFormat.of(path)
    encoding = _ENCODINGS[audio_format]
    sample_rate = encoding.fixed_rate or tone.sample_rate
    layout = "mono" if tone.channels == 1 else "stereo"
    channels = 1 if tone.channels == 1 else 2
    pcm = _pcm(
        Tone(tone.chords, tone.seconds, tone.sample_rate, channels, tone.amplitude), sample_rate
    )
    bytes_per_sample = 2 * channels
    frame_samples = 4096
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=encoding.muxer) as container:
        stream = container.add_stream(encoding.codec, rate=sample_rate, layout=layout)
        if not isinstance(stream, AudioStream):
            raise TypeError(f"{encoding.codec} is not an audio encoder")
        if encoding.bit_rate:
            stream.bit_rate = encoding.bit_rate
        total = len(pcm) // bytes_per_sample
        for start in range(0, total, frame_samples):
            count = min(frame_samples, total - start)
            frame = av.AudioFrame(format="s16", layout=layout, samples=count)
            frame.planes[0].update(
                pcm[start * bytes_per_sample : (start + count) * bytes_per_sample]
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            # PyAV converts sample format and re-frames to the encoder's frame size.
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------------------------------------
# Cover art


def make_cover_art(
    text: str,
    *,
    size: int = 600,
    colour: tuple[int, int, int] = (40, 90, 160),
    image_format: str = "JPEG",
) -> bytes:
    """A square cover image: a colour gradient, a circle and the text, encoded by Pillow."""
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    r, g, b = colour
    for y in range(0, size, 4):
        shade = y / size
        draw.rectangle(
            (0, y, size, y + 4),
            fill=(
                int(r * (1 - shade) + 255 * shade * 0.3),
                int(g * (1 - shade)),
                int(b + (255 - b) * shade * 0.5),
            ),
        )
    margin = size // 5
    draw.ellipse(
        (margin, margin, size - margin, size - margin),
        outline=(255, 255, 255),
        width=max(2, size // 60),
    )
    draw.text((size // 12, size - size // 6), text[:40], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Tags


def _position(number: int | None, total: int | None) -> str | None:
    if number is None:
        return None
    return f"{number}/{total}" if total else str(number)


def _image_mime(data: bytes) -> str:
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"


def _flac_picture(data: bytes) -> Any:
    picture = Picture()
    picture.type = 3  # front cover
    picture.mime = _image_mime(data)
    picture.desc = "Cover"
    # Size fields are informative only; a test may embed bytes that are no real image.
    with contextlib.suppress(OSError), Image.open(io.BytesIO(data)) as image:
        picture.width, picture.height = image.size
        picture.depth = 24
    picture.data = data
    return picture


def _vorbis_comments(tags: TagSpec) -> dict[str, list[str]]:
    comments: dict[str, list[str]] = {}

    def put(key: str, values: Sequence[str | None]) -> None:
        present = [value for value in values if value]
        if present:
            comments[key] = present

    put("title", [tags.title])
    put("artist", list(tags.artists))
    put("albumartist", list(tags.album_artists))
    put("album", [tags.album])
    put("tracknumber", [str(tags.track_number) if tags.track_number else None])
    put("tracktotal", [str(tags.track_total) if tags.track_total else None])
    put("discnumber", [str(tags.disc_number) if tags.disc_number else None])
    put("disctotal", [str(tags.disc_total) if tags.disc_total else None])
    put("date", [tags.date])
    put("genre", list(tags.genres))
    put("isrc", [tags.isrc])
    put("compilation", ["1" if tags.compilation else None])
    put("releasetype", [tags.release_type])
    put("itunesadvisory", ["1" if tags.explicit else None])
    put("musicbrainz_trackid", [tags.musicbrainz_recording_id])
    put("musicbrainz_albumid", [tags.musicbrainz_album_id])
    put("musicbrainz_artistid", list(tags.musicbrainz_artist_ids))
    put("musicbrainz_albumartistid", list(tags.musicbrainz_album_artist_ids))
    return comments


def _id3_frames(tags: TagSpec) -> list[Any]:
    utf8 = id3.Encoding.UTF8
    frames: list[Any] = []

    def text(frame: Any, values: Sequence[str | None]) -> None:
        present = [value for value in values if value]
        if present:
            frames.append(frame(encoding=utf8, text=present))

    def txxx(description: str, values: Sequence[str | None]) -> None:
        present = [value for value in values if value]
        if present:
            frames.append(id3.TXXX(encoding=utf8, desc=description, text=present))

    text(id3.TIT2, [tags.title])
    text(id3.TPE1, list(tags.artists))
    text(id3.TPE2, list(tags.album_artists))
    text(id3.TALB, [tags.album])
    text(id3.TRCK, [_position(tags.track_number, tags.track_total)])
    text(id3.TPOS, [_position(tags.disc_number, tags.disc_total)])
    text(id3.TDRC, [tags.date])
    text(id3.TCON, list(tags.genres))
    text(id3.TSRC, [tags.isrc])
    text(id3.TCMP, ["1" if tags.compilation else None])
    txxx("MusicBrainz Album Type", [tags.release_type])
    txxx("MusicBrainz Album Id", [tags.musicbrainz_album_id])
    txxx("MusicBrainz Artist Id", list(tags.musicbrainz_artist_ids))
    txxx("MusicBrainz Album Artist Id", list(tags.musicbrainz_album_artist_ids))
    txxx("ITUNESADVISORY", ["1" if tags.explicit else None])
    if tags.musicbrainz_recording_id:
        frames.append(
            id3.UFID(owner="http://musicbrainz.org", data=tags.musicbrainz_recording_id.encode())
        )
    if tags.cover:
        frames.append(
            id3.APIC(
                encoding=utf8,
                mime=_image_mime(tags.cover),
                type=id3.PictureType.COVER_FRONT,
                desc="Cover",
                data=tags.cover,
            )
        )
    return frames


def _mp4_tags(tags: TagSpec) -> dict[str, list[object]]:
    atoms: dict[str, list[object]] = {}

    def freeform(name: str, values: Sequence[str | None]) -> None:
        present = [MP4FreeForm(value.encode()) for value in values if value]
        if present:
            atoms[f"----:com.apple.iTunes:{name}"] = list(present)

    if tags.title:
        atoms["\xa9nam"] = [tags.title]
    if tags.artists:
        atoms["\xa9ART"] = list(tags.artists)
    if tags.album_artists:
        atoms["aART"] = list(tags.album_artists)
    if tags.album:
        atoms["\xa9alb"] = [tags.album]
    if tags.track_number:
        atoms["trkn"] = [(tags.track_number, tags.track_total or 0)]
    if tags.disc_number:
        atoms["disk"] = [(tags.disc_number, tags.disc_total or 0)]
    if tags.date:
        atoms["\xa9day"] = [tags.date]
    if tags.genres:
        atoms["\xa9gen"] = list(tags.genres)
    if tags.compilation:
        atoms["cpil"] = [True]
    if tags.explicit:
        atoms["rtng"] = [1]
    if tags.cover:
        image_format = (
            MP4Cover.FORMAT_PNG if tags.cover.startswith(b"\x89PNG") else MP4Cover.FORMAT_JPEG
        )
        atoms["covr"] = [MP4Cover(tags.cover, imageformat=image_format)]
    freeform("ISRC", [tags.isrc])
    freeform("MusicBrainz Album Type", [tags.release_type])
    freeform("MusicBrainz Track Id", [tags.musicbrainz_recording_id])
    freeform("MusicBrainz Album Id", [tags.musicbrainz_album_id])
    freeform("MusicBrainz Artist Id", list(tags.musicbrainz_artist_ids))
    freeform("MusicBrainz Album Artist Id", list(tags.musicbrainz_album_artist_ids))
    return atoms


def write_tags(path: Path, tags: TagSpec, audio_format: AudioFormat | None = None) -> None:
    """Write `tags` into the audio file at `path`, replacing any tags it had."""
    audio_format = audio_format or AudioFormat.of(path)
    audio: Any
    if audio_format in (AudioFormat.flac, AudioFormat.ogg):
        audio = FLAC(path) if audio_format is AudioFormat.flac else OggOpus(path)
        _write_vorbis(audio, tags)
        return
    if audio_format is AudioFormat.m4a:
        mp4 = MP4(path)
        if mp4.tags is None:
            mp4.add_tags()
        mp4.tags.clear()
        mp4.tags.update(_mp4_tags(tags))
        mp4.save()
        return
    frames = _id3_frames(tags)
    if audio_format is AudioFormat.aac:
        # ADTS has no tag container of its own; players and FFmpeg skip a leading ID3v2 tag.
        tag = id3.ID3()
        for frame in frames:
            tag.add(frame)
        tag.save(path, v2_version=4)
        return
    container: Any
    if audio_format is AudioFormat.mp3:
        container = MP3(path)
    elif audio_format is AudioFormat.aiff:
        container = AIFF(path)
    else:
        container = WAVE(path)
    if container.tags is None:
        container.add_tags()
    container.tags.clear()
    for frame in frames:
        container.tags.add(frame)
    if audio_format is AudioFormat.mp3:
        container.save(v2_version=4)
    else:
        container.save()


def _write_vorbis(audio: Any, tags: TagSpec) -> None:
    if audio.tags is None:
        audio.add_tags()
    audio.tags.clear()
    for key, values in _vorbis_comments(tags).items():
        audio.tags[key] = values
    if tags.cover:
        picture = _flac_picture(tags.cover)
        if isinstance(audio, FLAC):
            audio.clear_pictures()
            audio.add_picture(picture)
        else:
            audio.tags["metadata_block_picture"] = [base64.b64encode(picture.write()).decode()]
    audio.save()


def write_tagged_track(path: Path, tone: Tone, tags: TagSpec) -> Path:
    """Synthesize `tone` into `path` and tag it: one finished track."""
    synthesize_audio(path, tone)
    write_tags(path, tags)
    return path

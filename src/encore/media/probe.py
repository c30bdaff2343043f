"""Probe an audio file with PyAV: codec, container, duration, sample rate, channels, bit rate.

FFmpeg can open far more than audio: playlists (HLS, ffconcat) that pull in other files,
network URLs, image sequences. An import reads files chosen by whoever filled the folder, so
only the demuxers of the audio formats Encore accepts may run, and only the `file` protocol.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.container import InputContainer

__all__ = [
    "ALLOWED_DEMUXERS",
    "AudioProbe",
    "UnreadableAudio",
    "describe_failure",
    "open_audio_input",
    "probe_audio",
    "sniff_demuxer",
]

ALLOWED_DEMUXERS = ("mp3", "flac", "ogg", "mov", "mp4", "m4a", "wav", "aac", "aiff")
"""FFmpeg demuxers an import may use; FFmpeg refuses any other before reading the header."""

# FFmpeg's demuxer name -> the short container name stored on a track.
_CONTAINER_NAMES = {
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "ogg",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "mov": "mp4",
    "wav": "wav",
    "aac": "aac",
    "aiff": "aiff",
}

_OPEN_OPTIONS = {
    # Checked by avformat_open_input after probing and before the demuxer reads anything,
    # so a playlist or concat script renamed .mp3 never gets to open what it references.
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    "protocol_whitelist": "file",
}

# Enough packets to get past any leading metadata or priming frames to real audio.
_MAX_PACKETS_FOR_FIRST_FRAME = 64
_SNIFF_BYTES = 64


class UnreadableAudio(Exception):
    """The file is not audio Encore can read; `str()` is a reason a person can act on."""


@dataclass(frozen=True, slots=True)
class AudioProbe:
    """Technical facts about an audio file's first audio stream."""

    codec: str
    container: str
    duration_ms: int
    sample_rate: int
    channels: int
    bit_rate: int | None


def _id3_size(head: bytes) -> int:
    # ID3v2 sizes are "syncsafe": 7 bits per byte; a footer adds 10 more bytes.
    size = 0
    for byte in head[6:10]:
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def sniff_demuxer(path: Path) -> str | None:
    """The FFmpeg demuxer that the file's first bytes identify, or None when unrecognized."""
    with path.open("rb") as file:
        head = file.read(_SNIFF_BYTES)
        offset = 0
        # MP3 and raw AAC often start with an ID3v2 tag; what follows tells them apart.
        while head[:3] == b"ID3" and len(head) >= 10:
            offset += _id3_size(head)
            file.seek(offset)
            head = file.read(_SNIFF_BYTES)
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mov"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # Frame sync: the two layer bits are 00 for ADTS AAC and non-zero for MPEG audio.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    if offset:
        return "mp3"  # an ID3v2 tag followed by padding or junk: let the mp3 demuxer resync
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def _stream_duration(
    stream: av.audio.stream.AudioStream, container: av.container.InputContainer
) -> Fraction | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return stream.duration * stream.time_base
    if container.duration is not None and container.duration > 0:
        return Fraction(container.duration, av.time_base)
    return None


def _measured_duration(path: str, demuxer: str | None) -> Fraction:
    # Raw streams (ADTS, some Ogg and MP3 files) carry no duration: read every packet and take
    # the end of the last one; decode only if the packets carry no timestamps either.
    with av.open(path, format=demuxer, options=_OPEN_OPTIONS) as container:
        stream = container.streams.audio[0]
        end = 0
        for packet in container.demux(stream):
            if packet.pts is not None and packet.duration:
                end = max(end, packet.pts + packet.duration)
        if end > 0 and stream.time_base is not None:
            return end * stream.time_base
    with av.open(path, format=demuxer, options=_OPEN_OPTIONS) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
        return Fraction(samples, rate) if rate else Fraction(0)


def probe_audio(path: Path) -> AudioProbe:
    """Codec, container, duration and format of an audio file; UnreadableAudio if it is not one."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableAudio("empty file")
        demuxer = sniff_demuxer(path)
    except OSError as exc:
        raise UnreadableAudio(f"cannot read file: {_reason(exc)}") from None
    # An explicit file: URL, so a name like "a:b.mp3" is never taken for a protocol.
    url = "file:" + os.path.abspath(path)  # noqa: PTH100 - FFmpeg needs a plain string
    try:
        with av.open(url, format=demuxer, options=_OPEN_OPTIONS) as container:
            format_name = container.format.name
            if format_name not in _CONTAINER_NAMES:
                raise UnreadableAudio(f"unsupported container format: {format_name}")
            if not container.streams.audio:
                raise UnreadableAudio("no audio stream")
            stream = container.streams.audio[0]
            context = stream.codec_context
            # A readable header says little: decoding one frame shows the data is audio.
            decoded = False
            for index, packet in enumerate(container.demux(stream)):
                if index >= _MAX_PACKETS_FOR_FIRST_FRAME:
                    break
                try:
                    decoded = bool(packet.size and packet.decode())
                except av.error.InvalidDataError:
                    continue  # a damaged first frame is common in MP3s; the next may decode
                if decoded:
                    break
            if not decoded:
                raise UnreadableAudio("no decodable audio (corrupt or truncated data)")
            sample_rate = int(context.sample_rate or 0)
            channels = int(context.channels or 0)
            if sample_rate <= 0 or channels <= 0:
                raise UnreadableAudio("audio stream has no sample rate or channels")
            codec = context.codec.canonical_name
            bit_rate = int(context.bit_rate or container.bit_rate or 0) or None
            duration = _stream_duration(stream, container)
        if duration is None:
            duration = _measured_duration(url, demuxer)
    except UnreadableAudio:
        raise
    except av.error.FFmpegError as exc:
        if demuxer is None:
            # Nothing in the first bytes looked like audio, and FFmpeg agreed (or found a
            # demuxer outside the whitelist, such as a playlist).
            raise UnreadableAudio(
                f"not an audio file in a supported format ({_reason(exc)})"
            ) from None
        raise UnreadableAudio(f"corrupt audio: {_reason(exc)}") from None
    except (OSError, ValueError, IndexError) as exc:
        raise UnreadableAudio(f"cannot read audio: {_reason(exc)}") from None
    duration_ms = round(duration * 1000)
    if duration_ms <= 0:
        raise UnreadableAudio("audio has zero duration")
    return AudioProbe(
        codec=codec,
        container=_CONTAINER_NAMES[format_name],
        duration_ms=duration_ms,
        sample_rate=sample_rate,
        channels=channels,
        bit_rate=bit_rate,
    )


def open_audio_input(path: Path) -> InputContainer:
    """Open an audio file for decoding with probe_audio's limits; UnreadableAudio if it can't."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableAudio("empty file")
        demuxer = sniff_demuxer(path)
    except OSError as exc:
        raise UnreadableAudio(f"cannot read file: {_reason(exc)}") from None
    url = "file:" + os.path.abspath(path)  # noqa: PTH100 - FFmpeg needs a plain string
    try:
        container = av.open(url, format=demuxer, options=_OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        if demuxer is None:
            raise UnreadableAudio(
                f"not an audio file in a supported format ({_reason(exc)})"
            ) from None
        raise UnreadableAudio(f"corrupt audio: {_reason(exc)}") from None
    except (OSError, ValueError) as exc:
        raise UnreadableAudio(f"cannot read audio: {_reason(exc)}") from None
    if container.format.name not in _CONTAINER_NAMES:
        name = container.format.name
        container.close()
        raise UnreadableAudio(f"unsupported container format: {name}")
    if not container.streams.audio:
        container.close()
        raise UnreadableAudio("no audio stream")
    return container


def describe_failure(exc: BaseException) -> str:
    """A short reason a person can read for an FFmpeg or file-system error."""
    return _reason(exc)

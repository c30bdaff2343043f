"""The transcode ladder: one decode of an original, three AAC-LC renditions, loudness and peaks.

`transcode_ladder` decodes the source once, converts it to 44.1 kHz stereo and feeds every
frame, in the same pass, to

- three AAC-LC encoders (64, 128 and 256 kbit/s); each encoded packet goes both to FFmpeg's
  HLS muxer (fMP4 segments of about 6 s and an init section) and to a progressive M4A with the
  `moov` box first, so each rendition is encoded once for both outputs;
- the EBU R128 meter (integrated loudness and true peak, see `encore.media.loudness`);
- the waveform envelope for the seek bar.

It then writes each rendition's media playlist, a multivariant playlist whose BANDWIDTH and
AVERAGE-BANDWIDTH are measured from the segments written (as RFC 8216bis and Apple's HLS
authoring specification define them) and `peaks.json`. Layout of `output_dir`:

    master.m3u8  peaks.json
    aac_64/index.m3u8  aac_64/init.mp4  aac_64/segment_00000.m4s ...  aac_64/audio.m4a
    aac_128/...  aac_256/...

Every URI inside the playlists is relative, so the whole tree can be stored under any prefix
(`renditions/{track_id}/{content_hash}/`) and served from there. Nothing here touches a
database or the network: the caller uploads `LadderResult.files`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from numpy.typing import NDArray

from encore.media.loudness import LoudnessMeter, track_gain_db
from encore.media.probe import UnreadableAudio, describe_failure, open_audio_input

__all__ = [
    "CHANNELS",
    "MASTER_PLAYLIST",
    "PEAKS_FILE",
    "RENDITIONS",
    "SAMPLE_RATE",
    "SEGMENT_SECONDS",
    "AudioTooLong",
    "LadderResult",
    "RenditionInfo",
    "RenditionSpec",
    "transcode_ladder",
]

# 44.1 kHz: nearly all music is mastered and delivered at 44.1 kHz (CD, and what stores ask
# for), so most sources need no sample-rate conversion at all, which costs time and adds
# filtering; AAC-LC and every HLS client play 44.1 kHz as well as 48 kHz.
SAMPLE_RATE = 44_100
CHANNELS = 2
_LAYOUT = "stereo"
_TIME_BASE = Fraction(1, SAMPLE_RATE)

SEGMENT_SECONDS = 6
AAC_LC_CODECS = "mp4a.40.2"
MASTER_PLAYLIST = "master.m3u8"
PEAKS_FILE = "peaks.json"
_MEDIA_PLAYLIST = "index.m3u8"
_INIT_SECTION = "init.mp4"
_PROGRESSIVE = "audio.m4a"
_SEGMENT_PATTERN = "segment_%05d.m4s"
# 7 is what FFmpeg and Apple's segmenter write for fMP4 (EXT-X-MAP needs 6 or more).
_HLS_VERSION = 7

_PEAK_WINDOW = 256  # samples per raw envelope value, before merging to the stored count
_MAX_PEAKS = 2000
_PEAKS_VERSION = 1

# A few damaged packets are common in MP3s and still leave a playable track; this many in a
# row means the rest of the file is not audio.
_MAX_CONSECUTIVE_DAMAGED_PACKETS = 64
# Demuxers whose header states the exact length (WAV is read separately: FFmpeg trusts the
# file size), so a shorter decode means a cut-off file.
_EXACT_LENGTH_DEMUXERS = frozenset({"flac", "mov,mp4,m4a,3gp,3g2,mj2"})
_TRUNCATION_TOLERANCE_S = 1.0


@dataclass(frozen=True, slots=True)
class RenditionSpec:
    """One rung of the ladder: its directory name and nominal AAC-LC bit rate."""

    name: str
    bit_rate: int


RENDITIONS = (
    RenditionSpec("aac_64", 64_000),
    RenditionSpec("aac_128", 128_000),
    RenditionSpec("aac_256", 256_000),
)


@dataclass(frozen=True, slots=True)
class RenditionInfo:
    """One rendition as written: nominal and measured bit rates and its files."""

    name: str
    bit_rate: int
    """Nominal encoder bit rate in bit/s."""
    average_bandwidth: int
    """Measured average segment bit rate in bit/s (AVERAGE-BANDWIDTH)."""
    peak_bandwidth: int
    """Measured peak segment bit rate in bit/s (BANDWIDTH)."""
    codecs: str
    playlist: str
    """The media playlist, relative to the output directory."""
    progressive: str
    """The progressive M4A, relative to the output directory."""
    segment_count: int
    files: tuple[str, ...]
    """Every file of this rendition, relative to the output directory."""


@dataclass(frozen=True, slots=True)
class LadderResult:
    """What `transcode_ladder` measured and wrote."""

    duration_ms: int
    loudness_lufs: float
    true_peak_dbtp: float
    loudness_range_lu: float
    track_gain_db: float
    renditions: tuple[RenditionInfo, ...]
    master_playlist: str
    peaks_file: str
    files: tuple[str, ...]
    """Every file written, relative to the output directory, in POSIX form."""


class AudioTooLong(UnreadableAudio):
    """The audio lasts longer than the caller allows; found before decoding all of it."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"audio is longer than the limit of {limit_s:g} s")
        self.limit_s = limit_s


# ---------------------------------------------------------------------------------------------
# Decoding


def _refuse_if_longer(path: Path, limit_s: float) -> None:
    # Demuxing without decoding reads only packets (hundreds of times faster than decoding)
    # and stops at the limit, so a 10-hour file is refused after reading the limit's worth of
    # packets. Packet timing comes from the stream itself, not from a header that could claim
    # anything; the decode still counts samples in case the packets understate it.
    with open_audio_input(path) as container:
        stream = container.streams.audio[0]
        if stream.time_base is None:
            return
        limit = limit_s / stream.time_base
        end = 0
        try:
            for packet in container.demux(stream):
                duration = packet.duration or 0
                end = packet.pts + duration if packet.pts is not None else end + duration
                if end > limit:
                    raise AudioTooLong(limit_s)
        except av.error.FFmpegError:
            return  # damaged data: the decode reports it, with where it is


def _wav_declared_seconds(path: Path) -> float | None:
    # FFmpeg's WAV demuxer derives the length from the file size, so a cut-off file looks
    # whole to it; the RIFF header's data size (and byte rate) says how long it should be.
    with path.open("rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = 0
        while chunk := file.read(8):
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"fmt ":
                body = file.read(size + size % 2)
                byte_rate = int.from_bytes(body[8:12], "little")
            elif chunk[:4] == b"data":
                # 0 and 0xFFFFFFFF mean "unknown" (streamed or RF64): nothing to compare.
                if not byte_rate or size in (0, 0xFFFFFFFF):
                    return None
                return size / byte_rate
            else:
                file.seek(size + size % 2, os.SEEK_CUR)
    return None


def _declared_seconds(container: InputContainer, path: Path) -> float | None:
    if container.format.name == "wav":
        return _wav_declared_seconds(path)
    if container.format.name not in _EXACT_LENGTH_DEMUXERS:
        return None
    stream = container.streams.audio[0]
    if stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    return float(stream.duration * stream.time_base)


def _decoded_frames(
    container: InputContainer, path: Path, limit_s: float | None
) -> Iterator[AudioFrame]:
    stream = container.streams.audio[0]
    decoded_s = 0.0
    damaged = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                damaged += 1
                if damaged >= _MAX_CONSECUTIVE_DAMAGED_PACKETS:
                    raise UnreadableAudio(f"corrupt audio data after {decoded_s:.1f} s") from None
                continue
            damaged = 0
            for frame in frames:
                if not isinstance(frame, AudioFrame) or not frame.sample_rate:
                    continue
                decoded_s += frame.samples / frame.sample_rate
                if limit_s is not None and decoded_s > limit_s:
                    raise AudioTooLong(limit_s)
                yield frame
    except av.error.FFmpegError as exc:
        raise UnreadableAudio(
            f"corrupt audio after {decoded_s:.1f} s: {describe_failure(exc)}"
        ) from None
    if decoded_s <= 0:
        raise UnreadableAudio("no decodable audio (corrupt or truncated data)")
    declared = _declared_seconds(container, path)
    if declared is not None and decoded_s < declared - max(_TRUNCATION_TOLERANCE_S, declared / 100):
        raise UnreadableAudio(
            f"truncated file: {decoded_s:.1f} s of audio where the header declares {declared:.1f} s"
        )


class _Conformer:
    """Converts decoded frames to the ladder's format, whatever the decoder switches to."""

    def __init__(self) -> None:
        self._resampler: AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None
        self.samples = 0

    def convert(self, frame: AudioFrame | None) -> list[AudioFrame]:
        """The next converted frames, stamped on the ladder's own clock; None flushes."""
        converted: list[AudioFrame] = []
        if frame is not None:
            signature = (frame.format.name, frame.layout.name, frame.sample_rate)
            if signature != self._input:
                # MP3 may change layout or rate mid-stream; a resampler is set up for one.
                converted.extend(self._flush())
                self._resampler = AudioResampler(format="fltp", layout=_LAYOUT, rate=SAMPLE_RATE)
                self._input = signature
            assert self._resampler is not None
            converted.extend(self._resampler.resample(frame))
        else:
            converted.extend(self._flush())
        for out in converted:
            # Decoder timestamps may start below zero (encoder priming) or jump; the
            # renditions start at zero and run on without gaps.
            out.pts = self.samples
            out.time_base = _TIME_BASE
            self.samples += out.samples
        return converted

    def _flush(self) -> list[AudioFrame]:
        if self._resampler is None:
            return []
        flushed = self._resampler.resample(None)
        self._resampler = None
        self._input = None
        return flushed


# ---------------------------------------------------------------------------------------------
# Waveform peaks


class _PeakEnvelope:
    """Largest absolute sample over both channels in each window of `_PEAK_WINDOW` samples."""

    def __init__(self) -> None:
        self._windows: list[NDArray[np.float32]] = []
        self._carry: NDArray[np.float32] = np.zeros(0, dtype=np.float32)

    def add(self, frame: AudioFrame) -> None:
        """Take the next frame (planar float, any number of samples)."""
        samples = frame.to_ndarray().astype(np.float32, copy=False)
        envelope = np.abs(samples).max(axis=0)
        if self._carry.size:
            envelope = np.concatenate((self._carry, envelope))
        whole = envelope.size - envelope.size % _PEAK_WINDOW
        if whole:
            self._windows.append(envelope[:whole].reshape(-1, _PEAK_WINDOW).max(axis=1))
        self._carry = envelope[whole:]

    def document(self) -> dict[str, object]:
        """The peaks.json document: at most `_MAX_PEAKS` values in 0..1 over the whole track."""
        parts = [*self._windows]
        if self._carry.size:
            parts.append(self._carry.max(keepdims=True))
        raw = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        group = max(1, math.ceil(raw.size / _MAX_PEAKS))
        padded = np.pad(raw, (0, (-raw.size) % group))
        peaks = np.clip(padded.reshape(-1, group).max(axis=1), 0.0, 1.0) if raw.size else raw
        return {
            "version": _PEAKS_VERSION,
            "sample_rate": SAMPLE_RATE,
            "samples_per_peak": _PEAK_WINDOW * group,
            "peaks": [round(float(value), 4) for value in peaks],
        }


# ---------------------------------------------------------------------------------------------
# Encoding and playlists


def _file_url(path: Path) -> str:
    # An explicit file: URL, so no part of a path is ever taken for another protocol.
    return "file:" + os.path.abspath(path)  # noqa: PTH100 - FFmpeg needs a plain string


class _RenditionWriter:
    """One AAC-LC encoder whose packets go to an HLS muxer and a progressive M4A muxer."""

    def __init__(self, directory: Path, spec: RenditionSpec) -> None:
        directory.mkdir()
        self.directory = directory
        self.spec = spec
        segment_url = _file_url(directory / _SEGMENT_PATTERN)
        self._hls: OutputContainer = av.open(
            _file_url(directory / _MEDIA_PLAYLIST),
            "w",
            format="hls",
            container_options={
                "hls_segment_type": "fmp4",
                "hls_time": str(SEGMENT_SECONDS),
                "hls_playlist_type": "vod",
                "hls_list_size": "0",
                "hls_fmp4_init_filename": _INIT_SECTION,
                "hls_segment_filename": segment_url,
            },
        )
        self._progressive: OutputContainer | None = None
        try:
            self._stream: AudioStream = self._hls.add_stream(
                "aac", rate=SAMPLE_RATE, layout=_LAYOUT
            )
            self._stream.bit_rate = spec.bit_rate
            # Opens the encoder, so its extradata (AudioSpecificConfig) exists for the copy.
            self._hls.start_encoding()
            self._progressive = av.open(
                _file_url(directory / _PROGRESSIVE),
                "w",
                format="ipod",  # the M4A flavour of MP4: brand M4A, iTunes-style metadata
                container_options={"movflags": "+faststart"},
            )
            self._progressive_stream = self._progressive.add_stream_from_template(self._stream)
        except BaseException:
            self.close()
            raise

    def encode(self, frame: AudioFrame | None) -> None:
        """Encode one frame (None flushes) and mux each packet into both outputs."""
        assert self._progressive is not None
        for packet in self._stream.encode(frame):
            self._hls.mux_one(packet)
            # mux_one writes a new reference, so the same packet can go to the second muxer.
            packet.stream = self._progressive_stream
            self._progressive.mux_one(packet)

    def close(self) -> None:
        """Write trailers (the last segment, the moved `moov`) and close both outputs."""
        try:
            self._hls.close()
        finally:
            if self._progressive is not None:
                self._progressive.close()


@dataclass(frozen=True, slots=True)
class _Segment:
    duration: str  # as FFmpeg wrote it, so the playlist keeps its precision
    uri: str
    size: int


def _read_segments(directory: Path) -> list[_Segment]:
    # FFmpeg's media playlist lists the segments it cut (and only those); the playlist is
    # then written again with every tag Encore's clients and the authoring spec expect.
    segments: list[_Segment] = []
    duration: str | None = None
    for line in (directory / _MEDIA_PLAYLIST).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            duration = line.removeprefix("#EXTINF:").split(",", 1)[0]
        elif line and not line.startswith("#") and duration is not None:
            segments.append(_Segment(duration, line, (directory / line).stat().st_size))
            duration = None
    if not segments:
        raise RuntimeError(f"FFmpeg wrote no HLS segments in {directory}")
    return segments


def _target_duration(segments: list[_Segment]) -> int:
    # RFC 8216 4.3.3.1: every EXTINF duration, rounded to the nearest integer, is at most this.
    return max(math.floor(float(segment.duration) + 0.5) for segment in segments)


def _write_media_playlist(directory: Path, segments: list[_Segment], target: int) -> None:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{_HLS_VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        # Every AAC frame decodes on its own, so each segment does too.
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{_INIT_SECTION}"',
    ]
    for segment in segments:
        lines += [f"#EXTINF:{segment.duration},", segment.uri]
    lines.append("#EXT-X-ENDLIST")
    (directory / _MEDIA_PLAYLIST).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _average_bandwidth(segments: list[_Segment]) -> int:
    # RFC 8216bis 4.4.6.2: the sum of the segment sizes over the playlist's duration.
    bits = 8 * sum(segment.size for segment in segments)
    return math.ceil(bits / sum(float(segment.duration) for segment in segments))


def _peak_bandwidth(segments: list[_Segment], target: int) -> int:
    # RFC 8216bis 4.4.6.2: the largest bit rate of any contiguous run of segments lasting
    # 0.5 to 1.5 times the target duration (a short last segment counts with its neighbour).
    best = 0.0
    for first in range(len(segments)):
        seconds = 0.0
        size = 0
        for segment in segments[first:]:
            seconds += float(segment.duration)
            size += segment.size
            if seconds > 1.5 * target:
                break
            if seconds >= 0.5 * target:
                best = max(best, 8 * size / seconds)
    # A track shorter than half a target duration has no such run: its only rate is the peak.
    return math.ceil(best) if best else _average_bandwidth(segments)


def _finish_rendition(output_dir: Path, writer: _RenditionWriter) -> RenditionInfo:
    directory = writer.directory
    segments = _read_segments(directory)
    target = _target_duration(segments)
    _write_media_playlist(directory, segments, target)
    prefix = directory.relative_to(output_dir).as_posix()
    files = [_INIT_SECTION, *(segment.uri for segment in segments), _MEDIA_PLAYLIST, _PROGRESSIVE]
    return RenditionInfo(
        name=writer.spec.name,
        bit_rate=writer.spec.bit_rate,
        average_bandwidth=_average_bandwidth(segments),
        peak_bandwidth=_peak_bandwidth(segments, target),
        codecs=AAC_LC_CODECS,
        playlist=f"{prefix}/{_MEDIA_PLAYLIST}",
        progressive=f"{prefix}/{_PROGRESSIVE}",
        segment_count=len(segments),
        files=tuple(f"{prefix}/{name}" for name in files),
    )


def _write_master_playlist(output_dir: Path, renditions: list[RenditionInfo]) -> None:
    lines = ["#EXTM3U", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rendition in sorted(renditions, key=lambda info: info.peak_bandwidth):
        lines += [
            f"#EXT-X-STREAM-INF:BANDWIDTH={rendition.peak_bandwidth},"
            f"AVERAGE-BANDWIDTH={rendition.average_bandwidth},"
            f'CODECS="{rendition.codecs}"',
            rendition.playlist,
        ]
    (output_dir / MASTER_PLAYLIST).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The ladder


def _prepare_output_dir(output_dir: Path) -> bool:
    """Create or check the (empty) output directory; True when it was created here."""
    if "%" in str(output_dir.absolute()):
        # FFmpeg expands the segment file name as a pattern (%05d); no escape of a literal
        # percent sign in the directory part survives its HLS muxer.
        raise ValueError(f"output directory path may not contain '%': {output_dir}")
    if not output_dir.exists():
        output_dir.mkdir(parents=True)
        return True
    # Every file in the directory afterwards is part of the result and gets uploaded.
    if any(output_dir.iterdir()):
        raise FileExistsError(f"output directory is not empty: {output_dir}")
    return False


def _clear_output_dir(output_dir: Path, *, created: bool) -> None:
    if created:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for entry in output_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def transcode_ladder(
    source: Path, output_dir: Path, *, max_duration_s: float | None = None
) -> LadderResult:
    """Decode `source` once into the HLS + progressive AAC ladder, loudness and peaks."""
    source, output_dir = Path(source), Path(output_dir)
    if max_duration_s is not None:
        _refuse_if_longer(source, max_duration_s)
    created = _prepare_output_dir(output_dir)
    writers: list[_RenditionWriter] = []
    try:
        meter = LoudnessMeter()
        envelope = _PeakEnvelope()
        conformer = _Conformer()

        def feed(frames: list[AudioFrame]) -> None:
            for frame in frames:
                for writer in writers:
                    writer.encode(frame)
                meter.add(frame)
                envelope.add(frame)

        with open_audio_input(source) as container:
            for spec in RENDITIONS:
                writers.append(_RenditionWriter(output_dir / spec.name, spec))
            for decoded in _decoded_frames(container, source, max_duration_s):
                feed(conformer.convert(decoded))
            feed(conformer.convert(None))
        for writer in writers:
            writer.encode(None)
        finished: list[_RenditionWriter] = []
        while writers:
            finished.append(writers.pop(0))
            finished[-1].close()
        renditions = [_finish_rendition(output_dir, writer) for writer in finished]
        loudness = meter.result()
        (output_dir / PEAKS_FILE).write_text(
            json.dumps(envelope.document(), separators=(",", ":")), encoding="utf-8"
        )
        _write_master_playlist(output_dir, renditions)
    except BaseException:
        for writer in writers:
            # Already failing: the original error is the one to report.
            with contextlib.suppress(Exception):
                writer.close()
        _clear_output_dir(output_dir, created=created)
        raise
    files = sorted(
        [MASTER_PLAYLIST, PEAKS_FILE, *(name for info in renditions for name in info.files)]
    )
    return LadderResult(
        duration_ms=round(conformer.samples * 1000 / SAMPLE_RATE),
        loudness_lufs=loudness.integrated_lufs,
        true_peak_dbtp=loudness.true_peak_dbtp,
        loudness_range_lu=loudness.loudness_range_lu,
        track_gain_db=track_gain_db(
            loudness.integrated_lufs, true_peak_dbtp=loudness.true_peak_dbtp
        ),
        renditions=tuple(renditions),
        master_playlist=MASTER_PLAYLIST,
        peaks_file=PEAKS_FILE,
        files=tuple(files),
    )

"""EBU R128 / ITU-R BS.1770 loudness of decoded audio, measured by FFmpeg's `ebur128` filter.

The filter runs inside a PyAV filter graph: frames go in as they are decoded (so a transcode
can measure in the same pass), and it reports integrated loudness, loudness range and the
true peak (4x oversampled, as BS.1770 asks) as metadata on the frames it passes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.filter import Graph
from av.frame import Frame

from encore.media.probe import UnreadableAudio, describe_failure, open_audio_input

__all__ = [
    "SILENCE_LUFS",
    "TRUE_PEAK_FLOOR_DBTP",
    "Loudness",
    "LoudnessMeter",
    "measure_loudness",
    "track_gain_db",
]

SILENCE_LUFS = -70.0
"""BS.1770's absolute gate: what the meter reports when nothing is louder than it."""

TRUE_PEAK_FLOOR_DBTP = -70.0
"""Lowest true peak reported; the filter's metadata resolves 0.001 of full scale, so digital
silence (and anything quieter than about -66 dBTP) would otherwise be minus infinity."""

DEFAULT_TARGET_LUFS = -14.0
DEFAULT_PEAK_CEILING_DBTP = -1.0

_METADATA_PREFIX = "lavfi.r128."


@dataclass(frozen=True, slots=True)
class Loudness:
    """What the meter measured over a whole track."""

    integrated_lufs: float
    true_peak_dbtp: float
    loudness_range_lu: float


class LoudnessMeter:
    """An EBU R128 meter: `add` decoded frames in order, then read `result()` once."""

    def __init__(self) -> None:
        self._graph: Graph | None = None
        self._resampler: AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None
        self._layout = ""
        self._rate = 0
        self._samples = 0
        self._metadata: dict[str, str] = {}
        self._finished: Loudness | None = None

    def add(self, frame: AudioFrame) -> None:
        """Measure the next frame of the track (any sample format, layout or rate)."""
        if self._finished is not None:
            raise RuntimeError("the meter has already produced its result")
        if self._graph is None:
            self._layout, self._rate = frame.layout.name, frame.sample_rate
            self._graph = self._build_graph(self._layout, self._rate)
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        if signature != self._input:
            # A decoder may switch layout or rate mid-stream (MP3 does): the meter keeps the
            # first frame's, as a player would keep its output open.
            self._flush_resampler()
            self._resampler = AudioResampler(format="dbl", layout=self._layout, rate=self._rate)
            self._input = signature
        assert self._resampler is not None
        for converted in self._resampler.resample(frame):
            self._push(converted)

    def result(self) -> Loudness:
        """Integrated loudness, true peak and loudness range of everything added."""
        if self._finished is None:
            if self._graph is not None:
                self._flush_resampler()
                self._graph.push(None)
                self._drain()
            self._finished = _loudness_from_metadata(self._metadata)
        return self._finished

    @staticmethod
    def _build_graph(layout: str, sample_rate: int) -> Graph:
        graph = Graph()
        source = graph.add_abuffer(
            sample_rate=sample_rate,
            format="dbl",  # the filter's own sample format: no conversion inside the graph
            layout=layout,
            time_base=Fraction(1, sample_rate),
        )
        # metadata=1 puts the running values on every output frame, so no log parsing is
        # needed; peak=true adds the true peak from a 4x (at least 192 kHz) oversampled signal.
        meter = graph.add("ebur128", "metadata=1:peak=true")
        sink = graph.add("abuffersink")
        graph.link_nodes(source, meter, sink).configure()
        return graph

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            for converted in self._resampler.resample(None):
                self._push(converted)
            self._resampler = None
            self._input = None

    def _push(self, frame: AudioFrame) -> None:
        assert self._graph is not None
        # The meter keeps its own clock; decoders' timestamps may start anywhere or jump.
        frame.pts = self._samples
        frame.time_base = Fraction(1, self._rate)
        self._samples += frame.samples
        self._graph.push(frame)
        self._drain()

    def _drain(self) -> None:
        assert self._graph is not None
        while True:
            try:
                frame: Frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            metadata = frame.metadata
            # The values are running totals: the last frame's are the whole track's.
            if _METADATA_PREFIX + "I" in metadata:
                self._metadata = metadata


def _loudness_from_metadata(metadata: dict[str, str]) -> Loudness:
    if not metadata:
        # Too short for one 100 ms step of the meter: treat it as silence.
        return Loudness(SILENCE_LUFS, TRUE_PEAK_FLOOR_DBTP, 0.0)
    integrated = max(SILENCE_LUFS, float(metadata[_METADATA_PREFIX + "I"]))
    peak = float(metadata.get(_METADATA_PREFIX + "true_peak", "0"))
    peak_dbtp = 20 * math.log10(peak) if peak > 0 else -math.inf
    return Loudness(
        integrated_lufs=round(integrated, 2),
        true_peak_dbtp=round(max(TRUE_PEAK_FLOOR_DBTP, peak_dbtp), 2),
        loudness_range_lu=round(float(metadata.get(_METADATA_PREFIX + "LRA", "0")), 2),
    )


def measure_loudness(path: Path) -> Loudness:
    """Decode an audio file and measure its loudness; UnreadableAudio if it is not audio."""
    meter = LoudnessMeter()
    decoded = 0
    with open_audio_input(path) as container:
        stream = container.streams.audio[0]
        try:
            for frame in container.decode(stream):
                decoded += frame.samples
                meter.add(frame)
        except av.error.FFmpegError as exc:
            raise UnreadableAudio(f"corrupt audio: {describe_failure(exc)}") from None
    if decoded == 0:
        raise UnreadableAudio("no decodable audio (corrupt or truncated data)")
    return meter.result()


def track_gain_db(
    loudness_lufs: float,
    target: float = DEFAULT_TARGET_LUFS,
    *,
    true_peak_dbtp: float | None = None,
    peak_ceiling_dbtp: float = DEFAULT_PEAK_CEILING_DBTP,
) -> float:
    """Gain in dB that brings a track to `target` LUFS, raised no further than the peak allows."""
    if loudness_lufs <= SILENCE_LUFS:
        # Silence, or too short to measure (under 400 ms): no loudness to correct.
        return 0.0
    gain = target - loudness_lufs
    if true_peak_dbtp is not None and gain > 0:
        # Turning a quiet track up must not push its peaks into clipping; turning a loud one
        # down is always safe, so only positive gain is limited (as Spotify and Apple do).
        gain = max(0.0, min(gain, peak_ceiling_dbtp - true_peak_dbtp))
    return round(gain, 2)

"""transcode_ladder on synthesized tracks, checked with readers of its own: m3u8 and PyAV."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import av
import m3u8
import numpy as np
import pytest

from encore.media import ladder as ladder_module
from encore.media.ladder import (
    MASTER_PLAYLIST,
    PEAKS_FILE,
    RENDITIONS,
    SAMPLE_RATE,
    AudioTooLong,
    LadderResult,
    transcode_ladder,
)
from encore.media.probe import UnreadableAudio
from encore.media.synthesis import (
    A_MINOR,
    C_MAJOR,
    F_MAJOR,
    G_MAJOR,
    AudioFormat,
    Tone,
    synthesize_audio,
)
from tests.unit.media.test_loudness import (
    STEREO_TONE_LUFS,
    TONE_PEAK_DBFS,
    pink_noise_music,
    sine,
    write_wav,
)

SECONDS = 16.0  # three whole 6 s segments and a short last one
FORMATS = (AudioFormat.mp3, AudioFormat.flac, AudioFormat.ogg, AudioFormat.m4a, AudioFormat.wav)
TONE = Tone(chords=(A_MINOR, F_MAJOR, C_MAJOR, G_MAJOR), seconds=SECONDS, amplitude=0.5)
# The HLS demuxer opens the segments through the file protocol; only the test reads HLS.
HLS_READ_OPTIONS = {"protocol_whitelist": "file", "allowed_extensions": "ALL"}


@dataclass(frozen=True)
class Transcoded:
    source: Path
    output: Path
    result: LadderResult


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ladder")


@pytest.fixture(scope="module")
def sources(folder: Path) -> dict[str, Path]:
    """The chords in every import format, plus a mono track and a dense, noisy one."""
    made = {str(fmt): synthesize_audio(folder / "in" / f"chords.{fmt}", TONE) for fmt in FORMATS}
    made["mono"] = synthesize_audio(
        folder / "in" / "mono.flac", Tone(TONE.chords, SECONDS, channels=1, amplitude=0.5)
    )
    made["noise"] = write_wav(folder / "in" / "noise.wav", pink_noise_music(SECONDS), 44_100)
    return made


@pytest.fixture(scope="module")
def transcoded(folder: Path, sources: dict[str, Path]) -> dict[str, Transcoded]:
    """One ladder per source."""
    done = {}
    for name, source in sources.items():
        output = folder / "out" / name
        done[name] = Transcoded(source, output, transcode_ladder(source, output))
    return done


def decoded_seconds(path: Path, **options: str) -> tuple[float, int, int, str]:
    with av.open(str(path), options=options or None) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        context = stream.codec_context
        return samples / context.sample_rate, context.sample_rate, context.channels, context.name


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:  # a 64-bit size follows the type
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        assert size >= 8, f"bad box size at {offset}"
        offset += size
    return boxes


def is_relative(uri: str) -> bool:
    return not urlparse(uri).scheme and not uri.startswith("/") and ".." not in uri


ALL_CASES = [*(str(fmt) for fmt in FORMATS), "mono", "noise"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_result_lists_exactly_the_files_written(
    transcoded: dict[str, Transcoded], case: str
) -> None:
    done = transcoded[case]
    on_disk = sorted(
        path.relative_to(done.output).as_posix()
        for path in done.output.rglob("*")
        if path.is_file()
    )
    assert list(done.result.files) == on_disk
    assert done.result.master_playlist == MASTER_PLAYLIST
    assert done.result.peaks_file == PEAKS_FILE
    for rendition in done.result.renditions:
        assert set(rendition.files) <= set(done.result.files)
        assert rendition.playlist in rendition.files
        assert rendition.progressive in rendition.files


@pytest.mark.parametrize("case", ALL_CASES)
def test_media_playlists_follow_the_hls_spec(transcoded: dict[str, Transcoded], case: str) -> None:
    done = transcoded[case]
    track_seconds = done.result.duration_ms / 1000
    assert track_seconds == pytest.approx(SECONDS, abs=0.1)
    for rendition in done.result.renditions:
        path = done.output / rendition.playlist
        text = path.read_text()
        playlist = m3u8.load(str(path))
        assert playlist.playlist_type == "vod"
        assert playlist.is_endlist
        assert playlist.is_independent_segments
        assert playlist.target_duration == 6
        assert "#EXT-X-VERSION:7" in text
        assert [section.uri for section in playlist.segment_map] == ["init.mp4"]
        assert (path.parent / "init.mp4").is_file()
        durations = [segment.duration for segment in playlist.segments]
        assert len(durations) == math.ceil(SECONDS / 6) == rendition.segment_count
        # RFC 8216 4.3.3.1: each EXTINF, rounded to the nearest integer, <= the target.
        assert all(math.floor(d + 0.5) <= playlist.target_duration for d in durations)
        assert sum(durations) == pytest.approx(track_seconds, abs=playlist.target_duration)
        assert sum(durations) == pytest.approx(track_seconds, abs=0.1)
        for segment in playlist.segments:
            assert is_relative(segment.uri)
            assert segment.uri.endswith(".m4s")
            assert (path.parent / segment.uri).stat().st_size > 0


@pytest.mark.parametrize("case", ALL_CASES)
def test_master_playlist_declares_measured_bandwidth(
    transcoded: dict[str, Transcoded], case: str
) -> None:
    done = transcoded[case]
    master = m3u8.load(str(done.output / MASTER_PLAYLIST))
    assert master.is_variant
    assert [p.uri for p in master.playlists] == [f"{spec.name}/index.m3u8" for spec in RENDITIONS]
    bandwidths = [p.stream_info.bandwidth for p in master.playlists]
    assert bandwidths == sorted(bandwidths)
    for variant, rendition in zip(master.playlists, done.result.renditions, strict=True):
        info = variant.stream_info
        assert is_relative(variant.uri)
        assert info.codecs == "mp4a.40.2"
        assert info.bandwidth == rendition.peak_bandwidth
        assert info.average_bandwidth == rendition.average_bandwidth
        assert info.average_bandwidth <= info.bandwidth
        # Measured again here, from the playlist and the segment files.
        media = m3u8.load(str(done.output / variant.uri))
        folder = (done.output / variant.uri).parent
        sizes = [(folder / s.uri).stat().st_size for s in media.segments]
        seconds = sum(s.duration for s in media.segments)
        assert info.average_bandwidth == pytest.approx(8 * sum(sizes) / seconds, rel=0.001)
        whole_segments = [
            8 * size / s.duration
            for size, s in zip(sizes, media.segments, strict=True)
            if s.duration >= 3
        ]
        assert info.bandwidth >= max(whole_segments) - 1
        # Apple: the peak SHOULD be at most twice the average.
        assert info.bandwidth <= 2 * info.average_bandwidth


def test_bit_rates_are_within_ten_percent_of_nominal(transcoded: dict[str, Transcoded]) -> None:
    # Noise keeps the encoder busy at every rate; a few sine waves need fewer bits than 256k.
    done = transcoded["noise"]
    for rendition in done.result.renditions:
        assert rendition.average_bandwidth == pytest.approx(rendition.bit_rate, rel=0.10)
        assert rendition.peak_bandwidth == pytest.approx(rendition.bit_rate, rel=0.10)
        progressive = done.output / rendition.progressive
        seconds = decoded_seconds(progressive)[0]
        file_rate = 8 * progressive.stat().st_size / seconds
        assert file_rate == pytest.approx(rendition.bit_rate, rel=0.10)


@pytest.mark.parametrize("case", ALL_CASES)
def test_pyav_decodes_every_rendition(transcoded: dict[str, Transcoded], case: str) -> None:
    done = transcoded[case]
    track_seconds = done.result.duration_ms / 1000
    for rendition in done.result.renditions:
        seconds, rate, channels, codec = decoded_seconds(done.output / rendition.progressive)
        assert (rate, channels, codec) == (SAMPLE_RATE, 2, "aac")
        # The edit list trims the encoder's priming: the same length as the source.
        assert seconds == pytest.approx(track_seconds, abs=0.03)
        hls_seconds, rate, channels, codec = decoded_seconds(
            done.output / rendition.playlist, **HLS_READ_OPTIONS
        )
        assert (rate, channels, codec) == (SAMPLE_RATE, 2, "aac")
        assert hls_seconds == pytest.approx(track_seconds, abs=0.1)


@pytest.mark.parametrize("case", ALL_CASES)
def test_progressive_files_put_moov_before_mdat(
    transcoded: dict[str, Transcoded], case: str
) -> None:
    done = transcoded[case]
    for rendition in done.result.renditions:
        boxes = top_level_boxes(done.output / rendition.progressive)
        assert boxes[0] == "ftyp"
        assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize("case", ALL_CASES)
def test_peaks_json_draws_the_whole_track(transcoded: dict[str, Transcoded], case: str) -> None:
    done = transcoded[case]
    document = json.loads((done.output / PEAKS_FILE).read_text())
    assert document["version"] == 1
    assert document["sample_rate"] == SAMPLE_RATE
    peaks = document["peaks"]
    assert 1000 <= len(peaks) <= 2000
    covered = len(peaks) * document["samples_per_peak"] / SAMPLE_RATE
    assert covered == pytest.approx(
        done.result.duration_ms / 1000, abs=document["samples_per_peak"] / SAMPLE_RATE
    )
    assert all(0.0 <= value <= 1.0 for value in peaks)
    assert max(peaks) > 0.2
    # The synthesized chords fade in and out over 20 ms at every change: a quiet first peak.
    if case != "noise":
        assert peaks[0] < max(peaks)


def test_loudness_of_a_known_tone(folder: Path) -> None:
    source = write_wav(folder / "in" / "sine.wav", sine(12.0, rate=48_000), 48_000)
    result = transcode_ladder(source, folder / "out" / "sine")
    assert result.loudness_lufs == pytest.approx(STEREO_TONE_LUFS, abs=0.5)
    assert result.true_peak_dbtp == pytest.approx(TONE_PEAK_DBFS, abs=0.3)
    assert result.track_gain_db == pytest.approx(-14.0 - result.loudness_lufs, abs=0.01)
    assert result.duration_ms == 12_000
    peaks = json.loads((folder / "out" / "sine" / PEAKS_FILE).read_text())["peaks"]
    assert max(peaks) == pytest.approx(10 ** (TONE_PEAK_DBFS / 20), rel=0.02)


def test_loudness_is_the_same_in_every_format(transcoded: dict[str, Transcoded]) -> None:
    reference = transcoded["wav"].result.loudness_lufs
    for fmt in FORMATS:
        assert transcoded[str(fmt)].result.loudness_lufs == pytest.approx(reference, abs=0.5)
    # Mono is spread over both channels at -3 dB each: the same power, the same loudness.
    assert transcoded["mono"].result.loudness_lufs == pytest.approx(reference - 3.01, abs=0.5)


def test_a_short_silent_track(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "blip.wav", np.zeros((2, 13_230), np.float32), 44_100)
    result = transcode_ladder(source, tmp_path / "out")
    assert result.duration_ms == 300
    assert result.track_gain_db == 0.0  # nothing to measure, nothing to correct
    assert [r.segment_count for r in result.renditions] == [1, 1, 1]
    peaks = json.loads((tmp_path / "out" / PEAKS_FILE).read_text())["peaks"]
    assert peaks and set(peaks) == {0.0}
    master = m3u8.load(str(tmp_path / "out" / MASTER_PLAYLIST))
    assert all(p.stream_info.bandwidth > 0 for p in master.playlists)


def test_damage_inside_an_mp3_is_skipped_like_a_player_would(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    data = bytearray(sources["mp3"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(range(256)) * 7 + bytes(208)
    source = tmp_path / "scratched.mp3"
    source.write_bytes(bytes(data))
    result = transcode_ladder(source, tmp_path / "out")
    assert result.duration_ms / 1000 == pytest.approx(SECONDS, abs=0.5)


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.fixture
def short_wav(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "short.wav", sine(8.0, rate=44_100), 44_100)


def test_not_audio_is_unreadable(tmp_path: Path) -> None:
    source = tmp_path / "song.mp3"
    source.write_bytes(bytes(range(256)) * 64)
    output = tmp_path / "out"
    with pytest.raises(UnreadableAudio):
        transcode_ladder(source, output)
    assert not output.exists()


def test_empty_file_is_unreadable(tmp_path: Path) -> None:
    source = tmp_path / "empty.flac"
    source.write_bytes(b"")
    with pytest.raises(UnreadableAudio, match="empty"):
        transcode_ladder(source, tmp_path / "out")


def test_header_only_file_is_unreadable(sources: dict[str, Path], tmp_path: Path) -> None:
    data = sources["flac"].read_bytes()
    source = tmp_path / "cut.flac"
    source.write_bytes(data[:600])
    output = tmp_path / "out"
    with pytest.raises(UnreadableAudio):
        transcode_ladder(source, output)
    assert not output.exists()


@pytest.mark.parametrize("fmt", ["wav", "flac", "m4a"])
def test_truncated_file_is_unreadable(sources: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    # These formats state their length in the header; half the data is a cut-off upload.
    data = sources[fmt].read_bytes()
    source = tmp_path / f"half.{fmt}"
    source.write_bytes(data[: len(data) // 2])
    output = tmp_path / "out"
    with pytest.raises(UnreadableAudio, match=r"truncated|corrupt"):
        transcode_ladder(source, output)
    assert not output.exists()


def test_a_longer_track_is_refused_before_decoding(
    short_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded a track that was already known to be too long")

    monkeypatch.setattr(ladder_module, "_decoded_frames", no_decoding)
    with pytest.raises(AudioTooLong) as raised:
        transcode_ladder(short_wav, tmp_path / "out", max_duration_s=5.0)
    assert raised.value.limit_s == 5.0
    assert "5 s" in str(raised.value)
    assert isinstance(raised.value, UnreadableAudio)
    assert not (tmp_path / "out").exists()


def test_decoding_stops_at_the_limit_when_packets_understate_it(
    short_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should packet timestamps lie, counting decoded samples still stops at the limit.
    monkeypatch.setattr(ladder_module, "_refuse_if_longer", lambda *args: None)
    encoded: list[int] = []
    original = ladder_module._RenditionWriter.encode

    def counting(self: ladder_module._RenditionWriter, frame: av.AudioFrame | None) -> None:
        if frame is not None and self.spec is RENDITIONS[0]:
            encoded.append(frame.samples)
        original(self, frame)

    monkeypatch.setattr(ladder_module._RenditionWriter, "encode", counting)
    output = tmp_path / "out"
    with pytest.raises(AudioTooLong):
        transcode_ladder(short_wav, output, max_duration_s=3.0)
    assert sum(encoded) <= 3.0 * SAMPLE_RATE
    assert not output.exists()


def test_a_track_within_the_limit_is_transcoded(short_wav: Path, tmp_path: Path) -> None:
    result = transcode_ladder(short_wav, tmp_path / "out", max_duration_s=8.5)
    assert result.duration_ms == 8_000
    assert [r.segment_count for r in result.renditions] == [2, 2, 2]


def test_a_failure_leaves_an_existing_output_directory_empty(tmp_path: Path) -> None:
    source = tmp_path / "noise.ogg"
    source.write_bytes(b"OggS" + bytes(4000))
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(UnreadableAudio):
        transcode_ladder(source, output)
    assert output.is_dir()
    assert list(output.iterdir()) == []


def test_output_directory_must_be_empty(short_wav: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("left over")
    with pytest.raises(FileExistsError):
        transcode_ladder(short_wav, output)
    assert [p.name for p in output.iterdir()] == ["stale.txt"]


def test_output_directory_may_not_contain_a_percent_sign(short_wav: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="%"):
        transcode_ladder(short_wav, tmp_path / "100%" / "out")
    assert not (tmp_path / "100%").exists()


def test_output_directory_may_contain_colons_and_spaces(short_wav: Path, tmp_path: Path) -> None:
    output = tmp_path / "a: b" / "out"
    result = transcode_ladder(short_wav, output)
    assert all((output / name).is_file() for name in result.files)


# ---------------------------------------------------------------------------------------------
# Pieces


def test_conformer_follows_a_change_of_format_mid_stream() -> None:
    conformer = ladder_module._Conformer()
    out = []
    for rate, layout in ((48_000, "mono"), (22_050, "stereo"), (44_100, "stereo")):
        samples = np.zeros((1 if layout == "mono" else 2, rate // 2), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 12345  # decoder timestamps are ignored
        frame.time_base = Fraction(1, rate)
        out += conformer.convert(frame)
    out += conformer.convert(None)
    assert {(f.sample_rate, f.layout.name, f.format.name) for f in out} == {
        (SAMPLE_RATE, "stereo", "fltp")
    }
    position = 0
    for frame in out:
        assert frame.pts == position
        position += frame.samples
    assert position == conformer.samples
    assert position == pytest.approx(1.5 * SAMPLE_RATE, abs=64)


def test_peak_bandwidth_counts_a_short_last_segment_with_its_neighbour() -> None:
    segment = ladder_module._Segment
    segments = [
        segment("6.0", "a.m4s", 48_000),  # 64 kbit/s
        segment("6.0", "b.m4s", 48_000),
        segment("1.0", "c.m4s", 20_000),  # 160 kbit/s alone, but only 1 s long
    ]
    # The 1 s segment is shorter than half the target: it only counts together with b.
    assert ladder_module._peak_bandwidth(segments, 6) == math.ceil(8 * 68_000 / 7.0)
    assert ladder_module._average_bandwidth(segments) == math.ceil(8 * 116_000 / 13.0)
    assert ladder_module._target_duration([segment("6.49", "x", 1)]) == 6
    assert ladder_module._target_duration([segment("6.5", "x", 1)]) == 7

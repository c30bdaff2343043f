"""probe_audio on synthesized files of every format, and on files that are not audio."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import av
import pytest

from encore.media import probe as probe_module
from encore.media.probe import UnreadableAudio, probe_audio, sniff_demuxer
from encore.media.synthesis import AudioFormat, Tone, synthesize_audio

EXPECTED = {
    AudioFormat.mp3: ("mp3", "mp3", 44_100),
    AudioFormat.flac: ("flac", "flac", 44_100),
    AudioFormat.ogg: ("opus", "ogg", 48_000),
    AudioFormat.m4a: ("aac", "mp4", 44_100),
    AudioFormat.aac: ("aac", "aac", 44_100),
    AudioFormat.wav: ("pcm_s16le", "wav", 44_100),
    AudioFormat.aiff: ("pcm_s16be", "aiff", 44_100),
}


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[AudioFormat, Path]:
    """One 1.5 s stereo file per format."""
    folder = tmp_path_factory.mktemp("probe")
    return {
        audio_format: synthesize_audio(folder / f"tone.{audio_format.value}", Tone(seconds=1.5))
        for audio_format in AudioFormat
    }


@pytest.mark.parametrize("audio_format", list(AudioFormat), ids=str)
def test_probe_reads_every_format(
    audio_files: dict[AudioFormat, Path], audio_format: AudioFormat
) -> None:
    probe = probe_audio(audio_files[audio_format])

    codec, container, sample_rate = EXPECTED[audio_format]
    assert (probe.codec, probe.container, probe.sample_rate) == (codec, container, sample_rate)
    assert probe.channels == 2
    # Encoders pad a little (priming, frame rounding); raw ADTS is estimated from the bit rate.
    assert 1400 <= probe.duration_ms <= 1600
    assert probe.bit_rate is None or probe.bit_rate > 0


def test_probe_of_a_mono_file(tmp_path: Path) -> None:
    path = synthesize_audio(tmp_path / "mono.flac", Tone(seconds=1.0, channels=1))

    assert probe_audio(path).channels == 1


def test_probe_does_not_trust_the_extension(
    tmp_path: Path, audio_files: dict[AudioFormat, Path]
) -> None:
    disguised = tmp_path / "really-flac.mp3"
    disguised.write_bytes(audio_files[AudioFormat.flac].read_bytes())

    assert probe_audio(disguised).container == "flac"


def test_measured_duration_when_the_header_has_none(audio_files: dict[AudioFormat, Path]) -> None:
    path = audio_files[AudioFormat.flac]

    duration = probe_module._measured_duration(f"file:{path}", "flac")

    assert abs(float(duration) - 1.5) < 0.05


def test_sniff_demuxer_recognizes_content(audio_files: dict[AudioFormat, Path]) -> None:
    expected = {"mp3": "mp3", "flac": "flac", "ogg": "ogg", "m4a": "mov", "aac": "aac"}
    for audio_format, demuxer in expected.items():
        assert sniff_demuxer(audio_files[AudioFormat(audio_format)]) == demuxer
    assert sniff_demuxer(audio_files[AudioFormat.wav]) == "wav"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.mp3", b"", "empty file"),
        ("notes.mp3", b"These are my lyrics, not an mp3.\n" * 20, "not an audio file"),
        ("noise.flac", bytes(range(256)) * 8, "audio"),
        ("image.m4a", b"\x89PNG\r\n\x1a\n" + b"\x00" * 512, "not an audio file"),
    ],
)
def test_not_audio_is_unreadable(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(UnreadableAudio, match=reason):
        probe_audio(path)


def test_truncated_file_is_unreadable(tmp_path: Path, audio_files: dict[AudioFormat, Path]) -> None:
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(audio_files[AudioFormat.flac].read_bytes()[:600])

    with pytest.raises(UnreadableAudio):
        probe_audio(truncated)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableAudio, match="cannot read file"):
        probe_audio(tmp_path / "gone.mp3")


def test_wav_without_samples_is_unreadable(tmp_path: Path) -> None:
    path = synthesize_audio(tmp_path / "tone.wav", Tone(seconds=0.5))
    header_only = tmp_path / "silent.wav"
    header_only.write_bytes(path.read_bytes()[:44])

    with pytest.raises(UnreadableAudio):
        probe_audio(header_only)


class FifoWatch:
    """A named pipe that records whether anyone opened it for reading while watched."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.opened = False
        self._watching = threading.Event()
        self._watching.set()
        self._thread = threading.Thread(target=self._wait_for_reader, daemon=True)
        self._thread.start()

    def _wait_for_reader(self) -> None:
        # Opening a pipe for writing blocks until a reader opens it.
        with self.path.open("wb"):
            self.opened = self._watching.is_set()

    def stop(self) -> bool:
        """Stop watching; True if the pipe was opened for reading meanwhile."""
        self._watching.clear()
        descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # release the writer
        self._thread.join(timeout=10)
        os.close(descriptor)
        return self.opened


@pytest.mark.parametrize(
    ("name", "playlist"),
    [
        ("concat.mp3", "ffconcat version 1.0\nfile 'referenced.flac'\n"),
        ("absolute.mp3", "ffconcat version 1.0\nfile '{path}'\n"),
        (
            "playlist.mp3",
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
            "#EXTINF:10.0,\n{path}\n#EXT-X-ENDLIST\n",
        ),
        ("playlist.aac", "#EXTM3U\n#EXTINF:10,\nreferenced.flac\n"),
    ],
)
def test_playlist_disguised_as_audio_is_refused_unopened(
    tmp_path: Path, name: str, playlist: str
) -> None:
    referenced = tmp_path / "referenced.flac"
    watch = FifoWatch(referenced)
    disguised = tmp_path / name
    disguised.write_text(playlist.format(path=referenced))
    try:
        with pytest.raises(UnreadableAudio, match="not an audio file"):
            probe_audio(disguised)
    finally:
        opened = watch.stop()

    assert not opened, "FFmpeg opened the file the playlist references"


def test_the_fifo_watch_sees_an_unrestricted_ffmpeg_open_it(tmp_path: Path) -> None:
    # The control for the test above: plain FFmpeg does follow the concat script.
    referenced = tmp_path / "referenced.flac"
    watch = FifoWatch(referenced)
    script = tmp_path / "concat.txt"
    script.write_text("ffconcat version 1.0\nfile 'referenced.flac'\n")
    try:
        with contextlib.suppress(av.error.FFmpegError):
            av.open(str(script), format="concat").close()
    finally:
        opened = watch.stop()

    assert opened

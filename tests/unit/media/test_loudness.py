"""EBU R128 loudness and true peak of known signals, and the track gain derived from them."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from encore.media.loudness import (
    SILENCE_LUFS,
    TRUE_PEAK_FLOOR_DBTP,
    LoudnessMeter,
    measure_loudness,
    track_gain_db,
)
from encore.media.probe import UnreadableAudio
from encore.media.synthesis import A_MINOR, C_MAJOR, AudioFormat, Tone, synthesize_audio

# BS.1770 is calibrated so that a full-scale 997 Hz sine in one channel reads -3.01 LUFS
# (the K-weighting filter is within 0.01 dB of unity there). Two identical channels carry
# twice the power: +3.01 dB. A sine whose peak is at -20 dBFS, in both channels, therefore
# reads -3.01 - 20 + 3.01 = -20.0 LUFS, and its true peak is -20 dBTP.
TONE_HZ = 997.0
TONE_PEAK_DBFS = -20.0
STEREO_TONE_LUFS = -20.0
MONO_TONE_LUFS = -23.01


def sine(
    seconds: float, *, rate: int = 48_000, channels: int = 2, peak_dbfs: float = TONE_PEAK_DBFS
) -> NDArray[np.float32]:
    """A TONE_HZ sine with its peak at `peak_dbfs`, the same in every channel: (channels, n)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * TONE_HZ * t)
    return np.tile(wave.astype(np.float32), (channels, 1))


def pink_noise_music(seconds: float, *, rate: int = 44_100, seed: int = 7) -> NDArray[np.float32]:
    """Stereo pink-ish noise under a chord: dense enough that an AAC encoder spends its bits."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spectrum = rng.standard_normal((2, n // 2 + 1)) + 1j * rng.standard_normal((2, n // 2 + 1))
    spectrum /= np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))  # 1/f power
    noise = np.fft.irfft(spectrum, n)
    noise *= 0.15 / np.abs(noise).max()
    t = np.arange(n) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) * 0.1
    return (noise + chord).astype(np.float32)


def write_wav(path: Path, samples: NDArray[np.float32], rate: int) -> Path:
    """Write float samples shaped (channels, n) to a 32-bit float WAV file."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def frames_of(samples: NDArray[np.float32], rate: int, size: int = 4096) -> list[av.AudioFrame]:
    """Split (channels, n) float samples into planar-float PyAV frames."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    frames = []
    for start in range(0, samples.shape[1], size):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, start : start + size]), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frames.append(frame)
    return frames


def meter_reading(frames: list[av.AudioFrame]) -> LoudnessMeter:
    meter = LoudnessMeter()
    for frame in frames:
        meter.add(frame)
    return meter


@pytest.mark.parametrize(("channels", "expected"), [(2, STEREO_TONE_LUFS), (1, MONO_TONE_LUFS)])
def test_sine_at_minus_20_dbfs_reads_its_computed_loudness(channels: int, expected: float) -> None:
    loudness = meter_reading(frames_of(sine(8.0, channels=channels), 48_000)).result()
    assert loudness.integrated_lufs == pytest.approx(expected, abs=0.5)
    assert loudness.true_peak_dbtp == pytest.approx(TONE_PEAK_DBFS, abs=0.2)
    assert loudness.loudness_range_lu == pytest.approx(0.0, abs=0.5)


def test_measure_loudness_decodes_a_file(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "tone.wav", sine(6.0, rate=44_100), 44_100)
    loudness = measure_loudness(path)
    assert loudness.integrated_lufs == pytest.approx(STEREO_TONE_LUFS, abs=0.5)
    assert loudness.true_peak_dbtp == pytest.approx(TONE_PEAK_DBFS, abs=0.2)


def test_ten_db_quieter_reads_ten_lu_lower() -> None:
    loud = meter_reading(frames_of(sine(5.0, peak_dbfs=-10.0), 48_000)).result()
    quiet = meter_reading(frames_of(sine(5.0, peak_dbfs=-20.0), 48_000)).result()
    assert loud.integrated_lufs - quiet.integrated_lufs == pytest.approx(10.0, abs=0.1)


def test_true_peak_sees_inter_sample_peaks() -> None:
    # fs/4 at 45 degrees: every sample sits at 0.707 of the wave's real peak (-3 dB).
    rate = 48_000
    n = np.arange(rate * 3)
    fade_in = np.minimum(1.0, n / (rate / 2))  # an abrupt start would ring in the oversampler
    wave = 0.5 * fade_in * np.sin(np.pi / 2 * n + np.pi / 4)
    samples = np.tile(wave.astype(np.float32), (2, 1))
    sample_peak_db = 20 * math.log10(np.abs(samples).max())
    assert sample_peak_db == pytest.approx(20 * math.log10(0.5) - 3.01, abs=0.01)
    loudness = meter_reading(frames_of(samples, rate)).result()
    assert loudness.true_peak_dbtp == pytest.approx(20 * math.log10(0.5), abs=0.5)


def test_silence_reads_the_absolute_gate_and_the_peak_floor() -> None:
    loudness = meter_reading(frames_of(np.zeros((2, 48_000 * 2), np.float32), 48_000)).result()
    assert loudness.integrated_lufs == SILENCE_LUFS
    assert loudness.true_peak_dbtp == TRUE_PEAK_FLOOR_DBTP


def test_a_meter_with_no_audio_reports_silence() -> None:
    loudness = LoudnessMeter().result()
    assert loudness.integrated_lufs == SILENCE_LUFS


def test_meter_follows_a_change_of_rate_and_layout_mid_stream() -> None:
    frames = frames_of(sine(4.0, rate=44_100), 44_100) + frames_of(
        sine(4.0, rate=48_000, channels=1, peak_dbfs=-20.0 + 3.01), 48_000
    )
    loudness = meter_reading(frames).result()
    # The mono half is upmixed at -3 dB per channel: the same power as the stereo half.
    assert loudness.integrated_lufs == pytest.approx(STEREO_TONE_LUFS, abs=0.5)


def test_meter_result_is_final() -> None:
    meter = meter_reading(frames_of(sine(1.0), 48_000))
    first = meter.result()
    assert meter.result() is first
    with pytest.raises(RuntimeError):
        meter.add(frames_of(sine(0.1), 48_000)[0])


@pytest.mark.parametrize(
    "audio_format",
    [AudioFormat.mp3, AudioFormat.flac, AudioFormat.ogg, AudioFormat.m4a, AudioFormat.wav],
    ids=str,
)
def test_every_import_format_measures_alike(tmp_path: Path, audio_format: AudioFormat) -> None:
    tone = Tone(chords=(A_MINOR, C_MAJOR), seconds=4.0, amplitude=0.3)
    reference = measure_loudness(synthesize_audio(tmp_path / "reference.wav", tone))
    encoded = measure_loudness(synthesize_audio(tmp_path / f"tone.{audio_format}", tone))
    assert encoded.integrated_lufs == pytest.approx(reference.integrated_lufs, abs=0.5)
    assert encoded.true_peak_dbtp == pytest.approx(reference.true_peak_dbtp, abs=1.0)


def test_measure_loudness_refuses_what_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_bytes(b"these are not the droids you are looking for\n" * 200)
    with pytest.raises(UnreadableAudio):
        measure_loudness(path)


@pytest.mark.parametrize(
    ("loudness", "peak", "expected"),
    [
        (-20.0, None, 6.0),  # quiet: turned up to -14 LUFS
        (-8.0, None, -6.0),  # loud: turned down
        (-20.0, -10.0, 6.0),  # the peak ends at -4 dBTP: room to spare
        (-20.0, -3.0, 2.0),  # raised only until the peak reaches -1 dBTP
        (-20.0, 0.5, 0.0),  # already over the ceiling: not raised at all, never lowered
        (-8.0, 0.5, -6.0),  # turning down is always allowed
        (SILENCE_LUFS, None, 0.0),  # silence, or too short to measure: left alone
        (SILENCE_LUFS, TRUE_PEAK_FLOOR_DBTP, 0.0),
    ],
)
def test_track_gain(loudness: float, peak: float | None, expected: float) -> None:
    assert track_gain_db(loudness, true_peak_dbtp=peak) == pytest.approx(expected)


def test_track_gain_to_another_target() -> None:
    assert track_gain_db(-23.0, target=-16.0) == pytest.approx(7.0)

"""Transcode speed: x-realtime per core of the full ladder against the ffmpeg command line.

Synthesizes 10 minutes of chords into a FLAC file once (cached under the temp directory, not
timed), then, in the same run, measures

- Encore: `encore.media.ladder.transcode_ladder` (one decode; AAC-LC 64/128/256 kbit/s, each
  to HLS fMP4 with 6 s segments and to a progressive M4A; EBU R128 loudness and true peak;
  waveform peaks; playlists with measured bandwidth), in this process;
- the ffmpeg CLI producing the same three renditions, each encoded once and written to HLS
  fMP4 (6 s) and a faststart M4A through the tee muxer: the fastest way the CLI does it (it
  measures no loudness and writes no peaks, so it does less work than Encore);
- the floor: FFmpeg's AAC encoder alone (PyAV, the three bit rates, no decoding or muxing)
  on the first two minutes, which bounds what any pipeline around it can reach.

x-realtime per core is audio seconds per CPU second (user + system, all threads), so it does
not depend on how many cores a run happens to use; wall-clock x-realtime is reported as well.
Goal: >= 0.9x the ffmpeg CLI and >= 30x realtime per core. Run with
`python -m bench.transcode`; needs the `ffmpeg` CLI (installed from Debian's packages when
missing and running as root). The result is printed and written to
bench/results/transcode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av

from bench.machine import cpu_model
from encore.media.ladder import RENDITIONS, SAMPLE_RATE, SEGMENT_SECONDS, transcode_ladder
from encore.media.synthesis import (
    A_MINOR,
    C_MAJOR,
    F_MAJOR,
    G_MAJOR,
    Tone,
    synthesize_audio,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "transcode.json"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "encore-bench-transcode"
GOAL_RATIO_TO_FFMPEG = 0.9
GOAL_X_REALTIME_PER_CORE = 30.0
INPUT_VERSION = 1  # bump when the synthesized input changes, to rebuild the cache
FLOOR_SECONDS = 120.0


def build_input(cache: Path, seconds: float) -> Path:
    """A FLAC file of `seconds` of changing chords (reused when already in the cache)."""
    path = cache / f"v{INPUT_VERSION}-chords-{seconds:g}s.flac"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    partial = path.with_suffix(".partial.flac")
    # A new chord every 1.5 s, as in a song: the encoder sees changing spectra, not one tone.
    progression = (A_MINOR, F_MAJOR, C_MAJOR, G_MAJOR)
    chords = progression * max(1, round(seconds / 1.5 / len(progression)))
    synthesize_audio(partial, Tone(chords=chords, seconds=seconds, amplitude=0.5))
    partial.rename(path)
    print(f"input synthesized in {time.perf_counter() - started:.1f} s: {path}", file=sys.stderr)
    return path


def audio_seconds(path: Path) -> float:
    """Length of the first audio stream, from decoded samples."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def ensure_ffmpeg() -> str | None:
    """Path of the ffmpeg CLI, installing Debian's package when missing and root."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    if os.geteuid() != 0:
        print(
            "ffmpeg CLI not found and not running as root: install it (apt-get install ffmpeg)"
            " to compare against it; measuring Encore alone.",
            file=sys.stderr,
        )
        return None
    print("installing ffmpeg from Debian's packages ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "ffmpeg"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("ffmpeg")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def figures(seconds: float, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "x_realtime_wall": round(seconds / wall, 2),
        "x_realtime_per_core": round(seconds / cpu, 2),
    }


def measure_encore(source: Path, seconds: float, scratch: Path) -> dict[str, Any]:
    """Run transcode_ladder in this process; wall and CPU time of this process."""
    output = scratch / "encore"
    started, cpu_started = time.perf_counter(), time.process_time()
    result = transcode_ladder(source, output)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    measured = figures(seconds, wall, cpu)
    measured["renditions"] = {
        r.name: {"average_bandwidth": r.average_bandwidth, "segments": r.segment_count}
        for r in result.renditions
    }
    measured["loudness_lufs"] = result.loudness_lufs
    shutil.rmtree(output)
    return measured


def ffmpeg_command(ffmpeg: str, source: Path) -> list[str]:
    """The CLI doing the same ladder: resample once, split, encode each rate once, tee out."""
    splits = "".join(f"[a{index}]" for index in range(len(RENDITIONS)))
    command = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-i",
        str(source),
        "-filter_complex",
        f"[0:a]aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
        f"asplit={len(RENDITIONS)}{splits}",
    ]
    for index, spec in enumerate(RENDITIONS):
        hls = (
            f"[f=hls:hls_time={SEGMENT_SECONDS}:hls_playlist_type=vod:hls_segment_type=fmp4"
            f":hls_fmp4_init_filename=init.mp4"
            f":hls_segment_filename={spec.name}/segment_%05d.m4s]{spec.name}/index.m3u8"
        )
        progressive = f"[f=ipod:movflags=+faststart]{spec.name}/audio.m4a"
        command += [
            "-map",
            f"[a{index}]",
            "-c:a",
            "aac",
            "-b:a",
            str(spec.bit_rate),
            "-f",
            "tee",
            f"{hls}|{progressive}",
        ]
    return command


def measure_ffmpeg(ffmpeg: str, source: Path, seconds: float, scratch: Path) -> dict[str, Any]:
    """Run the ffmpeg CLI; wall time and the child's CPU time."""
    output = scratch / "ffmpeg"
    for spec in RENDITIONS:
        (output / spec.name).mkdir(parents=True)
    command = ffmpeg_command(ffmpeg, source)
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    subprocess.run(command, check=True, cwd=output)
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_started
    measured = figures(seconds, wall, cpu)
    renditions = {}
    for spec in RENDITIONS:
        segments = sorted((output / spec.name).glob("segment_*.m4s"))
        size = sum(segment.stat().st_size for segment in segments)
        renditions[spec.name] = {
            "average_bandwidth": round(8 * size / seconds),
            "segments": len(segments),
        }
    measured["renditions"] = renditions
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=True)
    measured["version"] = version.stdout.splitlines()[0]
    shutil.rmtree(output)
    return measured


def measure_encoder_floor(source: Path) -> dict[str, Any]:
    """CPU time of the three AAC encoders alone over the first FLOOR_SECONDS of the input."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
    frames: list[av.AudioFrame] = []
    samples = 0
    with av.open(str(source)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                out.pts = samples
                samples += out.samples
                frames.append(out)
            if samples >= FLOOR_SECONDS * SAMPLE_RATE:
                break
    seconds = samples / SAMPLE_RATE
    per_rendition = {}
    total = 0.0
    for spec in RENDITIONS:
        encoder = av.CodecContext.create("aac", "w")
        assert isinstance(encoder, av.AudioCodecContext)
        encoder.sample_rate = SAMPLE_RATE
        encoder.layout = "stereo"
        encoder.format = "fltp"
        encoder.bit_rate = spec.bit_rate
        encoder.open()
        cpu_started = time.process_time()
        for frame in frames:
            encoder.encode(frame)
        encoder.encode(None)
        cpu = time.process_time() - cpu_started
        total += cpu
        per_rendition[spec.name] = round(seconds / cpu, 2)
    return {
        "audio_s": round(seconds, 1),
        "cpu_s": round(total, 3),
        "x_realtime_per_core": round(seconds / total, 2),
        "x_realtime_per_core_by_rendition": per_rendition,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print a table, write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the input")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the input is kept")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)

    source = build_input(args.cache, args.seconds)
    seconds = audio_seconds(source)
    ffmpeg = ensure_ffmpeg()
    with tempfile.TemporaryDirectory(prefix="encore-bench-transcode-") as scratch:
        encore = measure_encore(source, seconds, Path(scratch))
        cli = measure_ffmpeg(ffmpeg, source, seconds, Path(scratch)) if ffmpeg else None
    floor = measure_encoder_floor(source)

    ratio = round(encore["x_realtime_per_core"] / cli["x_realtime_per_core"], 3) if cli else None
    result: dict[str, Any] = {
        "benchmark": "transcode",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "python": platform.python_version(),
        "pyav": av.__version__,
        "pyav_ffmpeg": av.ffmpeg_version_info,
        "input": {"seconds": round(seconds, 3), "format": "flac 44.1 kHz stereo, synthesized"},
        "encore": encore,
        "ffmpeg_cli": cli,
        "aac_encoder_floor": floor,
        "ratio_per_core_to_ffmpeg_cli": ratio,
        "goal": {
            "ratio_to_ffmpeg_cli": GOAL_RATIO_TO_FFMPEG,
            "x_realtime_per_core": GOAL_X_REALTIME_PER_CORE,
        },
        "goal_met": {
            "ratio_to_ffmpeg_cli": ratio is not None and ratio >= GOAL_RATIO_TO_FFMPEG,
            "x_realtime_per_core": encore["x_realtime_per_core"] >= GOAL_X_REALTIME_PER_CORE,
        },
    }

    print(f"\nTranscode ladder, {seconds:.0f} s of audio ({cpu_model()}, {os.cpu_count()} cores)\n")
    print("| pipeline | CPU s | wall s | x-realtime per core | x-realtime wall |")
    print("|---|---:|---:|---:|---:|")
    rows = [("Encore transcode_ladder", encore)]
    if cli:
        rows.append(("ffmpeg CLI (same renditions)", cli))
    for name, measured in rows:
        print(
            f"| {name} | {measured['cpu_s']:.1f} | {measured['wall_s']:.1f} | "
            f"{measured['x_realtime_per_core']:.1f}x | {measured['x_realtime_wall']:.1f}x |"
        )
    print(
        f"| AAC encoders alone (floor, first {floor['audio_s']:.0f} s) | "
        f"{floor['cpu_s']:.1f} | - | {floor['x_realtime_per_core']:.1f}x | - |"
    )
    if ratio is not None:
        print(
            f"\nEncore / ffmpeg CLI per core: {ratio:.2f}x "
            f"(goal >= {GOAL_RATIO_TO_FFMPEG}: "
            f"{'met' if result['goal_met']['ratio_to_ffmpeg_cli'] else 'NOT met'})"
        )
    print(
        f"Encore per core: {encore['x_realtime_per_core']:.1f}x realtime (goal >= "
        f"{GOAL_X_REALTIME_PER_CORE:g}x: "
        f"{'met' if result['goal_met']['x_realtime_per_core'] else 'NOT met'})"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"results written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

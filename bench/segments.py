"""Segment throughput: one HLS segment fetched again and again, from `encore serve`, from nginx
serving the same file straight from disk (the reference), and through the nginx edge
(deploy/nginx/edge.conf, cache hits), all measured in the same run with wrk.

Goals: Encore at least 0.5 of nginx's rate; the edge at least 0.9. Run with
`python -m bench.segments` (`make bench-deps edge-deps` first); results go to
bench/results/segments.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.catalog_api import _cpu_split, _pinned, free_port, running_server
from bench.machine import cpu_model
from bench.playback_start import _prepare
from encore.auth.secrets import decode_master_key
from encore.streaming.signing import MediaSigner

REPO_ROOT = Path(__file__).resolve().parents[1]
EDGE_DIR = REPO_ROOT / "deploy" / "nginx"
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "segments.json"
NGINX = Path("/usr/sbin/nginx")
GOALS = {"Encore": 0.5, "Encore on granian": 0.5, "edge (cache hits)": 0.9}


def _nginx_config(workdir: Path, *, port: int, body: str) -> str:
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f'    {kind}_temp_path "{workdir / "temp" / kind}";'
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As deploy/nginx/nginx.conf.example: compiled regexes (the edge's location and checks).
    return f"""
{user}
pcre_jit on;
worker_processes 1;
pid "{workdir / "nginx.pid"}";
error_log "{workdir / "error.log"}" warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    # As deploy/nginx/nginx.conf.example: tcp_nopush stalls keep-alive cache hits ~40 ms.
    tcp_nopush off;
    tcp_nodelay on;
{temp}
    {body.replace("PORT", str(port))}
}}
"""


@contextlib.contextmanager
def running_nginx(
    workdir: Path, config: str, port: int, cpus: tuple[int, ...] | None
) -> Iterator[str]:
    """nginx with this config in the foreground on a loopback port; yield its base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "temp" / kind).mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [str(NGINX), "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
        preexec_fn=_pinned(cpus),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + "/", timeout=1)
                break
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_wrk(
    url: str, *, connections: int, seconds: int, cpus: tuple[int, ...] | None
) -> dict[str, float]:
    """wrk against one URL: requests/s and latency percentiles (ms)."""
    completed = subprocess.run(
        ["wrk", "--latency", f"-c{connections}", "-t2", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_pinned(cpus),
    )
    out = completed.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"{url} answered {non_2xx.group(1)} errors:\n{out}")
    return {"requests_per_s": rate, "p50_ms": percentile("50"), "p99_ms": percentile("99")}


def main(argv: list[str] | None = None) -> int:
    """Command line: prepare a track, then measure nginx, Encore and the edge."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if not NGINX.exists() or shutil.which("wrk") is None:
        print("needs nginx and wrk: make bench-deps edge-deps", file=sys.stderr)
        return 2
    server_cpus, client_cpus = _cpu_split(True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="encore-bench-segments-") as scratch:
        workdir = Path(scratch)
        port = free_port()
        env, track_id, tokens = asyncio.run(_prepare(workdir, 1, f"http://127.0.0.1:{port}"))
        keys = {"b1": secrets.token_urlsafe(32)}
        env["ENCORE_MEDIA_SIGNING_KEYS"] = json.dumps(keys)
        with running_server(
            "encore.app:create_app_from_environment",
            env=env,
            workdir=workdir,
            cpus=server_cpus,
            log_name="encore",
            port=port,
        ) as encore:
            playback = httpx.get(
                f"{encore}/v1/tracks/{track_id}/playback",
                headers={"Authorization": f"Bearer {tokens[0]}"},
            ).json()
            master = urlsplit(playback["hls"]["url"]).path
            segment_path = master.rsplit("/", 1)[0] + "/aac_128/segment_00001.m4s"
            prefix_and_file = segment_path.split("/", 4)[4]
            segment_file = workdir / "media" / prefix_and_file
            print(f"segment: {segment_file.stat().st_size} bytes", file=sys.stderr)
            results["Encore"] = run_wrk(
                encore + segment_path,
                connections=args.connections,
                seconds=args.duration,
                cpus=client_cpus,
            )
        # The same files from `encore serve` on its other HTTP server (ENCORE_HTTP_SERVER).
        with running_server(
            "encore.app:create_app_from_environment",
            env=env,
            workdir=workdir,
            cpus=server_cpus,
            log_name="encore-granian",
            port=port,
            http_server="granian",
        ) as encore:
            results["Encore on granian"] = run_wrk(
                encore + segment_path,
                connections=args.connections,
                seconds=args.duration,
                cpus=client_cpus,
            )
            nginx_port = free_port()
            static = f'server {{ listen 127.0.0.1:PORT; root "{workdir / "media"}"; }}'
            with running_nginx(
                workdir / "nginx-static",
                _nginx_config(workdir / "nginx-static", port=nginx_port, body=static),
                nginx_port,
                server_cpus,
            ) as nginx:
                results["nginx (same file from disk)"] = run_wrk(
                    f"{nginx}/{prefix_and_file}",
                    connections=args.connections,
                    seconds=args.duration,
                    cpus=client_cpus,
                )
            edge_port = free_port()
            edge_dir = workdir / "nginx-edge"
            edge_dir.mkdir()
            signer = MediaSigner(
                keys={kid: decode_master_key(secret) for kid, secret in keys.items()},
                current_kid="b1",
            )
            (edge_dir / "keys.conf").write_text(signer.edge_keys_config())
            edge = (
                f"upstream encore_origin {{ server 127.0.0.1:{port}; keepalive 16; }}\n"
                f'    proxy_cache_path "{edge_dir / "cache"}" levels=1:2 '
                "keys_zone=encore_media:8m max_size=256m inactive=1h use_temp_path=off;\n"
                f'    include "{edge_dir / "keys.conf"}";\n'
                f'    server {{ listen 127.0.0.1:PORT; include "{EDGE_DIR / "edge.conf"}"; }}'
            )
            with running_nginx(
                edge_dir, _nginx_config(edge_dir, port=edge_port, body=edge), edge_port, server_cpus
            ) as edge_url:
                first = httpx.get(edge_url + segment_path)
                second = httpx.get(edge_url + segment_path)
                assert first.status_code == 200, first.text
                assert second.headers.get("x-cache-status") == "HIT", second.headers
                results["edge (cache hits)"] = run_wrk(
                    edge_url + segment_path,
                    connections=args.connections,
                    seconds=args.duration,
                    cpus=client_cpus,
                )
    reference = results["nginx (same file from disk)"]["requests_per_s"]
    table = [
        "| server | req/s | p50 ms | p99 ms | ratio to nginx | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, figures in results.items():
        ratio = figures["requests_per_s"] / reference
        goal = GOALS.get(name)
        verdict = (
            "—" if goal is None else (f"≥ {goal} met" if ratio >= goal else f"≥ {goal} not met")
        )
        table.append(
            f"| {name} | {figures['requests_per_s']:,.0f} | {figures['p50_ms']:.2f} "
            f"| {figures['p99_ms']:.2f} | {ratio:.2f} | {verdict} |"
        )
    print("\n".join(table))
    output: dict[str, Any] = {
        "benchmark": "segments",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "connections": args.connections,
        "results": results,
        "table": "\n".join(table),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    print(f"results written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

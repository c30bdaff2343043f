"""The nginx media edge (deploy/nginx) on loopback, in front of a stand-in Encore origin.

Real nginx (its secure_link module) checks the tokens; a small origin in this file stands in for
Encore's `/media/t/...` route and counts what reaches it, so the tests can tell a cache hit
from a request the edge forwarded, and both from one it refused.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encore.auth.secrets import decode_master_key
from encore.cli import app
from encore.streaming.signing import MediaSigner, TokenVerdict, split_media_path
from tests.fixtures.services import unavailable

EDGE_DIR = Path(__file__).resolve().parents[3] / "deploy" / "nginx"
NGINX_CANDIDATES = (Path("/usr/sbin/nginx"), Path("/usr/local/sbin/nginx"))
INSTALL_HINT = "apt-get install nginx (or: make edge-deps)"
IMMUTABLE = "public, max-age=31536000, immutable"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS = 2  # a free port can be taken between choosing it and nginx binding it
LOG_TAIL_CHARS = 3000
SEGMENT_BYTES = 64 * 1024
HOUR = 3600


@dataclass
class StandInOrigin:
    """Encore's media route in miniature: checks the token, serves files from `root`."""

    root: Path
    signer: MediaSigner
    port: int = 0
    # (method, path, Range header) of every request that reached the origin.
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_for(self, object_path: str) -> list[tuple[str, str, str | None]]:
        """The requests that reached the origin for `<prefix>/<file>`, whatever their token."""
        with self.lock:
            return [entry for entry in self.requests if entry[1].endswith("/" + object_path)]

    def request_count(self) -> int:
        """How many requests reached the origin so far."""
        with self.lock:
            return len(self.requests)


def _origin_handler(origin: StandInOrigin) -> type[BaseHTTPRequestHandler]:
    class MediaHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, *, send_body: bool) -> None:
            with origin.lock:
                origin.requests.append((self.command, self.path, self.headers.get("Range")))
            parts = split_media_path(self.path)
            if parts is None or "%" in self.path:
                self._problem(404)
                return
            token, prefix, file = parts
            verdict = origin.signer.check(token, prefix)
            if verdict is not TokenVerdict.valid:
                self._problem(410 if verdict is TokenVerdict.expired else 403)
                return
            path = origin.root / prefix / file
            if not path.is_file():
                self._problem(404)
                return
            data = path.read_bytes()
            status, start, end = 200, 0, len(data)
            matched = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if matched is not None and int(matched[1]) < len(data):
                status, start = 206, int(matched[1])
                end = min(int(matched[2]) + 1, len(data)) if matched[2] else len(data)
            self.send_response(status)
            self.send_header("Content-Type", "audio/mp4")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", IMMUTABLE)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()[:16]}"')
            self.send_header(
                "Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True)
            )
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.end_headers()
            if send_body:
                self.wfile.write(data[start:end])

        def _problem(self, status: int) -> None:
            body = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return MediaHandler


@dataclass(frozen=True)
class Answer:
    """One HTTP response from the edge."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def problem(self) -> dict[str, object]:
        """The problem+json body of an error answer."""
        assert self.headers["Content-Type"] == "application/problem+json"
        document: dict[str, object] = json.loads(self.body)
        return document


def fetch(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> Answer:
    """Send one request with `path` exactly as written (no normalising client in between)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def _find_nginx() -> Path:
    """The nginx binary, or the test is skipped (fails in CI)."""
    on_path = shutil.which("nginx")
    candidates = [*NGINX_CANDIDATES, *([Path(on_path)] if on_path else [])]
    nginx = next((path for path in candidates if os.access(path, os.X_OK)), None)
    if nginx is None:
        unavailable(f"nginx not found; {INSTALL_HINT}")
    return nginx


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _edge_config(workdir: Path, *, port: int, origin_port: int) -> str:
    """An nginx.conf like nginx.conf.example, with every path under workdir and on loopback."""
    # Workers of a root master would run as nobody, who cannot enter pytest's 0700 tmp dirs.
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f'    {kind}_temp_path "{workdir / "temp" / kind}";'
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{user}
worker_processes 1;
pid "{workdir / "nginx.pid"}";
error_log "{workdir / "error.log"}" warn;
events {{
    worker_connections 64;
}}
http {{
    access_log "{workdir / "access.log"}";
{temp}
    include "{workdir / "keys.conf"}";
    upstream encore_origin {{
        server 127.0.0.1:{origin_port};
        keepalive 4;
    }}
    proxy_cache_path "{workdir / "cache"}" levels=1:2 keys_zone=encore_media:1m
                     max_size=64m inactive=1h use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        include "{EDGE_DIR / "edge.conf"}";
    }}
}}
"""


class EdgeStartError(Exception):
    """nginx exited or did not answer in time."""


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop nginx and its workers: SIGTERM to its process group, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _start_edge(nginx: Path, workdir: Path, config: str, port: int) -> subprocess.Popen[bytes]:
    """Start nginx on `config` in workdir and wait until it accepts connections."""
    (workdir / "nginx.conf").write_text(config)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "temp" / kind).mkdir(parents=True, exist_ok=True)
    log_path = workdir / "error.log"
    argv = [str(nginx), "-p", str(workdir), "-c", str(workdir / "nginx.conf")]
    argv += ["-e", str(log_path), "-g", "daemon off;"]
    with (workdir / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(port):
        try:
            code = process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                _stop(process)
                raise EdgeStartError(f"no answer in {START_TIMEOUT_S:.0f} s") from None
            continue
        output = (workdir / "nginx.out").read_text(errors="replace")
        raise EdgeStartError(f"nginx exited with {code}:\n{output}{_log_tail(log_path)}")
    return process


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, str]:
    """Two media keys as ENCORE_MEDIA_SIGNING_KEYS holds them (key id → base64url secret)."""
    return {"k0": secrets.token_urlsafe(32), "k1": secrets.token_urlsafe(32)}


def _signer(signing_keys: dict[str, str], current_kid: str) -> MediaSigner:
    keys = {kid: decode_master_key(secret) for kid, secret in signing_keys.items()}
    return MediaSigner(keys=keys, current_kid=current_kid)


@pytest.fixture(scope="module")
def signer(signing_keys: dict[str, str]) -> MediaSigner:
    """Encore's signer: new URLs under the current key k1."""
    return _signer(signing_keys, "k1")


@pytest.fixture(scope="module")
def old_signer(signing_keys: dict[str, str]) -> MediaSigner:
    """URLs signed before the rotation to k1, under k0: still valid."""
    return _signer(signing_keys, "k0")


@pytest.fixture(scope="module")
def origin(
    tmp_path_factory: pytest.TempPathFactory, signer: MediaSigner
) -> Iterator[StandInOrigin]:
    """The stand-in origin on a loopback port, serving renditions from a temp dir."""
    origin = StandInOrigin(root=tmp_path_factory.mktemp("origin"), signer=signer)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _origin_handler(origin))
    server.daemon_threads = True
    origin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _edge_keys_from_the_cli(signing_keys: dict[str, str]) -> str:
    """What `encore media edge-keys` prints for these keys: the edge's key file."""
    environment = {
        "ENCORE_MEDIA_SIGNING_KEYS": json.dumps(signing_keys),
        "ENCORE_MEDIA_SIGNING_KEY_ID": "k1",
        "ENCORE_SECRET_KEY": secrets.token_urlsafe(32),
    }
    result = CliRunner().invoke(app, ["media", "edge-keys"], env=environment)
    assert result.exit_code == 0, result.output
    # Secrets derived from the keys, never the keys themselves.
    assert not any(secret in result.stdout for secret in signing_keys.values())
    return result.stdout


@pytest.fixture(scope="module")
def edge_port(
    tmp_path_factory: pytest.TempPathFactory,
    origin: StandInOrigin,
    signing_keys: dict[str, str],
) -> Iterator[int]:
    """The port of nginx running deploy/nginx/edge.conf in front of the origin."""
    nginx = _find_nginx()
    errors: list[str] = []
    for _ in range(START_ATTEMPTS):
        workdir = tmp_path_factory.mktemp("edge")
        (workdir / "keys.conf").write_text(_edge_keys_from_the_cli(signing_keys))
        port = _free_port()
        config = _edge_config(workdir, port=port, origin_port=origin.port)
        try:
            process = _start_edge(nginx, workdir, config, port)
        except EdgeStartError as exc:
            # Only a lost race for the port is worth another try; anything else is a bug.
            if "Address already in use" not in str(exc):
                pytest.fail(f"nginx did not start: {exc}", pytrace=False)
            errors.append(str(exc))
            continue
        try:
            yield port
        finally:
            _stop(process)
        return
    pytest.fail("nginx found no free port: " + "\n---\n".join(errors), pytrace=False)


@dataclass(frozen=True)
class Rendition:
    """A rendition prefix on the origin with one segment file in it."""

    prefix: str
    file: str
    data: bytes

    @property
    def object_path(self) -> str:
        """`<prefix>/<file>`: what the edge caches the segment under."""
        return f"{self.prefix}/{self.file}"


def _publish(origin: StandInOrigin) -> Rendition:
    """A new track's rendition on the origin (each test gets its own: nothing cached yet)."""
    prefix = f"renditions/{uuid.uuid4()}/{secrets.token_hex(16)}"
    rendition = Rendition(prefix, "aac_128/segment_00000.m4s", os.urandom(SEGMENT_BYTES))
    path = origin.root / rendition.object_path
    path.parent.mkdir(parents=True)
    path.write_bytes(rendition.data)
    return rendition


@pytest.fixture
def rendition(origin: StandInOrigin) -> Rendition:
    """A rendition nobody has fetched through the edge yet."""
    return _publish(origin)


def _url(signer: MediaSigner, rendition: Rendition, *, expires_in: int = HOUR) -> str:
    return signer.url(
        prefix=rendition.prefix,
        user_id=uuid.uuid4(),
        expires=int(time.time()) + expires_in,
        file=rendition.file,
    )


def _warm(edge_port: int, signer: MediaSigner, rendition: Rendition) -> None:
    """Fetch the rendition once through the edge so the edge holds it."""
    answer = fetch(edge_port, _url(signer, rendition))
    assert answer.status == 200
    assert answer.headers["X-Cache-Status"] == "MISS"


def test_listeners_share_the_cached_file(
    edge_port: int,
    origin: StandInOrigin,
    signer: MediaSigner,
    old_signer: MediaSigner,
    rendition: Rendition,
) -> None:
    first = fetch(edge_port, _url(signer, rendition))
    # Another listener, with a token under the older key: same object, from the cache.
    second = fetch(edge_port, _url(old_signer, rendition))

    assert first.status == 200
    assert first.headers["X-Cache-Status"] == "MISS"
    assert first.body == rendition.data
    assert first.headers["Content-Type"] == "audio/mp4"
    assert first.headers["Cache-Control"] == IMMUTABLE
    assert second.status == 200
    assert second.headers["X-Cache-Status"] == "HIT"
    assert second.body == rendition.data
    assert second.headers["ETag"] == first.headers["ETag"]
    assert len(origin.requests_for(rendition.object_path)) == 1


def test_forged_tokens_are_refused_even_for_a_cached_file(
    edge_port: int, origin: StandInOrigin, signer: MediaSigner, rendition: Rendition
) -> None:
    _warm(edge_port, signer, rendition)
    url = _url(signer, rendition)
    token = url.split("/")[3]
    kid, expires, user, signature, edge = token.split(".")
    # The first character: the last one of 22 carries only 2 bits, the rest is padding.
    flipped = ("A" if edge[0] != "A" else "B") + edge[1:]
    stranger = MediaSigner(keys={"k1": secrets.token_bytes(32)}, current_kid="k1")
    # The edge checks the edge hash, which covers the same fields as the HMAC (key id,
    # expiry, listener, prefix): a wrong HMAC beside a genuine edge hash grants nothing the
    # genuine token does not, and the origin refuses it on a miss.
    forgeries = [
        url.replace(token, f"{kid}.{expires}.{user}.{signature}.{flipped}"),
        url.replace(token, f"{kid}.{int(expires) + HOUR}.{user}.{signature}.{edge}"),
        url.replace(token, f"{kid}.{expires}.{uuid.uuid4().hex}.{signature}.{edge}"),
        url.replace(token, f"k9.{expires}.{user}.{signature}.{edge}"),
        url.replace(token, f"__proto__.{expires}.{user}.{signature}.{edge}"),
        # The empty secret an unknown key id maps to must not verify a hash made with it.
        url.replace(token, f"k9.{expires}.{user}.{signature}.{_empty_secret_hash(url)}"),
        url.replace(token, f"{kid}.{expires}.{user}.{signature}"),
        url.replace(token, "not-a-token"),
        _url(stranger, rendition),
    ]

    answers = [fetch(edge_port, forgery) for forgery in forgeries]

    assert [answer.status for answer in answers] == [403] * len(forgeries)
    assert answers[0].problem()["status"] == 403
    assert answers[0].headers["Cache-Control"] == "no-store"
    assert "X-Cache-Status" not in answers[0].headers
    assert len(origin.requests_for(rendition.object_path)) == 1


def _empty_secret_hash(url: str) -> str:
    """The edge hash of a URL's fields under key id k9 and an empty edge secret."""
    token, prefix = url.split("/")[3], "/".join(url.split("/")[4:7])
    _kid, expires, user, _signature, _edge = token.split(".")
    message = f"|{expires}|k9|{user}|{prefix}|".encode()
    digest = hashlib.md5(message, usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_expired_token_is_gone_even_for_a_cached_file(
    edge_port: int, origin: StandInOrigin, signer: MediaSigner, rendition: Rendition
) -> None:
    _warm(edge_port, signer, rendition)

    answer = fetch(edge_port, _url(signer, rendition, expires_in=-1))

    assert answer.status == 410
    assert answer.problem()["type"] == "https://encore.dev/problems/gone"
    assert len(origin.requests_for(rendition.object_path)) == 1


def test_token_for_another_track_is_refused(
    edge_port: int, origin: StandInOrigin, signer: MediaSigner, rendition: Rendition
) -> None:
    other = _publish(origin)
    _warm(edge_port, signer, rendition)
    token = _url(signer, rendition).split("/")[3]
    other_token = _url(signer, other).split("/")[3]
    requests_before = origin.request_count()

    cached = fetch(edge_port, f"/media/t/{other_token}/{rendition.object_path}")
    uncached = fetch(edge_port, f"/media/t/{token}/{other.object_path}")

    assert cached.status == 403
    assert uncached.status == 403
    assert origin.request_count() == requests_before


@pytest.mark.parametrize(
    "tail",
    [
        "{prefix}/../{file}",
        "{prefix}/aac_128/../aac_128/segment_00000.m4s",
        "{prefix}/./{file}",
        "{prefix}//{file}",
        "{prefix}/%2e%2e/{file}",
        "{prefix}/aac_128%2Fsegment_00000.m4s",
        "{prefix}/aac_128\\segment_00000.m4s",
        "{prefix}",
        "renditions/../../../../etc/passwd",
    ],
)
def test_traversal_is_not_found(
    edge_port: int, origin: StandInOrigin, signer: MediaSigner, rendition: Rendition, tail: str
) -> None:
    token = _url(signer, rendition).split("/")[3]
    requests_before = origin.request_count()

    answer = fetch(
        edge_port, f"/media/t/{token}/" + tail.format(prefix=rendition.prefix, file=rendition.file)
    )

    assert answer.status == 404
    assert answer.problem()["status"] == 404
    assert origin.request_count() == requests_before


def test_ranges_are_cut_from_the_cached_file(
    edge_port: int, origin: StandInOrigin, signer: MediaSigner, rendition: Rendition
) -> None:
    size = len(rendition.data)

    miss = fetch(edge_port, _url(signer, rendition), headers={"Range": "bytes=100-1099"})
    hit = fetch(edge_port, _url(signer, rendition), headers={"Range": "bytes=-500"})

    assert miss.status == 206
    assert miss.headers["X-Cache-Status"] == "MISS"
    assert miss.headers["Content-Range"] == f"bytes 100-1099/{size}"
    assert miss.body == rendition.data[100:1100]
    assert hit.status == 206
    assert hit.headers["X-Cache-Status"] == "HIT"
    assert hit.headers["Content-Range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert hit.body == rendition.data[-500:]
    # The edge fetched the whole file once, without a Range, and cut both ranges from it.
    requests = origin.requests_for(rendition.object_path)
    assert [(method, range_) for method, _, range_ in requests] == [("GET", None)]


def test_only_get_and_head_are_allowed(
    edge_port: int, origin: StandInOrigin, signer: MediaSigner, rendition: Rendition
) -> None:
    url = _url(signer, rendition)

    head = fetch(edge_port, url, method="HEAD")
    post = fetch(edge_port, url, method="POST")

    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(rendition.data))
    assert head.body == b""
    assert post.status == 405
    assert post.headers["Allow"] == "GET, HEAD"
    assert all(method in ("GET", "HEAD") for method, _, _ in origin.requests)

"""`GET/HEAD /media/t/<token>/<prefix>/<file>`: signed, cacheable, seekable media files.

A plain ASGI app, reached through MediaFilesMiddleware ahead of the API's routing, rather
than a FastAPI route: it answers every segment a player fetches, and routing plus dependency
resolution would cost more than the lookup.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.utils import formatdate
from pathlib import Path

import structlog
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from encore.media import service as media_service
from encore.observability import Metrics
from encore.problems import problem_response
from encore.storage import BlobNotFound, BlobStore, InvalidBlobKey, check_blob_key
from encore.streaming.signing import MediaSigner, TokenVerdict, split_media_path

IMMUTABLE = "public, max-age=31536000, immutable"
# Playlists, init sections and segments are small: read at once from the page cache instead
# of streaming through a thread pool, which costs more than the read itself.
SMALL_FILE_BYTES = 512 * 1024
PRESIGNED_LIFETIME = timedelta(minutes=10)
PRESIGNED_CACHE_SECONDS = 300
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

logger = structlog.get_logger("encore.streaming")


class MediaFiles:
    """Serves rendition files to holders of a valid media token."""

    def __init__(
        self,
        context: Callable[[Scope], tuple[MediaSigner, BlobStore] | None],
        *,
        redirect_to_store: Callable[[Scope], bool] = lambda _scope: False,
    ) -> None:
        self.context = context
        self.redirect_to_store = redirect_to_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        response = await self._respond(scope)
        await response(scope, receive, send)

    async def _respond(self, scope: Scope) -> Response:
        if scope["type"] != "http":
            return problem_response(404, detail="not found")
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return problem_response(
                405, detail=f"{method} is not allowed on media", headers={"Allow": "GET, HEAD"}
            )
        # Starlette keeps the full path in a mount (root_path holds the mount point).
        path: str = scope["path"]
        if not path.startswith("/media/"):
            path = scope.get("root_path", "") + path
        raw_path: bytes = scope.get("raw_path") or path.encode()
        parts = split_media_path(path)
        # Media paths never need escapes: any %-encoding is a traversal attempt or junk.
        if parts is None or b"%" in raw_path or b"\\" in raw_path:
            return problem_response(404, detail="no such media file")
        token, prefix, file = parts
        context = self.context(scope)
        if context is None:
            return problem_response(503, detail="the server is starting")
        signer, store = context
        verdict = signer.check(token, prefix)
        if verdict is TokenVerdict.invalid:
            return problem_response(403, detail="the media URL's token is not valid for this file")
        if verdict is TokenVerdict.expired:
            return problem_response(
                410, detail="the media URL has expired; ask /v1/tracks/{id}/playback for a new one"
            )
        key = f"{prefix}/{file}"
        try:
            check_blob_key(key)
        except InvalidBlobKey:
            # A name no rendition has (renditions use plain ASCII names only).
            return problem_response(404, detail="no such media file")
        if self.redirect_to_store(scope):
            presigned = await store.presigned_get_url(key, PRESIGNED_LIFETIME)
            if presigned is not None:
                # The presigned URL expires: only this client may keep the redirect, briefly.
                return Response(
                    status_code=302,
                    headers={
                        "Location": presigned,
                        "Cache-Control": f"private, max-age={PRESIGNED_CACHE_SECONDS}",
                    },
                )
        headers = Headers(scope=scope)
        local = store.local_path(key)
        if local is not None:
            return self._local_file(local, file, headers, method)
        return await self._stored_object(store, key, file, headers, method)

    def _local_file(self, local: Path, file: str, headers: Headers, method: str) -> Response:
        try:
            stat = local.stat()
        except OSError:
            return problem_response(404, detail="no such media file")
        if stat.st_size <= SMALL_FILE_BYTES:
            etag, last_modified = _local_validators(stat)
            return _ranged_response(
                headers,
                etag=etag,
                last_modified=last_modified,
                size=stat.st_size,
                media_type=media_service.rendition_content_type(file),
                read=lambda start, end: _read_local(local, start, end),
                head=method == "HEAD",
            )
        response = FileResponse(
            local,
            media_type=media_service.rendition_content_type(file),
            stat_result=stat,
            headers={"Cache-Control": IMMUTABLE},
        )
        if _not_modified(headers, response.headers["etag"]):
            return _not_modified_response(response.headers["etag"])
        return response

    async def _stored_object(
        self, store: BlobStore, key: str, file: str, headers: Headers, method: str
    ) -> Response:
        try:
            info = await store.head(key)
        except BlobNotFound:
            return problem_response(404, detail="no such media file")
        etag = f'"{info.etag.strip(chr(34))}"' if info.etag else f'"{info.size:x}"'
        response = _ranged_response(
            headers,
            etag=etag,
            last_modified=formatdate(info.last_modified.timestamp(), usegmt=True),
            size=info.size,
            media_type=media_service.rendition_content_type(file),
            read=None,
            head=method == "HEAD",
        )
        if response.status_code in (200, 206) and method != "HEAD":
            start, end = _span(response)
            response.body = await store.get_range(key, start, end)
        return response


def _local_validators(stat: os.stat_result) -> tuple[str, str]:
    """ETag and Last-Modified of a small local media file."""
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"', formatdate(stat.st_mtime, usegmt=True)


def _read_local(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as file:
        file.seek(start)
        return file.read(end - start)


def _span(response: Response) -> tuple[int, int]:
    content_range = response.headers.get("content-range")
    if content_range is None:
        return 0, int(response.headers["content-length"])
    first, last = content_range.removeprefix("bytes ").split("/")[0].split("-")
    return int(first), int(last) + 1


def _ranged_response(
    headers: Headers,
    *,
    etag: str,
    last_modified: str,
    size: int,
    media_type: str,
    read: Callable[[int, int], bytes] | None,
    head: bool,
) -> Response:
    """200, 206, 304 or 416 for a whole object of `size` bytes; `read` fills the body."""
    common = {
        "Cache-Control": IMMUTABLE,
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Last-Modified": last_modified,
    }
    if _not_modified(headers, etag):
        return _not_modified_response(etag)
    start, end, status = 0, size, 200
    requested = headers.get("range")
    if_range = headers.get("if-range")
    if requested and (if_range is None or if_range in (etag, last_modified)):
        parsed = _single_range(requested, size)
        if parsed is None:
            return Response(status_code=416, headers={**common, "Content-Range": f"bytes */{size}"})
        start, end = parsed
        status = 206
        common["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    body = read(start, end) if read is not None and not head else b""
    response = Response(body, status_code=status, media_type=media_type, headers=common)
    response.headers["content-length"] = str(end - start)
    return response


def _not_modified(headers: Headers, etag: str) -> bool:
    candidates = headers.get("if-none-match")
    if not candidates:
        return False
    return candidates.strip() == "*" or any(
        candidate.strip().removeprefix("W/") == etag for candidate in candidates.split(",")
    )


def _not_modified_response(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})


def _single_range(requested: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range, or None when it cannot be satisfied."""
    match = _RANGE.fullmatch(requested.strip())
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            return None
        return max(size - length, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return None
    return start, end


class _MediaRoute:
    """What the request metrics label media requests with (one label for every file)."""

    path = "/media/t/{token}/{file}"


class MediaFilesMiddleware:
    """Send `/media/…` straight to MediaFiles, ahead of the API's routing.

    Segments are the most frequent request of all; walking every API route first (FastAPI
    matches them one by one) cost more than serving the file.
    """

    def __init__(self, app: ASGIApp, *, media: MediaFiles) -> None:
        self.app = app
        self.media = media

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] == "http" and scope["path"].startswith("/media/"):
            scope["route"] = _MediaRoute
            await self.media(scope, receive, send)
            return
        await self.app(scope, receive, send)


MEDIA_ROUTE = _MediaRoute.path
# Request headers that need MediaFiles' full handling (ranges and conditions).
_DELEGATED_HEADERS = frozenset((b"range", b"if-range", b"if-none-match"))
# Bounds on the verified-token memo: the oldest entries go first when it is full.
_VERIFIED_TOKENS_MAX = 16_384


# How long a cached file is served before the file on disk is looked at again (as nginx's
# `open_file_cache_valid`): a deleted track stops playing from memory within this.
FILE_RECHECK_SECONDS = 1.0


@dataclass(slots=True)
class _CachedFile:
    """A small local media file as last read: what identifies that version, and its reply."""

    path: str
    size: int
    mtime_ns: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    checked_at: float


class CachedMediaFiles:
    """Answers the common media request ahead of the whole app: a GET or HEAD with a valid
    token for a small file on a file:// store, without Range or conditional headers.

    Players fetch segment after segment with one token, so a token verified once is
    remembered until it expires, and small files are kept in memory (bounded by
    `media_memory_cache_bytes`); at most a second after a hit, a `stat` checks that the file
    on disk is still that version before the next.
    Anything else (bad or expired tokens, ranges, conditions, large files, other stores) is
    left to the app, where the request-context middleware and MediaFiles answer it. These
    requests are counted in the request metrics like any other but get no access-log line: at
    segment rates it would cost more than the answer (failures, which go the long way, are
    still logged).
    """

    def __init__(self, *, metrics: Metrics, cache_bytes: int) -> None:
        self.metrics = metrics
        self.context: tuple[MediaSigner, BlobStore] | None = None
        self.cache_bytes = cache_bytes
        self._verified_tokens: dict[tuple[str, str], int] = {}
        self._files: dict[str, _CachedFile] = {}
        self._cached_bytes = 0

    def start(self, signer: MediaSigner, store: BlobStore) -> None:
        """Serve with this signer and store (the app's, once it has started)."""
        self.context = (signer, store)

    def stop(self) -> None:
        """Answer nothing more, and forget every token and file (the app is stopping)."""
        self.context = None
        self._verified_tokens.clear()
        self._files.clear()
        self._cached_bytes = 0

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer this request if it is the common case; False leaves it to the app."""
        if scope["type"] != "http" or not scope["path"].startswith("/media/t/"):
            return False
        started = time.perf_counter()
        try:
            cached = self._answerable(scope)
        except Exception:
            # This runs outside the app's error handling: whatever went wrong, the app's own
            # media path answers (and reports) this request.
            logger.warning("cached_media_failed", exc_info=True)
            return False
        if cached is None:
            return False
        method = scope["method"]
        # No X-Request-Id: it names a request's log lines, and these have none.
        await send({"type": "http.response.start", "status": 200, "headers": cached.headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else cached.body})
        self.metrics.observe_request(method, MEDIA_ROUTE, 200, time.perf_counter() - started)
        return True

    def _answerable(self, scope: Scope) -> _CachedFile | None:
        """The file this request gets a plain 200 of, or None when MediaFiles must decide."""
        if scope["method"] not in ("GET", "HEAD"):
            return None
        for name, _value in scope["headers"]:
            if name in _DELEGATED_HEADERS:
                return None
        raw_path: bytes = scope.get("raw_path") or b""
        if b"%" in raw_path or b"\\" in raw_path:
            return None
        parts = split_media_path(scope["path"])
        if parts is None:
            return None
        token, prefix, file = parts
        context = self.context
        if context is None:
            return None
        signer, store = context
        if not self._token_is_valid(signer, token, prefix):
            return None
        return self._small_local_file(store, f"{prefix}/{file}", file)

    def _token_is_valid(self, signer: MediaSigner, token: str, prefix: str) -> bool:
        now = time.time()
        expires = self._verified_tokens.get((token, prefix))
        if expires is not None:
            if expires > now:
                return True
            del self._verified_tokens[(token, prefix)]
            return False
        if signer.check(token, prefix, now=now) is not TokenVerdict.valid:
            return False
        if len(self._verified_tokens) >= _VERIFIED_TOKENS_MAX:
            del self._verified_tokens[next(iter(self._verified_tokens))]
        # The token's own expiry, which check() just found to be in the future.
        self._verified_tokens[(token, prefix)] = int(token.split(".", 2)[1])
        return True

    def _small_local_file(self, store: BlobStore, key: str, file: str) -> _CachedFile | None:
        cached = self._files.get(key)
        if cached is not None:
            now = time.monotonic()
            if now - cached.checked_at < FILE_RECHECK_SECONDS:
                return cached
            try:
                # A plain str path: a Path object per check costs more than the stat.
                stat = os.stat(cached.path)  # noqa: PTH116
            except OSError:
                self._forget(key)
                return None
            if stat.st_size == cached.size and stat.st_mtime_ns == cached.mtime_ns:
                cached.checked_at = now
                return cached
            self._forget(key)
        try:
            local = store.local_path(key)
        except InvalidBlobKey:
            return None  # MediaFiles answers 404
        if local is None:
            return None
        try:
            with local.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_size > SMALL_FILE_BYTES:
                    return None
                body = handle.read()
        except OSError:
            return None
        if len(body) != stat.st_size:
            return None  # changing under us: let MediaFiles answer this one
        # The same validators MediaFiles gives this file, so conditional requests match.
        etag, last_modified = _local_validators(stat)
        headers = [
            (b"content-type", media_service.rendition_content_type(file).encode("latin-1")),
            (b"content-length", str(stat.st_size).encode("latin-1")),
            (b"cache-control", IMMUTABLE.encode("latin-1")),
            (b"etag", etag.encode("latin-1")),
            (b"accept-ranges", b"bytes"),
            (b"last-modified", last_modified.encode("latin-1")),
        ]
        found = _CachedFile(
            str(local), stat.st_size, stat.st_mtime_ns, headers, body, time.monotonic()
        )
        if stat.st_size <= self.cache_bytes:
            while self._files and self._cached_bytes + stat.st_size > self.cache_bytes:
                self._forget(next(iter(self._files)))
            self._files[key] = found
            self._cached_bytes += stat.st_size
        return found

    def _forget(self, key: str) -> None:
        dropped = self._files.pop(key, None)
        if dropped is not None:
            self._cached_bytes -= dropped.size

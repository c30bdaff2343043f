"""Rendered JSON documents kept in memory, dropped together when their source revision moves.

Reads that are hot and change rarely (an album page) are served from here as ready bytes with
an ETag. Writers bump a revision counter in the database in the same transaction as their
change; every process polls it at most once per `revalidate_seconds` and drops its whole cache
when it moved, so a change made anywhere is visible everywhere within that bound (plus the one
database read of the check, which runs in the background: no request waits for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

import structlog
from cachetools import LRUCache
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

logger = structlog.get_logger("encore.document_cache")


@dataclass(frozen=True, slots=True)
class RenderedDocument:
    """A response body ready to send, with its strong entity tag and response headers."""

    body: bytes
    etag: str
    media_type: str = "application/json"

    def headers(self, *, not_modified: bool) -> list[tuple[bytes, bytes]]:
        """Raw ASGI headers of a 200 with this body, or of a 304 for it."""
        # no-cache: clients and shared caches may keep the body but must revalidate it (a cheap
        # 304), because a track's status or the credits can change at any time.
        common = [(b"etag", self.etag.encode("ascii")), (b"cache-control", b"no-cache")]
        if not_modified:
            return common
        return [
            (b"content-type", self.media_type.encode("ascii")),
            (b"content-length", str(len(self.body)).encode("ascii")),
            *common,
        ]


def entity_tag(body: bytes) -> str:
    """Strong ETag of a body: a short digest of its bytes, quoted."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """True when an If-None-Match header names this ETag (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(
        candidate.strip().removeprefix("W/") == bare for candidate in if_none_match.split(",")
    )


class DocumentCache:
    """An LRU of rendered documents tied to a revision that is read from the database."""

    def __init__(
        self,
        *,
        max_entries: int,
        revalidate_seconds: float,
        read_revision: Callable[[], Awaitable[int]],
    ) -> None:
        self._entries: LRUCache[Hashable, RenderedDocument] | None = (
            LRUCache(maxsize=max_entries) if max_entries > 0 else None
        )
        self._revalidate_seconds = revalidate_seconds
        self._read_revision = read_revision
        self._revision: int | None = None
        self._checked_at = float("-inf")
        # Set by invalidate(): this process wrote, so the next read waits for the new revision.
        self._must_check = True
        self._lock = asyncio.Lock()
        self._background_check: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """False when configured with no room (every read goes to the database)."""
        return self._entries is not None

    async def current_revision(self) -> int | None:
        """The revision cached documents belong to, re-read when the last check is stale.

        Read before answering the first time, after this process wrote, and on every call
        when `revalidate_seconds` is 0; otherwise a stale check starts a re-read in the
        background and this request answers from what is known (one request a second would
        else wait for a database round trip: the slowest of all in latency benchmarks).
        """
        if self._entries is None:
            return None
        if time.monotonic() - self._checked_at < self._revalidate_seconds and not self._must_check:
            return self._revision
        if self._revision is not None and not self._must_check and self._revalidate_seconds > 0:
            if self._background_check is None or self._background_check.done():
                self._background_check = asyncio.create_task(self._check_in_background())
            return self._revision
        if self._lock.locked() and self._revision is not None and not self._must_check:
            # Another request is re-reading it: answer from what is known rather than queue
            # every concurrent request behind one database round trip.
            return self._revision
        async with self._lock:
            # Another request may have refreshed it while this one waited for the lock.
            if time.monotonic() - self._checked_at >= self._revalidate_seconds or self._must_check:
                await self._check()
        return self._revision

    async def _check(self) -> None:
        assert self._entries is not None
        self._must_check = False
        revision = await self._read_revision()
        if revision != self._revision:
            self._entries.clear()
            self._revision = revision
        self._checked_at = time.monotonic()

    async def _check_in_background(self) -> None:
        try:
            async with self._lock:
                if time.monotonic() - self._checked_at >= self._revalidate_seconds:
                    await self._check()
        except Exception as error:
            # Answers keep coming from the known revision; the next request tries again.
            logger.warning("document_revision_check_failed", error=repr(error))

    def get(self, key: Hashable) -> RenderedDocument | None:
        """The cached document for a key, if any (call `current_revision` first)."""
        if self._entries is None:
            return None
        return self._entries.get(key)

    def put(self, key: Hashable, body: bytes, *, revision: int | None) -> RenderedDocument:
        """Wrap a JSON body with its ETag and keep it, unless the revision moved meanwhile."""
        document = RenderedDocument(body=body, etag=entity_tag(body))
        if self._entries is not None and revision is not None and revision == self._revision:
            self._entries[key] = document
        return document

    def invalidate(self) -> None:
        """Drop every document now (a writer in this process committed a change)."""
        if self._entries is not None:
            self._entries.clear()
        self._checked_at = float("-inf")
        self._must_check = True


def document_response(document: RenderedDocument, if_none_match: str | None) -> Response:
    """200 with the body, or 304 when the client already holds this version."""
    not_modified = etag_matches(if_none_match, document.etag)
    response = Response(
        b"" if not_modified else document.body, status_code=304 if not_modified else 200
    )
    response.raw_headers = document.headers(not_modified=not_modified)
    return response


async def send_document(document: RenderedDocument, if_none_match: str | None, send: Send) -> None:
    """Send a document (or its 304) straight over ASGI, with no Response object in between."""
    not_modified = etag_matches(if_none_match, document.etag)
    await send(
        {
            "type": "http.response.start",
            "status": 304 if not_modified else 200,
            "headers": document.headers(not_modified=not_modified),
        }
    )
    await send({"type": "http.response.body", "body": b"" if not_modified else document.body})


@dataclass(frozen=True, slots=True)
class CachedDocumentRoute:
    """A GET route whose handler renders answers into a DocumentCache under (kind, str(id))."""

    path: str  # the route template, e.g. "/v1/albums/{album_id}" (also the metrics label)
    kind: str  # first half of the cache key, e.g. "album"
    pattern: re.Pattern[str]

    @classmethod
    def for_template(cls, path: str, kind: str) -> CachedDocumentRoute:
        """A route whose template ends in one `{…_id}` path parameter holding a UUID."""
        prefix, _, parameter = path.rpartition("/")
        if not (parameter.startswith("{") and parameter.endswith("}")):
            raise ValueError(f"template must end in a path parameter: {path}")
        # Only the canonical lowercase form: anything else goes to the full handler, which
        # validates it and answers with a problem document.
        uuid_text = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        return cls(path=path, kind=kind, pattern=re.compile(f"^{re.escape(prefix)}/({uuid_text})$"))


class CachedDocumentMiddleware:
    """Answer GETs of already rendered documents before routing; pass everything else on.

    The route's own handler stays the only place that validates, reads the database and fills
    the cache; this only short-cuts the router and dependency resolution for cache hits, which
    otherwise cost several times more than sending the bytes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: tuple[CachedDocumentRoute, ...],
        cache_of: Callable[[Scope], DocumentCache | None],
        may_read: Callable[[Scope, dict[bytes, bytes]], Awaitable[bool]],
    ) -> None:
        self.app = app
        self.routes = routes
        self.cache_of = cache_of
        self.may_read = may_read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            cache = self.cache_of(scope)
            if cache is None or not cache.enabled:
                break
            await cache.current_revision()
            document = cache.get((route.kind, match.group(1)))
            if document is None:
                break
            headers = dict(scope["headers"])
            # The same access rule as the route's own: anyone else gets the full handler's 401.
            if not await self.may_read(scope, headers):
                break
            scope["route"] = route
            if_none_match = headers.get(b"if-none-match")
            await send_document(
                document, if_none_match.decode("latin-1") if if_none_match else None, send
            )
            return
        await self.app(scope, receive, send)

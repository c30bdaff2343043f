"""Blob store for audio, artwork, models and the lake: one interface over obstore.

`open_blob_store(settings)` picks the backend from `settings.storage_url`:
`file://DIR` (a local directory), `memory://` (tests) or `s3://BUCKET[/PREFIX]`
(any S3 API store: SeaweedFS, MinIO, AWS S3, R2).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import obstore
import structlog
from obstore.exceptions import AlreadyExistsError
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import LocalStore, MemoryStore, S3Store

from encore.config import Settings, SettingsError

if TYPE_CHECKING:
    from obstore import Attributes, ObjectMeta
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

logger = structlog.get_logger("encore.storage")

__all__ = [
    "MAX_KEY_BYTES",
    "STAGING_PREFIX",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "InvalidBlobKey",
    "InvalidBlobRange",
    "ObjectBlobStore",
    "check_blob_key",
    "open_blob_store",
]

STAGING_PREFIX = "_staging"
"""Where `publish` uploads an object before moving it under its final key."""

MAX_KEY_BYTES = 1024
"""The longest key S3 accepts, in UTF-8 bytes."""

# Conservative on purpose: these characters mean the same thing as an S3 key, a URL path
# segment and a file name, so a key never needs escaping and `local_path` is the real file.
_KEY_SEGMENT = re.compile(r"[A-Za-z0-9._~=+@,-]+")

# A readiness probe and an API request must fail in seconds, not after the default
# ten retries over three minutes, when the store is down.
_S3_RETRY: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
_S3_CONNECT_TIMEOUT = timedelta(seconds=5)


class BlobNotFound(Exception):
    """No blob is stored under the key."""


class InvalidBlobKey(ValueError):
    """The key is not a safe relative path (empty, absolute, `..`, odd characters, too long)."""


class InvalidBlobRange(ValueError):
    """The byte range is negative, reversed, or starts past the end of the blob."""


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows about one blob."""

    key: str
    size: int
    etag: str | None
    last_modified: datetime


class BlobStore(Protocol):
    """Where Encore keeps blobs by key: audio, artwork, models and lake files."""

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store `data` under `key`, replacing any blob there; readers see old or new, whole."""

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Stream the file at `path` to `key` (multipart when large) without reading it whole."""

    async def publish(self, key: str, path: Path, *, content_type: str | None = None) -> bool:
        """Upload the file to a content-addressed key unless present; False if it already was."""

    async def get(self, key: str) -> bytes:
        """The whole blob under `key`."""

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the blob; fewer when `end` is past its end."""

    async def head(self, key: str) -> BlobInfo:
        """Size, etag and modification time of the blob under `key`."""

    async def exists(self, key: str) -> bool:
        """True when a blob is stored under `key`."""

    async def delete(self, key: str) -> None:
        """Remove the blob under `key`; nothing happens when there is none."""

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob under the folder `prefix` (recursively), in no particular order."""

    async def ping(self) -> None:
        """Raise unless the store answers; cheap enough for every readiness probe."""

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` on a file:// store (whether or not it exists); None otherwise."""

    async def presigned_get_url(self, key: str, expires_in: timedelta) -> str | None:
        """A URL that lets anyone GET `key` from the store until it expires; None if the
        backend cannot make one (file:// and memory://)."""


def check_blob_key(key: str, *, max_bytes: int = MAX_KEY_BYTES) -> str:
    """Return `key` if it is a safe relative POSIX path, else raise InvalidBlobKey."""
    if not key:
        raise InvalidBlobKey("blob key is empty")
    if len(key.encode("utf-8")) > max_bytes:
        raise InvalidBlobKey(f"blob key is longer than {max_bytes} bytes")
    if key.startswith("/"):
        raise InvalidBlobKey(f"blob key must be relative: {key[:80]!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidBlobKey(f"blob key has an empty, '.' or '..' segment: {key[:80]!r}")
        if not _KEY_SEGMENT.fullmatch(segment):
            raise InvalidBlobKey(
                f"blob key may only contain A-Z a-z 0-9 . _ ~ = + @ , - and '/': {key[:80]!r}"
            )
    return key


def _blob_info(meta: ObjectMeta) -> BlobInfo:
    return BlobInfo(
        key=meta["path"],
        size=meta["size"],
        etag=meta["e_tag"],
        last_modified=meta["last_modified"],
    )


class ObjectBlobStore:
    """A BlobStore over one obstore store: LocalStore, MemoryStore or S3Store."""

    def __init__(self, store: ObjectStore) -> None:
        """Wrap an obstore store; for a LocalStore its prefix is the root directory."""
        self._store = store
        self._root: Path | None = None
        self._max_key_bytes = MAX_KEY_BYTES
        if isinstance(store, LocalStore):
            self._root = Path(store.prefix or "/").resolve()
        elif isinstance(store, S3Store) and store.prefix:
            # S3's 1024-byte limit counts the store's prefix too; refuse here, not as a 400.
            self._max_key_bytes -= len(store.prefix.strip("/").encode("utf-8")) + 1
        # LocalFileSystem refuses object attributes; S3 and memory keep Content-Type.
        self._keeps_attributes = not isinstance(store, LocalStore)
        # A hard link (local) or a locked map (memory) moves without clobbering atomically.
        # Plain S3 has no portable copy-if-absent; overwriting a content-addressed key
        # with the same bytes is harmless, so a lost race there only costs a copy.
        self._exclusive_move = isinstance(store, LocalStore | MemoryStore)

    def __repr__(self) -> str:
        """The backend type and its root or prefix, never credentials."""
        if self._root is not None:
            return f"ObjectBlobStore(file://{self._root})"
        prefix = getattr(self._store, "prefix", None)
        return f"ObjectBlobStore({type(self._store).__name__}, prefix={prefix!r})"

    def _check(self, key: str) -> str:
        return check_blob_key(key, max_bytes=self._max_key_bytes)

    def _check_prefix(self, prefix: str) -> str | None:
        # A listing prefix names a folder, so "albums" and "albums/" mean the same.
        folder = prefix.rstrip("/")
        if not folder:
            if prefix:
                raise InvalidBlobKey(f"blob prefix must be relative: {prefix[:80]!r}")
            return None
        return self._check(folder)

    def _attributes(self, content_type: str | None) -> Attributes | None:
        if content_type is None or not self._keeps_attributes:
            return None
        return {"Content-Type": content_type}

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store `data` under `key`, replacing any blob there; readers see old or new, whole."""
        await obstore.put_async(
            self._store, self._check(key), data, attributes=self._attributes(content_type)
        )

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Stream the file at `path` to `key` (multipart when large) without reading it whole."""
        # obstore opens and reads the file in Rust chunk by chunk, off the event loop.
        await obstore.put_async(
            self._store, self._check(key), path, attributes=self._attributes(content_type)
        )

    async def publish(self, key: str, path: Path, *, content_type: str | None = None) -> bool:
        """Upload the file to a content-addressed key unless present; False if it already was."""
        self._check(key)
        if await self.exists(key):
            return False
        # A large upload is not atomic everywhere (local multipart, crashed clients), so the
        # bytes land under a private key first and appear under `key` in one move.
        staging_key = f"{STAGING_PREFIX}/{uuid.uuid4().hex}"
        moved = False
        try:
            await obstore.put_async(
                self._store, staging_key, path, attributes=self._attributes(content_type)
            )
            try:
                await obstore.rename_async(
                    self._store, staging_key, key, overwrite=not self._exclusive_move
                )
            except AlreadyExistsError:
                # Another publisher won the race with the same content-addressed bytes.
                return False
            moved = True
            return True
        finally:
            if not moved:
                await self._discard_staging(staging_key)

    async def _discard_staging(self, staging_key: str) -> None:
        # Cleanup must not hide the error that made the publish fail; a leftover staging
        # object is only wasted space and is reported.
        try:
            await self.delete(staging_key)
        except (ObstoreError, OSError) as exc:
            logger.warning("staging_cleanup_failed", key=staging_key, error=type(exc).__name__)

    async def get(self, key: str) -> bytes:
        """The whole blob under `key`."""
        self._check(key)
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the blob; fewer when `end` is past its end."""
        self._check(key)
        if start < 0 or end < start:
            raise InvalidBlobRange(f"invalid byte range [{start}, {end})")
        if start == end:
            await self.head(key)  # an empty range of a missing blob is still missing
            return b""
        try:
            data = await obstore.get_range_async(self._store, key, start=start, end=end)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except ObstoreError:
            # Backends word an unsatisfiable range differently; the size tells if it was one.
            size = (await self.head(key)).size
            if start >= size:
                raise InvalidBlobRange(
                    f"byte range [{start}, {end}) starts past the end of {key} ({size} bytes)"
                ) from None
            raise
        return bytes(data)

    async def head(self, key: str) -> BlobInfo:
        """Size, etag and modification time of the blob under `key`."""
        self._check(key)
        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return _blob_info(meta)

    async def exists(self, key: str) -> bool:
        """True when a blob is stored under `key`."""
        try:
            await self.head(key)
        except BlobNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Remove the blob under `key`; nothing happens when there is none."""
        self._check(key)
        # S3 and memory say nothing for a missing key; the local store raises.
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self._store, key)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob under the folder `prefix` (recursively), in no particular order."""
        async for chunk in obstore.list(self._store, self._check_prefix(prefix), chunk_size=1000):
            for meta in chunk:
                yield _blob_info(meta)

    async def ping(self) -> None:
        """Raise unless the store answers; cheap enough for every readiness probe."""
        # A local listing of a vanished directory is merely empty, so look for the root.
        if self._root is not None and not self._root.is_dir():
            raise FileNotFoundError(f"blob store directory {self._root} is missing")
        # One small request that needs the bucket to exist and the credentials to be valid.
        await obstore.list_with_delimiter_async(self._store, STAGING_PREFIX)

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` on a file:// store (whether or not it exists); None otherwise."""
        self._check(key)
        if self._root is None:
            return None
        return self._root / key

    async def presigned_get_url(self, key: str, expires_in: timedelta) -> str | None:
        """A URL that lets anyone GET `key` from the store until it expires; None if the
        backend cannot make one (file:// and memory://)."""
        self._check(key)
        if not isinstance(self._store, S3Store):
            return None
        url: str = await obstore.sign_async(self._store, "GET", key, expires_in)
        return url


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store that `settings.storage_url` names; SettingsError when it cannot be opened."""
    url = settings.storage_url
    scheme, _, location = url.partition("://")
    try:
        if scheme == "file":
            return ObjectBlobStore(_local_store(location))
        if scheme == "memory":
            return ObjectBlobStore(MemoryStore())
        if scheme == "s3":
            return ObjectBlobStore(_s3_store(settings, url))
    except (ObstoreError, OSError) as exc:
        # obstore appends a multi-line debug dump; the first line says what is wrong.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(f"ENCORE_STORAGE_URL: cannot open {scheme}:// store: {reason}") from exc
    raise SettingsError("ENCORE_STORAGE_URL: must start with file://, memory:// or s3://")


def _local_store(location: str) -> LocalStore:
    if not location:
        raise SettingsError(
            "ENCORE_STORAGE_URL: file:// needs a directory, e.g. file://./var/media"
        )
    # Relative to the working directory, like every other path a user types in config.
    root = Path(location).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return LocalStore(root)


def _s3_store(settings: Settings, url: str) -> S3Store:
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket or parts.query or parts.fragment:
        raise SettingsError("ENCORE_STORAGE_URL: expected s3://BUCKET[/PREFIX]")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_blob_key(prefix)
        except InvalidBlobKey as exc:
            raise SettingsError(f"ENCORE_STORAGE_URL: bad prefix: {exc}") from None
    has_key_id = settings.s3_access_key_id is not None
    if has_key_id != (settings.s3_secret_access_key is not None):
        raise SettingsError(
            "ENCORE_S3_ACCESS_KEY_ID and ENCORE_S3_SECRET_ACCESS_KEY go together: set both, "
            "or neither to use the AWS_* environment or instance credentials"
        )
    config: S3Config = {"region": settings.s3_region}
    if settings.s3_endpoint:
        # AWS_ENDPOINT_URL_S3 in the environment would beat `endpoint`; Encore's setting wins.
        config["endpoint"] = settings.s3_endpoint
        config["aws_endpoint_url_s3"] = settings.s3_endpoint
    if settings.s3_access_key_id is not None:
        config["access_key_id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        config["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    client: ClientConfig = {
        "allow_http": settings.s3_allow_http,
        "connect_timeout": _S3_CONNECT_TIMEOUT,
    }
    return S3Store(
        bucket,
        prefix=prefix or None,
        config=config,
        client_options=client,
        retry_config=_S3_RETRY,
    )

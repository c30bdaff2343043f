"""Blob store behaviour, the same on every backend: file://, memory:// and s3:// (SeaweedFS)."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest

from encore.config import Settings, SettingsError, load_settings
from encore.storage import (
    STAGING_PREFIX,
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    InvalidBlobRange,
    open_blob_store,
)
from tests.fixtures.seaweedfs import SeaweedS3

MiB = 1024 * 1024
HOSTILE_KEYS = [
    "../x",
    "/abs",
    "a/../b",
    "a\\b",
    "a\x00b",
    "",
    "./a",
    "a//b",
    "a/",
    "a\nb",
    "a b",
    "k" * 1025,
]


def s3_settings(server: SeaweedS3, path: str, **overrides: object) -> Settings:
    """Settings of a store on the test server's bucket, under `path` when given."""
    values: dict[str, object] = {
        "storage_url": f"s3://{server.bucket}/{path}".rstrip("/"),
        "s3_endpoint": server.endpoint,
        "s3_region": server.region,
        "s3_access_key_id": server.access_key_id,
        "s3_secret_access_key": server.secret_access_key,
        "s3_allow_http": True,
    }
    return load_settings(**(values | overrides))


@pytest.fixture(
    params=[
        pytest.param("file", id="file"),
        pytest.param("memory", id="memory"),
        pytest.param("s3", id="s3", marks=pytest.mark.seaweedfs),
    ]
)
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """An empty store of this test's own: a tmp directory, memory, or a fresh S3 prefix."""
    if request.param == "file":
        return open_blob_store(load_settings(storage_url=f"file://{tmp_path / 'blobs'}"))
    if request.param == "memory":
        return open_blob_store(load_settings(storage_url="memory://"))
    server: SeaweedS3 = request.getfixturevalue("seaweedfs_s3")
    return open_blob_store(s3_settings(server, f"tests/{uuid.uuid4().hex}"))


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """A 12 MiB file of pseudo-random bytes: more than two 5 MiB multipart parts."""
    path = tmp_path / "upload" / "big.bin"
    path.parent.mkdir()
    path.write_bytes(random.Random(7).randbytes(12 * MiB))
    return path


async def keys_under(store: BlobStore, prefix: str) -> list[str]:
    """Sorted keys the store lists under `prefix`."""
    return sorted([info.key async for info in store.list(prefix)])


async def test_put_then_get_returns_the_same_bytes(blob_store: BlobStore) -> None:
    await blob_store.put("tracks/ab/abcdef.m4a", b"\x00audio\xff", content_type="audio/mp4")

    assert await blob_store.get("tracks/ab/abcdef.m4a") == b"\x00audio\xff"


async def test_put_replaces_the_whole_blob(blob_store: BlobStore) -> None:
    await blob_store.put("models/latest.json", b"a much longer first version")
    await blob_store.put("models/latest.json", b"v2")

    assert await blob_store.get("models/latest.json") == b"v2"
    assert (await blob_store.head("models/latest.json")).size == 2


async def test_get_range_is_half_open(blob_store: BlobStore) -> None:
    data = bytes(range(256)) * 4
    await blob_store.put("segments/s1.m4s", data)

    assert await blob_store.get_range("segments/s1.m4s", 0, 10) == data[0:10]
    assert await blob_store.get_range("segments/s1.m4s", 100, 300) == data[100:300]
    assert await blob_store.get_range("segments/s1.m4s", 1000, 1024) == data[1000:]
    assert await blob_store.get_range("segments/s1.m4s", 1023, 1024) == data[-1:]
    assert await blob_store.get_range("segments/s1.m4s", 5, 5) == b""


async def test_get_range_past_the_end_returns_the_rest(blob_store: BlobStore) -> None:
    await blob_store.put("segments/s2.m4s", b"0123456789")

    assert await blob_store.get_range("segments/s2.m4s", 6, 1_000) == b"6789"


@pytest.mark.parametrize(("start", "end"), [(-1, 4), (5, 4), (10, 12), (11, 20)])
async def test_get_range_refuses_unsatisfiable_ranges(
    blob_store: BlobStore, start: int, end: int
) -> None:
    await blob_store.put("segments/s3.m4s", b"0123456789")

    with pytest.raises(InvalidBlobRange):
        await blob_store.get_range("segments/s3.m4s", start, end)


async def test_head_reports_size_etag_and_time(blob_store: BlobStore) -> None:
    await blob_store.put("artwork/cover.jpg", b"x" * 1234)
    first = await blob_store.head("artwork/cover.jpg")
    await blob_store.put("artwork/cover.jpg", b"y" * 99)
    second = await blob_store.head("artwork/cover.jpg")

    assert (first.key, first.size) == ("artwork/cover.jpg", 1234)
    assert first.etag
    assert first.last_modified.tzinfo is not None
    assert second.size == 99
    assert second.etag != first.etag


async def test_exists_and_delete(blob_store: BlobStore) -> None:
    await blob_store.put("tmp/one", b"1")
    assert await blob_store.exists("tmp/one")

    await blob_store.delete("tmp/one")

    assert not await blob_store.exists("tmp/one")
    with pytest.raises(BlobNotFound):
        await blob_store.get("tmp/one")


async def test_delete_of_a_missing_blob_is_not_an_error(blob_store: BlobStore) -> None:
    await blob_store.delete("never/was")
    await blob_store.put("once/was", b"x")
    await blob_store.delete("once/was")
    await blob_store.delete("once/was")

    assert not await blob_store.exists("once/was")


async def test_missing_blobs_raise_blob_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await blob_store.get("missing/key")
    with pytest.raises(BlobNotFound):
        await blob_store.head("missing/key")
    with pytest.raises(BlobNotFound):
        await blob_store.get_range("missing/key", 0, 10)
    with pytest.raises(BlobNotFound):
        await blob_store.get_range("missing/key", 0, 0)
    assert not await blob_store.exists("missing/key")


async def test_list_yields_only_blobs_under_the_prefix(blob_store: BlobStore) -> None:
    for key in (
        "albums/a/cover.jpg",
        "albums/a/tracks/01.m4a",
        "albums/a/tracks/hls/128/seg-1.m4s",
        "albums/b/cover.jpg",
        "albumsx/c.jpg",
        "other/d.bin",
    ):
        await blob_store.put(key, key.encode())

    assert await keys_under(blob_store, "albums/a") == [
        "albums/a/cover.jpg",
        "albums/a/tracks/01.m4a",
        "albums/a/tracks/hls/128/seg-1.m4s",
    ]
    assert await keys_under(blob_store, "albums/") == [
        "albums/a/cover.jpg",
        "albums/a/tracks/01.m4a",
        "albums/a/tracks/hls/128/seg-1.m4s",
        "albums/b/cover.jpg",
    ]
    assert await keys_under(blob_store, "nothing/here") == []
    assert len(await keys_under(blob_store, "")) == 6
    sizes = {info.key: info.size async for info in blob_store.list("other")}
    assert sizes == {"other/d.bin": len(b"other/d.bin")}


async def test_put_file_streams_a_large_file(blob_store: BlobStore, big_file: Path) -> None:
    await blob_store.put_file("originals/big.flac", big_file, content_type="audio/flac")

    expected = big_file.read_bytes()
    assert (await blob_store.head("originals/big.flac")).size == len(expected)
    assert await blob_store.get("originals/big.flac") == expected
    # Across the 5 MiB boundary between the first two multipart parts.
    assert (
        await blob_store.get_range("originals/big.flac", 5 * MiB - 3, 5 * MiB + 3)
        == expected[5 * MiB - 3 : 5 * MiB + 3]
    )


async def test_publish_writes_once_then_reports_the_key_taken(
    blob_store: BlobStore, big_file: Path, tmp_path: Path
) -> None:
    other = tmp_path / "upload" / "other.bin"
    other.write_bytes(b"not the same bytes")

    assert await blob_store.publish("media/sha256/ab/abcd", big_file) is True
    assert await blob_store.publish("media/sha256/ab/abcd", other) is False

    assert await blob_store.get("media/sha256/ab/abcd") == big_file.read_bytes()
    assert await keys_under(blob_store, STAGING_PREFIX) == []
    assert await keys_under(blob_store, "") == ["media/sha256/ab/abcd"]


async def test_concurrent_publishes_leave_one_complete_object(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    source = tmp_path / "segment.m4s"
    source.write_bytes(b"segment" * 1000)

    results = await asyncio.gather(
        *(
            blob_store.publish("hls/seg.m4s", source, content_type="video/iso.segment")
            for _ in range(4)
        )
    )

    assert True in results
    assert await blob_store.get("hls/seg.m4s") == source.read_bytes()
    assert await keys_under(blob_store, STAGING_PREFIX) == []


async def test_publish_of_a_missing_file_leaves_nothing(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await blob_store.publish("media/x", tmp_path / "no-such-file")

    assert await keys_under(blob_store, "") == []


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda key: repr(key)[:12])
async def test_hostile_keys_are_refused_everywhere(
    blob_store: BlobStore, big_file: Path, key: str
) -> None:
    with pytest.raises(InvalidBlobKey):
        await blob_store.put(key, b"x")
    with pytest.raises(InvalidBlobKey):
        await blob_store.put_file(key, big_file)
    with pytest.raises(InvalidBlobKey):
        await blob_store.publish(key, big_file)
    with pytest.raises(InvalidBlobKey):
        await blob_store.get(key)
    with pytest.raises(InvalidBlobKey):
        await blob_store.get_range(key, 0, 1)
    with pytest.raises(InvalidBlobKey):
        await blob_store.head(key)
    with pytest.raises(InvalidBlobKey):
        await blob_store.exists(key)
    with pytest.raises(InvalidBlobKey):
        await blob_store.delete(key)
    with pytest.raises(InvalidBlobKey):
        blob_store.local_path(key)
    assert await keys_under(blob_store, "") == []


@pytest.mark.parametrize("prefix", ["/", "../", "/etc", "a/../b"])
async def test_hostile_list_prefixes_are_refused(blob_store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await keys_under(blob_store, prefix)


@pytest.mark.parametrize("url", ["file://{tmp}/blobs", "memory://"], ids=["file", "memory"])
async def test_a_key_may_be_1024_bytes_long(tmp_path: Path, url: str) -> None:
    store = open_blob_store(load_settings(storage_url=url.format(tmp=tmp_path)))
    key = "/".join(["k" * 204] * 5)  # segments under the 255-byte file name limit
    assert len(key) == 1024

    await store.put(key, b"long")

    assert await store.get(key) == b"long"
    with pytest.raises(InvalidBlobKey):
        await store.put(key + "k", b"longer")


@pytest.mark.seaweedfs
async def test_an_s3_prefix_counts_against_the_key_length(seaweedfs_s3: SeaweedS3) -> None:
    prefix = f"tests/{uuid.uuid4().hex}"
    store = open_blob_store(s3_settings(seaweedfs_s3, prefix))
    longest = "/".join(["k" * 200] * 5)[: 1024 - len(prefix) - 1]

    await store.put(longest, b"fits")

    assert await store.get(longest) == b"fits"
    with pytest.raises(InvalidBlobKey):
        await store.put(longest + "k", b"one byte too many")


async def test_ping_answers(blob_store: BlobStore) -> None:
    await blob_store.ping()


async def test_file_store_never_writes_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root" / "media"
    outside = tmp_path / "root" / "secret"
    outside.mkdir(parents=True)
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    store = open_blob_store(load_settings(storage_url=f"file://{root}"))

    for key in ["../secret/x", "../../x", f"/{tmp_path}/root/secret/x", "a/../../secret/x"]:
        for attempt in (
            store.put(key, b"x"),
            store.put_file(key, source),
            store.publish(key, source),
            store.delete(key),
        ):
            with pytest.raises(InvalidBlobKey):
                await attempt
    await store.put("a/b/c.bin", b"inside")
    await store.put_file("a/big.bin", source)
    assert await store.publish("d/e.bin", source)

    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "root/media/a/b/c.bin",
        "root/media/a/big.bin",
        "root/media/d/e.bin",
        "source.bin",
    ]
    path = store.local_path("a/b/c.bin")
    assert path == root.resolve() / "a" / "b" / "c.bin"
    assert path.read_bytes() == b"inside"


async def test_a_relative_file_url_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_blob_store(load_settings(storage_url="file://./var/media"))

    await store.put("k", b"v")

    assert (tmp_path / "var" / "media" / "k").read_bytes() == b"v"
    assert store.local_path("k") == (tmp_path / "var" / "media" / "k").resolve()


async def test_file_store_ping_fails_when_its_directory_is_gone(tmp_path: Path) -> None:
    store = open_blob_store(load_settings(storage_url=f"file://{tmp_path / 'media'}"))
    await store.ping()
    (tmp_path / "media").rmdir()

    with pytest.raises(OSError):
        await store.ping()


def test_only_the_file_store_has_local_paths() -> None:
    assert open_blob_store(load_settings(storage_url="memory://")).local_path("a/b") is None


@pytest.mark.seaweedfs
async def test_an_s3_url_prefix_scopes_every_key(seaweedfs_s3: SeaweedS3) -> None:
    scope = f"tests/{uuid.uuid4().hex}"
    scoped = open_blob_store(s3_settings(seaweedfs_s3, f"{scope}/media"))
    whole_scope = open_blob_store(s3_settings(seaweedfs_s3, scope))

    await scoped.put("tracks/t.m4a", b"audio")

    assert scoped.local_path("tracks/t.m4a") is None
    assert await keys_under(scoped, "") == ["tracks/t.m4a"]
    assert await keys_under(whole_scope, "") == ["media/tracks/t.m4a"]
    assert await whole_scope.get("media/tracks/t.m4a") == b"audio"


@pytest.mark.seaweedfs
async def test_s3_ping_fails_with_wrong_credentials(seaweedfs_s3: SeaweedS3) -> None:
    store = open_blob_store(s3_settings(seaweedfs_s3, "", s3_secret_access_key="wrong"))

    with pytest.raises(Exception, match="403"):
        await store.ping()


def test_s3_needs_both_halves_of_a_key_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    settings = load_settings(
        storage_url="s3://encore-media",
        s3_endpoint="http://127.0.0.1:9",
        s3_allow_http=True,
        s3_access_key_id="only-the-id",
    )

    with pytest.raises(SettingsError, match="ENCORE_S3_SECRET_ACCESS_KEY"):
        open_blob_store(settings)

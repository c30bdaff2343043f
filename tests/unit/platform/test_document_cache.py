"""The rendered-document cache: ETags, conditional requests and revision-bound entries."""

from __future__ import annotations

import asyncio

import pytest

from encore.document_cache import (
    CachedDocumentRoute,
    DocumentCache,
    entity_tag,
    etag_matches,
)


class Revisions:
    """A stand-in for the database's revision row, counting how often it is read."""

    def __init__(self) -> None:
        self.value = 1
        self.reads = 0

    async def read(self) -> int:
        self.reads += 1
        await asyncio.sleep(0)
        return self.value


def test_entity_tag_is_quoted_and_changes_with_the_body() -> None:
    tag = entity_tag(b'{"a":1}')
    assert tag.startswith('"') and tag.endswith('"')
    assert tag == entity_tag(b'{"a":1}')
    assert tag != entity_tag(b'{"a":2}')


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"x","y"', False),
        ("*", True),
        ('"ab"', False),
    ],
)
def test_if_none_match_uses_weak_comparison(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


async def test_a_document_rendered_under_an_old_revision_is_not_kept() -> None:
    revisions = Revisions()
    cache = DocumentCache(max_entries=10, revalidate_seconds=0, read_revision=revisions.read)
    seen = await cache.current_revision()
    revisions.value = 2  # a writer commits while the document is being rendered
    await cache.current_revision()

    document = cache.put(("album", "1"), b"old", revision=seen)

    assert document.body == b"old"  # still answered to this request
    assert cache.get(("album", "1")) is None


async def test_a_new_revision_drops_every_document() -> None:
    revisions = Revisions()
    cache = DocumentCache(max_entries=10, revalidate_seconds=0, read_revision=revisions.read)
    cache.put(("album", "1"), b"one", revision=await cache.current_revision())
    assert cache.get(("album", "1")) is not None

    revisions.value = 2
    await cache.current_revision()

    assert cache.get(("album", "1")) is None


async def test_the_revision_is_read_at_most_once_per_interval() -> None:
    revisions = Revisions()
    cache = DocumentCache(max_entries=10, revalidate_seconds=3600, read_revision=revisions.read)
    for _ in range(5):
        await cache.current_revision()
    assert revisions.reads == 1

    cache.invalidate()
    await cache.current_revision()
    assert revisions.reads == 2


async def test_concurrent_requests_do_not_queue_behind_one_revision_check() -> None:
    release = asyncio.Event()
    calls = 0

    async def slow_read() -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return calls

    cache = DocumentCache(max_entries=10, revalidate_seconds=0, read_revision=slow_read)
    assert await cache.current_revision() == 1
    checking = asyncio.create_task(cache.current_revision())
    await asyncio.sleep(0)
    # While one request re-reads the revision, others answer from what is known.
    assert await asyncio.wait_for(cache.current_revision(), timeout=1) == 1
    release.set()
    assert await checking == 2


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    revisions = Revisions()
    cache = DocumentCache(max_entries=2, revalidate_seconds=3600, read_revision=revisions.read)
    revision = await cache.current_revision()
    cache.put("a", b"a", revision=revision)
    cache.put("b", b"b", revision=revision)
    assert cache.get("a") is not None
    cache.put("c", b"c", revision=revision)

    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None


async def test_a_cache_with_no_room_keeps_nothing_and_reads_no_revision() -> None:
    revisions = Revisions()
    cache = DocumentCache(max_entries=0, revalidate_seconds=0, read_revision=revisions.read)

    revision = await cache.current_revision()
    cache.put("a", b"a", revision=revision)

    assert not cache.enabled
    assert cache.get("a") is None
    assert revisions.reads == 0


def test_cached_routes_match_only_canonical_ids() -> None:
    route = CachedDocumentRoute.for_template("/v1/albums/{album_id}", kind="album")
    canonical = "0190a8f2-7c1e-7b3a-9f00-0123456789ab"

    assert route.pattern.match(f"/v1/albums/{canonical}") is not None
    assert route.pattern.match(f"/v1/albums/{canonical.upper()}") is None
    assert route.pattern.match(f"/v1/albums/{canonical}/artwork") is None
    assert route.pattern.match("/v1/albums/not-a-uuid") is None
    with pytest.raises(ValueError, match="path parameter"):
        CachedDocumentRoute.for_template("/v1/albums", kind="album")


async def test_a_stale_check_runs_in_the_background_and_never_delays_a_request() -> None:
    release = asyncio.Event()
    revisions = Revisions()

    async def slow_read() -> int:
        if revisions.reads > 0:
            await release.wait()
        return await revisions.read()

    cache = DocumentCache(max_entries=10, revalidate_seconds=0.05, read_revision=slow_read)
    assert await cache.current_revision() == 1  # the first answer waits for the revision
    cache.put(("album", "1"), b"one", revision=1)
    revisions.value = 2  # another process commits a change
    await asyncio.sleep(0.06)

    # Stale: the check starts, and requests answer from the known revision meanwhile.
    assert await asyncio.wait_for(cache.current_revision(), timeout=1) == 1
    assert await asyncio.wait_for(cache.current_revision(), timeout=1) == 1
    assert cache.get(("album", "1")) is not None
    release.set()
    for _ in range(100):
        if await cache.current_revision() == 2:
            break
        await asyncio.sleep(0.01)
    assert await cache.current_revision() == 2
    assert cache.get(("album", "1")) is None
    assert revisions.reads == 2  # one background check, however many requests saw it stale


async def test_after_a_local_write_the_next_read_waits_for_the_new_revision() -> None:
    revisions = Revisions()
    cache = DocumentCache(max_entries=10, revalidate_seconds=3600, read_revision=revisions.read)
    assert await cache.current_revision() == 1
    revisions.value = 2  # this process commits a change...
    cache.invalidate()  # ...and says so

    assert await cache.current_revision() == 2  # read your own writes, at once


async def test_a_failing_background_check_keeps_answering_and_tries_again() -> None:
    revisions = Revisions()
    failures = 1

    async def flaky_read() -> int:
        nonlocal failures
        if revisions.reads > 0 and failures:
            failures -= 1
            revisions.reads += 1
            raise ConnectionError("database away")
        return await revisions.read()

    cache = DocumentCache(max_entries=10, revalidate_seconds=0.01, read_revision=flaky_read)
    assert await cache.current_revision() == 1
    revisions.value = 3
    for _ in range(100):
        await asyncio.sleep(0.02)
        if await cache.current_revision() == 3:
            break
    assert await cache.current_revision() == 3

"""The Parquet lake: every logged event exactly once, in hourly partitions of the blob store.

Files are `lake/events/date=YYYY-MM-DD/hour=HH/part-<log>-<position>.parquet` (Hive-style
partitions by the UTC hour the event occurred in; DuckDB, Spark and Trino read them as is).

Exactly once without a transaction across the store and the log: a batch is split by
partition and each part is named after the log position of its first event (in log order).
A consumer that dies after writing and before recording its progress reads the batch again
from the same first position, so every part it writes again has the name of the part it
replaces (put is atomic) — the redo overwrites, it never adds a second copy.

A log may also hold an event twice: JetStream deduplicates a client's retry only within its
duplicate window. The writer records each event it writes (`lake_written_events`, in the
consumer's transaction) and leaves out one it wrote before.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.ext.asyncio import AsyncSession

from encore.bus.event_log import LoggedEvent, first_seen_events
from encore.events.models import LakeWrittenEvent
from encore.storage import BlobStore

LAKE_EVENTS_PREFIX = "lake/events"
LAKE_SCHEMA_VERSION = 1
"""Bumped whenever a column changes meaning or type; readers select on `schema_version`."""

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

EVENT_LAKE_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("log_position", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("track_id", pa.string()),
        pa.field("album_id", pa.string()),
        pa.field("artist_id", pa.string()),
        pa.field("playlist_id", pa.string()),
        pa.field("ms_played", pa.int64()),
        pa.field("position_ms", pa.int64()),
        pa.field("reason_start", pa.string()),
        pa.field("reason_end", pa.string()),
        pa.field("context_type", pa.string()),
        pa.field("context_id", pa.string()),
        pa.field("device", pa.string()),
        pa.field("country", pa.string()),
        pa.field("shuffle", pa.bool_(), nullable=False),
        pa.field("offline", pa.bool_(), nullable=False),
        pa.field("query", pa.string()),
    ],
    metadata={"encore.schema_version": str(LAKE_SCHEMA_VERSION)},
)

_PLAIN_COLUMNS = (
    "track_id",
    "album_id",
    "artist_id",
    "playlist_id",
    "ms_played",
    "position_ms",
    "reason_start",
    "reason_end",
    "device",
    "country",
    "query",
)


def _occurred_at(event: LoggedEvent) -> datetime:
    return datetime.fromisoformat(event.body["occurred_at"]).astimezone(UTC)


def lake_partition(occurred_at: datetime) -> str:
    """The partition path of an event that occurred at this time."""
    utc = occurred_at.astimezone(UTC)
    return f"date={utc:%Y-%m-%d}/hour={utc:%H}"


def _table(events: Sequence[LoggedEvent]) -> pa.Table:
    columns: dict[str, list[object]] = defaultdict(list)
    for event in events:
        body = event.body
        context = body.get("context") or {}
        columns["schema_version"].append(LAKE_SCHEMA_VERSION)
        columns["log_position"].append(event.position)
        columns["event_id"].append(str(event.event_id))
        columns["user_id"].append(str(event.user_id))
        columns["type"].append(body["type"])
        columns["occurred_at"].append(_occurred_at(event))
        columns["received_at"].append(event.received_at)
        for name in _PLAIN_COLUMNS:
            columns[name].append(body.get(name))
        columns["context_type"].append(context.get("type"))
        columns["context_id"].append(context.get("id"))
        columns["shuffle"].append(bool(body.get("shuffle", False)))
        columns["offline"].append(bool(body.get("offline", False)))
    return pa.table(
        {
            name: pa.array(columns[name], type=EVENT_LAKE_SCHEMA.field(name).type)
            for name in EVENT_LAKE_SCHEMA.names
        },
        schema=EVENT_LAKE_SCHEMA,
    )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


async def write_lake_files(
    *, store: BlobStore, events: Sequence[LoggedEvent], log_source: str
) -> list[str]:
    """Write a batch as one Parquet file per hourly partition; returns the keys written."""
    parts: dict[str, list[LoggedEvent]] = defaultdict(list)
    for event in events:
        parts[lake_partition(_occurred_at(event))].append(event)
    keys = []
    for partition, part in sorted(parts.items()):
        # The part's first event in log order, not its lowest position: on PostgreSQL the log
        # is read in (transaction, position) order, and only the first in that order is the
        # same for every batch that starts at the same offset.
        first = part[0].position
        key = f"{LAKE_EVENTS_PREFIX}/{partition}/part-{log_source}-{first:020d}.parquet"
        await store.put(key, _parquet_bytes(_table(part)), content_type=PARQUET_CONTENT_TYPE)
        keys.append(key)
    return keys


class LakeWriter:
    """The lake consumer's handler: a batch of the log becomes Parquet files in the store."""

    def __init__(self, *, store: BlobStore, log_source: str) -> None:
        self._store = store
        self._log_source = log_source

    async def __call__(self, batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
        """Write the batch's events not already in the lake. A redo of the batch (the consumer
        died before committing) finds the same events unwritten, since the record of them
        rolled back, so it rewrites the same files under the same names."""
        events = await first_seen_events(
            db_session, batch, record=LakeWrittenEvent, recorded_at="written_at"
        )
        await write_lake_files(store=self._store, events=events, log_source=self._log_source)

"""Events logic: validating and appending batches, counting plays, history and daily rollups."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import orjson
from cachetools import TTLCache
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from encore.bus.event_log import EventLog, EventToAppend, LoggedEvent, first_seen_events
from encore.catalog import service as catalog_service
from encore.db import delete_recorded_before, dialect_insert, new_id, utcnow
from encore.events.activity import (
    PlayInterval,
    apply_listener_activity,
    record_artist_listener_days,
)
from encore.events.models import (
    CountedEvent,
    DailyArtistListener,
    DailyArtistStats,
    DailyListeningStats,
    DailyTrackListener,
    DailyTrackStats,
    LakeWrittenEvent,
    ListeningHistoryEntry,
)
from encore.events.schemas import (
    MAX_EVENTS_PER_BATCH,
    PLAY_END_EVENT_TYPES,
    PLAY_EVENT_TYPES,
    STREAM_THRESHOLD_MS,
    EventBatchResult,
    EventType,
    ListeningEvent,
    RecentlyPlayedContext,
    RecentlyPlayedItem,
    RecentlyPlayedPage,
    RejectedEvent,
    WireEventBatch,
    WireListeningEvent,
    free_of_control_characters,
)
from encore.pagination import decode_cursor, encode_cursor
from encore.problems import InvalidInput, TooManyRequests

MAX_FUTURE_SKEW = timedelta(minutes=5)
"""A device clock may run this far ahead; later occurred_at values are refused."""

MAX_ONLINE_AGE = timedelta(hours=24)
"""Events sent as they happen (offline=false) may be this old: retries over a bad network."""

MAX_OFFLINE_AGE = timedelta(days=30)
"""Events buffered on a device (offline=true) may be this old."""

OVERLAP_TOLERANCE = timedelta(seconds=5)
"""Two streams of one account may overlap this much (crossfade, clock jitter) and both count."""

OVERLAPPING_PLAY = "overlapping_play"
"""Flag of a stream heard while the same account was already hearing another: not counted."""

RECENTLY_PLAYED_MAX_LIMIT = 50

_EVENT_LIST = TypeAdapter(list[ListeningEvent])
_EVENT_SERIALIZER = ListeningEvent.__pydantic_serializer__
_WIRE_BATCH = msgspec.json.Decoder(WireEventBatch)
_WIRE_EVENT_ENCODER = msgspec.json.Encoder()

AcceptedEvent = ListeningEvent | WireListeningEvent
"""A valid event, from the fast path (msgspec) or the one that names every problem (pydantic)."""


# --- ingest ------------------------------------------------------------------------------


def _requirement_errors(event: AcceptedEvent) -> list[str]:
    """What a valid event of this type is missing or carries in excess."""
    errors: list[str] = []
    kind = event.type
    if kind in PLAY_EVENT_TYPES and event.track_id is None:
        errors.append(f"track_id: required for {kind} events")
    if kind in PLAY_END_EVENT_TYPES and event.ms_played is None:
        errors.append(f"ms_played: required for {kind} events")
    if kind in (EventType.like, EventType.unlike) and (event.track_id is None) == (
        event.album_id is None
    ):
        errors.append(f"{kind} events name exactly one of track_id and album_id")
    if kind is EventType.playlist_add and (event.track_id is None or event.playlist_id is None):
        errors.append("playlist_add events need track_id and playlist_id")
    if kind is EventType.follow and (event.artist_id is None) == (event.playlist_id is None):
        errors.append("follow events name exactly one of artist_id and playlist_id")
    if kind is EventType.search and not event.query:
        errors.append("query: required for search events")
    return errors


def _time_errors(event: AcceptedEvent, now: datetime) -> list[str]:
    """Whether occurred_at lies in the window the server accepts."""
    if event.occurred_at - now > MAX_FUTURE_SKEW:
        return ["occurred_at: more than 5 minutes in the future"]
    age = now - event.occurred_at
    if age > MAX_OFFLINE_AGE:
        return ["occurred_at: more than 30 days ago"]
    if age > MAX_ONLINE_AGE and not event.offline:
        return ["occurred_at: more than 24 hours ago; send buffered events with offline=true"]
    return []


def _describe_validation_error(error: ValidationError) -> list[str]:
    messages = []
    for detail in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in detail["loc"]) or "event"
        messages.append(f"{where}: {detail['msg']}")
    return messages


@dataclass(frozen=True, slots=True)
class ValidatedBatch:
    """A batch split into the events to append, in-batch repeats, and refusals."""

    events: list[AcceptedEvent]
    repeated: int
    rejected: list[RejectedEvent]


def decode_event_batch(body: bytes, *, now: datetime) -> ValidatedBatch:
    """Check a posted `{"events": [...]}` body; InvalidInput when it is not JSON of that shape.

    Well-formed batches (nearly all) are decoded and validated by msgspec in one pass; any
    batch it refuses goes through parse_event_batch, which names each problem of each event.
    """
    try:
        wire = _WIRE_BATCH.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return parse_event_batch(_json_document(body), now=now)
    if not _free_text_is_clean(wire.events):
        return parse_event_batch(_json_document(body), now=now)
    return _judge_events(wire.events, now=now)


def _free_text_is_clean(events: Iterable[WireListeningEvent]) -> bool:
    """Whether no context id or search query holds a control character (the one check msgspec
    leaves to this module)."""
    for event in events:
        context = event.context
        context_id = context.id if context is not None else None
        if context_id is not None and not free_of_control_characters(context_id):
            return False
        if event.query is not None and not free_of_control_characters(event.query):
            return False
    return True


def _judge_events(
    candidates: Iterable[AcceptedEvent | RejectedEvent], *, now: datetime
) -> ValidatedBatch:
    """Sort a batch's well-formed events (in order, refusals already made passed through) into
    those to append, in-batch repeats, and those refused for their type's needs or their time."""
    events: list[AcceptedEvent] = []
    rejected: list[RejectedEvent] = []
    # Event ids as integers: UUID's own hash is a Python-level call, twice per event.
    seen: set[int] = set()
    repeated = 0
    # Inside this window no time rule applies (nearly every event): one comparison each.
    earliest_unremarkable = now - MAX_ONLINE_AGE
    latest_allowed = now + MAX_FUTURE_SKEW
    for index, event in enumerate(candidates):
        if isinstance(event, RejectedEvent):
            rejected.append(event)
            continue
        errors = _requirement_errors(event)
        if not earliest_unremarkable <= event.occurred_at <= latest_allowed:
            errors += _time_errors(event, now)
        key = event.event_id.int
        if errors:
            rejected.append(RejectedEvent(index=index, event_id=str(event.event_id), errors=errors))
        elif key in seen:
            repeated += 1  # the same event twice in one batch: recorded once
        else:
            seen.add(key)
            events.append(event)
    return ValidatedBatch(events, repeated, rejected)


def _json_document(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(
            f"the body is not valid JSON: {error.msg}",
            extra={"errors": [{"field": "body", "message": "not valid JSON"}]},
        ) from None


def parse_event_batch(document: Any, *, now: datetime) -> ValidatedBatch:
    """Check a parsed `{"events": [...]}` document, naming every problem of every event;
    InvalidInput when its shape is wrong."""
    if not isinstance(document, dict) or set(document) != {"events"}:
        raise InvalidInput(
            "the body must be a JSON object with one field, events",
            extra={"errors": [{"field": "body", "message": 'expected {"events": [...]}'}]},
        )
    raw_events = document["events"]
    if not isinstance(raw_events, list) or not 1 <= len(raw_events) <= MAX_EVENTS_PER_BATCH:
        raise InvalidInput(
            f"events must be a list of 1 to {MAX_EVENTS_PER_BATCH} events",
            extra={"errors": [{"field": "body.events", "message": "1 to 1000 events"}]},
        )
    try:
        # One call for the whole batch when every event is well formed (the common case);
        # event by event only to name the ones that are not.
        parsed: list[ListeningEvent | None] = list(_EVENT_LIST.validate_python(raw_events))
    except ValidationError:
        parsed = [None] * len(raw_events)
    candidates: list[AcceptedEvent | RejectedEvent] = []
    for index, raw in enumerate(raw_events):
        try:
            candidates.append(parsed[index] or ListeningEvent.model_validate(raw))
        except ValidationError as error:
            raw_id = raw.get("event_id") if isinstance(raw, dict) else None
            candidates.append(
                RejectedEvent(
                    index=index,
                    event_id=str(raw_id)[:64] if raw_id is not None else None,
                    errors=_describe_validation_error(error),
                )
            )
    return _judge_events(candidates, now=now)


class EventRateLimiter:
    """Per-account token bucket on events: a burst of a full batch, then a steady rate.

    Kept in each API process: with N processes an account may reach N times the rate, which
    still stops a script replaying a track thousands of times a minute; the listening consumer
    flags the plays that get through (overlapping streams) so they are never counted.
    """

    def __init__(self, *, events_per_minute: int, max_accounts: int = 200_000) -> None:
        self._rate = events_per_minute / 60.0
        self._capacity = float(max(events_per_minute, MAX_EVENTS_PER_BATCH))
        # (tokens, monotonic time of the last refill) per account; idle accounts expire.
        self._buckets: TTLCache[uuid.UUID, tuple[float, float]] = TTLCache(
            maxsize=max_accounts, ttl=max(60.0, self._capacity / max(self._rate, 1e-9))
        )

    def take(self, user_id: uuid.UUID, count: int) -> None:
        """Spend `count` tokens of the account; TooManyRequests (with Retry-After) when short."""
        now = time.monotonic()
        tokens, refilled_at = self._buckets.get(user_id, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - refilled_at) * self._rate)
        if tokens < count:
            self._buckets[user_id] = (tokens, now)
            wait = (count - tokens) / self._rate if self._rate > 0 else 60.0
            raise TooManyRequests(
                "too many events from this account: retry later",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        self._buckets[user_id] = (tokens - count, now)

    def give_back(self, user_id: uuid.UUID, count: int) -> None:
        """Return tokens of a batch that was not recorded (its retry pays again)."""
        tokens, refilled_at = self._buckets.get(user_id, (self._capacity, time.monotonic()))
        self._buckets[user_id] = (min(self._capacity, tokens + count), refilled_at)


def _events_to_append(
    events: Sequence[AcceptedEvent], user_id: uuid.UUID, received_at: datetime
) -> list[EventToAppend]:
    # The server's fields are the same for every event of the request: encoded once, then
    # spliced in front of each event's own fields.
    server_fields = orjson.dumps({"user_id": str(user_id), "received_at": received_at.isoformat()})
    head = server_fields[:-1] + b","
    # A batch comes whole from one decoder: msgspec's events skip the per-event type test.
    encode = (
        _WIRE_EVENT_ENCODER.encode
        if all(type(event) is WireListeningEvent for event in events)
        else _client_fields
    )
    return [
        EventToAppend(
            user_id,
            event.event_id,
            # The member itself: a StrEnum is its value (Enum.value is a slow property).
            event.type,
            received_at,
            head + encode(event)[1:],
            event.occurred_at,
        )
        for event in events
    ]


def _client_fields(event: AcceptedEvent) -> bytes:
    """The event's own fields as a JSON object, defaults left out (as a client may)."""
    if isinstance(event, WireListeningEvent):
        return _WIRE_EVENT_ENCODER.encode(event)
    return _EVENT_SERIALIZER.to_json(event, exclude_defaults=True)


async def record_events(
    *,
    event_log: EventLog,
    rate_limiter: EventRateLimiter | None,
    user_id: uuid.UUID,
    body: bytes,
) -> EventBatchResult:
    """Validate a posted batch (a JSON body) and append its valid events durably; returns
    what became of each."""
    now = utcnow()
    batch = decode_event_batch(body, now=now)
    if rate_limiter is not None and batch.events:
        rate_limiter.take(user_id, len(batch.events))
    try:
        result = await event_log.append(_events_to_append(batch.events, user_id, now))
    except BaseException:
        if rate_limiter is not None and batch.events:
            rate_limiter.give_back(user_id, len(batch.events))
        raise
    return EventBatchResult(
        accepted=result.appended,
        duplicates=result.duplicates + batch.repeated,
        rejected=batch.rejected,
    )


async def record_library_events(
    *,
    event_log: EventLog,
    user_id: uuid.UUID,
    kind: str,
    targets: Sequence[Mapping[str, uuid.UUID]],
) -> None:
    """Append the events of a change made through the library API (like, unlike, follow,
    playlist_add), one per target (e.g. `{"track_id": ...}`); server-made event ids."""
    now = utcnow()
    events = [
        ListeningEvent.model_validate(
            {"event_id": uuid.uuid4(), "type": kind, "occurred_at": now, **target}
        )
        for target in targets
    ]
    await event_log.append(_events_to_append(events, user_id, now))


# --- the listening consumer -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Play:
    """An event of the batch, decoded once."""

    event: LoggedEvent
    type: str
    occurred_at: datetime
    track_id: uuid.UUID | None
    ms_played: int
    dimensions: tuple[str, str, str]  # country, device, source

    @property
    def day(self) -> date:
        return self.occurred_at.date()

    @property
    def started_at(self) -> datetime:
        return self.occurred_at - timedelta(milliseconds=self.ms_played)


def _decode_play(event: LoggedEvent) -> _Play:
    body = event.body
    track = body.get("track_id")
    context = body.get("context") or {}
    occurred = datetime.fromisoformat(body["occurred_at"])
    return _Play(
        event=event,
        type=body["type"],
        # Days and hours are UTC days and hours, whatever the device's offset.
        occurred_at=occurred.astimezone(UTC),
        track_id=uuid.UUID(track) if track else None,
        ms_played=int(body.get("ms_played") or 0),
        dimensions=(body.get("country", ""), body.get("device", ""), context.get("type", "")),
    )


@dataclass
class _Counters:
    plays: int = 0
    streams: int = 0
    ms_played: int = 0
    skips: int = 0
    likes: int = 0
    unlikes: int = 0
    playlist_adds: int = 0
    flagged_plays: int = 0

    def as_row(self) -> dict[str, int]:
        return {
            "plays": self.plays,
            "streams": self.streams,
            "ms_played": self.ms_played,
            "skips": self.skips,
            "likes": self.likes,
            "unlikes": self.unlikes,
            "playlist_adds": self.playlist_adds,
            "flagged_plays": self.flagged_plays,
        }


@dataclass
class _Rollup:
    """Counter increments of one batch, keyed like the rollup tables."""

    tracks: dict[tuple[date, uuid.UUID, str, str, str], _Counters] = field(
        default_factory=lambda: defaultdict(_Counters)
    )
    artists: dict[tuple[date, uuid.UUID, str, str, str], _Counters] = field(
        default_factory=lambda: defaultdict(_Counters)
    )
    track_listeners: dict[tuple[date, uuid.UUID, uuid.UUID], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    artist_listeners: dict[tuple[date, uuid.UUID, uuid.UUID], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    track_streams: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    artist_streams: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    day_streams: dict[date, int] = field(default_factory=lambda: defaultdict(int))


DEDUPE_RECORD_MARGIN = timedelta(days=1)
PRUNE_CHUNK = 10_000


def dedupe_record_horizon(*, now: datetime, log_retention_days: int) -> datetime:
    """Records of applied or written events older than this can go: a copy of their event can
    no longer reach the log. A client may send an event again until it is MAX_OFFLINE_AGE
    old (its occurred_at, never after it was recorded), and a copy stays in the log for its
    retention, plus a day's margin."""
    return now - MAX_OFFLINE_AGE - timedelta(days=log_retention_days) - DEDUPE_RECORD_MARGIN


async def prune_dedupe_records(
    *, db_session: AsyncSession, older_than: datetime, chunk: int = PRUNE_CHUNK
) -> dict[str, int]:
    """Delete `counted_events` and `lake_written_events` rows recorded before `older_than`,
    in committed chunks; rows deleted per table."""
    return {
        "counted_events": await delete_recorded_before(
            db_session,
            keys=(CountedEvent.user_id, CountedEvent.event_id),
            recorded_at=CountedEvent.counted_at,
            older_than=older_than,
            chunk=chunk,
        ),
        "lake_written_events": await delete_recorded_before(
            db_session,
            keys=(LakeWrittenEvent.user_id, LakeWrittenEvent.event_id),
            recorded_at=LakeWrittenEvent.written_at,
            older_than=older_than,
            chunk=chunk,
        ),
    }


def _overlaps(play: _Play, accepted: Iterable[tuple[datetime, datetime]]) -> bool:
    start, end = play.started_at, play.occurred_at
    return any(
        min(end, other_end) - max(start, other_start) > OVERLAP_TOLERANCE
        for other_start, other_end in accepted
    )


async def _judge_streams(
    db_session: AsyncSession, candidates: list[_Play]
) -> dict[tuple[uuid.UUID, uuid.UUID], str | None]:
    """Flag each stream candidate that overlaps an already counted stream of the same account."""
    if not candidates:
        return {}
    users = {play.event.user_id for play in candidates}
    earliest = min(play.started_at for play in candidates)
    latest = max(play.occurred_at for play in candidates)
    rows = await db_session.execute(
        select(
            ListeningHistoryEntry.user_id,
            ListeningHistoryEntry.started_at,
            ListeningHistoryEntry.played_at,
        ).where(
            ListeningHistoryEntry.user_id.in_(users),
            ListeningHistoryEntry.played_at > earliest,
            ListeningHistoryEntry.started_at < latest,
            ListeningHistoryEntry.flag.is_(None),
        )
    )
    accepted: dict[uuid.UUID, list[tuple[datetime, datetime]]] = defaultdict(list)
    for user_id, started_at, played_at in rows:
        accepted[user_id].append((started_at, played_at))
    verdicts: dict[tuple[uuid.UUID, uuid.UUID], str | None] = {}
    # A fixed order within the batch, so the same batch always gets the same verdicts.
    for play in sorted(candidates, key=lambda p: (p.occurred_at, str(p.event.event_id))):
        key = (play.event.user_id, play.event.event_id)
        if _overlaps(play, accepted[play.event.user_id]):
            verdicts[key] = OVERLAPPING_PLAY
        else:
            verdicts[key] = None
            accepted[play.event.user_id].append((play.started_at, play.occurred_at))
    return verdicts


async def apply_listening_events(batch: Sequence[LoggedEvent], db_session: AsyncSession) -> None:
    """The listening consumer: history, play counts, daily rollups and listener activity
    (active days, sessions, cohorts), each event once."""
    fresh = await first_seen_events(
        db_session, batch, record=CountedEvent, recorded_at="counted_at"
    )
    if not fresh:
        return
    plays = [_decode_play(event) for event in fresh]
    # Activity and sessions are the account's, whatever the track: every play event counts,
    # known to the catalog or not, counted as a stream or flagged (as in the lake).
    await apply_listener_activity(
        db_session,
        [
            PlayInterval(
                user_id=play.event.user_id,
                started_at=play.started_at
                if play.type in PLAY_END_EVENT_TYPES
                else play.occurred_at,
                ended_at=play.occurred_at,
            )
            for play in plays
            if play.type in PLAY_EVENT_TYPES
        ],
    )
    facts = await catalog_service.get_track_stream_facts(
        db_session=db_session, track_ids={p.track_id for p in plays if p.track_id is not None}
    )
    # Events about tracks the catalog does not know (deleted, or never existed) count nowhere.
    plays = [p for p in plays if p.track_id is None or p.track_id in facts]
    candidates = [
        p
        for p in plays
        if p.type in PLAY_END_EVENT_TYPES
        and p.track_id is not None
        and p.ms_played >= STREAM_THRESHOLD_MS
    ]
    verdicts = await _judge_streams(db_session, candidates)
    rollup = _Rollup()
    history_rows = []
    for play in plays:
        if play.track_id is None:
            continue
        artist_ids = facts[play.track_id].primary_artist_ids
        counters = [rollup.tracks[(play.day, play.track_id, *play.dimensions)]]
        counters += [rollup.artists[(play.day, artist, *play.dimensions)] for artist in artist_ids]
        key = (play.event.user_id, play.event.event_id)
        flag = verdicts.get(key)
        is_stream = key in verdicts and flag is None
        for counter in counters:
            _count(counter, play, is_stream=is_stream, flagged=flag is not None)
        if key in verdicts:
            history_rows.append(_history_row(play, flag))
        if is_stream:
            user = play.event.user_id
            rollup.track_listeners[(play.day, play.track_id, user)] += 1
            rollup.track_streams[play.track_id] += 1
            rollup.day_streams[play.day] += 1
            for artist in artist_ids:
                rollup.artist_listeners[(play.day, artist, user)] += 1
                rollup.artist_streams[artist] += 1
    if history_rows:
        await db_session.execute(
            dialect_insert(db_session)(ListeningHistoryEntry).on_conflict_do_nothing(
                index_elements=[ListeningHistoryEntry.user_id, ListeningHistoryEntry.event_id]
            ),
            history_rows,
        )
    await _upsert_rollups(db_session, rollup)
    await catalog_service.add_stream_counts(
        db_session=db_session,
        track_streams=rollup.track_streams,
        artist_streams=rollup.artist_streams,
    )


def _count(counter: _Counters, play: _Play, *, is_stream: bool, flagged: bool) -> None:
    kind = play.type
    if kind == EventType.play_start:
        counter.plays += 1
    elif kind in PLAY_END_EVENT_TYPES:
        if flagged:
            counter.flagged_plays += 1
        else:
            counter.ms_played += play.ms_played
        if is_stream:
            counter.streams += 1
        if kind == EventType.skip:
            counter.skips += 1
    elif kind == EventType.like:
        counter.likes += 1
    elif kind == EventType.unlike:
        counter.unlikes += 1
    elif kind == EventType.playlist_add:
        counter.playlist_adds += 1


def _history_row(play: _Play, flag: str | None) -> dict[str, Any]:
    context = play.event.body.get("context") or {}
    assert play.track_id is not None
    return {
        "id": new_id(),
        "user_id": play.event.user_id,
        "event_id": play.event.event_id,
        "track_id": play.track_id,
        "played_at": play.occurred_at,
        "started_at": play.started_at,
        "ms_played": play.ms_played,
        "context_type": context.get("type"),
        "context_id": context.get("id"),
        "device": play.event.body.get("device"),
        "country": play.event.body.get("country"),
        "flag": flag,
    }


_COUNTER_COLUMNS = tuple(_Counters().as_row())


async def _upsert_counters(
    db_session: AsyncSession,
    model: type[DailyTrackStats] | type[DailyArtistStats],
    entity_column: str,
    increments: Mapping[tuple[date, uuid.UUID, str, str, str], _Counters],
) -> None:
    if not increments:
        return
    statement = dialect_insert(db_session)(model)
    table = model.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["day", entity_column, "country", "device", "source"],
        set_={column: table.c[column] + statement.excluded[column] for column in _COUNTER_COLUMNS},
    )
    rows = [
        {
            "day": day,
            entity_column: entity,
            "country": country,
            "device": device,
            "source": source,
            **counters.as_row(),
        }
        for (day, entity, country, device, source), counters in sorted(increments.items())
    ]
    await db_session.execute(statement, rows)


async def _upsert_listeners(
    db_session: AsyncSession,
    model: type[DailyTrackListener] | type[DailyArtistListener],
    entity_column: str,
    increments: Mapping[tuple[date, uuid.UUID, uuid.UUID], int],
) -> None:
    if not increments:
        return
    statement = dialect_insert(db_session)(model)
    table = model.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["day", entity_column, "user_id"],
        set_={"streams": table.c.streams + statement.excluded.streams},
    )
    rows = [
        {"day": day, entity_column: entity, "user_id": user, "streams": streams}
        for (day, entity, user), streams in sorted(increments.items())
    ]
    await db_session.execute(statement, rows)


async def _insert_artist_listeners(
    db_session: AsyncSession, increments: Mapping[tuple[date, uuid.UUID, uuid.UUID], int]
) -> set[tuple[uuid.UUID, uuid.UUID, date]]:
    """Add streams to the artists' listener rows; returns the (artist, user, day) rows that
    are new, which the listener gaps count."""
    if not increments:
        return set()
    statement = dialect_insert(db_session)(DailyArtistListener)
    table = DailyArtistListener.__table__
    upserted = await db_session.execute(
        statement.on_conflict_do_update(
            index_elements=["day", "artist_id", "user_id"],
            set_={"streams": table.c.streams + statement.excluded.streams},
        ).returning(
            DailyArtistListener.day,
            DailyArtistListener.artist_id,
            DailyArtistListener.user_id,
            DailyArtistListener.streams,
        ),
        [
            {"day": day, "artist_id": artist, "user_id": user, "streams": streams}
            for (day, artist, user), streams in sorted(increments.items())
        ],
    )
    # A row holds a stream from the start, so one holding just this batch's streams is new.
    return {
        (artist, user, day)
        for day, artist, user, streams in upserted.all()
        if streams == increments[(day, artist, user)]
    }


async def _upsert_rollups(db_session: AsyncSession, rollup: _Rollup) -> None:
    await _upsert_counters(db_session, DailyTrackStats, "track_id", rollup.tracks)
    await _upsert_counters(db_session, DailyArtistStats, "artist_id", rollup.artists)
    await _upsert_listeners(db_session, DailyTrackListener, "track_id", rollup.track_listeners)
    new_artist_listeners = await _insert_artist_listeners(db_session, rollup.artist_listeners)
    await record_artist_listener_days(db_session, new_artist_listeners)
    if rollup.day_streams:
        # Streams per day over every track, for engagement: a day's row, not its track rows.
        statement = dialect_insert(db_session)(DailyListeningStats)
        await db_session.execute(
            statement.on_conflict_do_update(
                index_elements=["day"],
                set_={
                    "streams": DailyListeningStats.__table__.c.streams + statement.excluded.streams
                },
            ),
            [
                {"day": day, "sessions": 0, "session_us": 0, "session_plays": 0, "streams": n}
                for day, n in sorted(rollup.day_streams.items())
            ],
        )


# --- reading ------------------------------------------------------------------------------


async def list_recently_played(
    *, db_session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> RecentlyPlayedPage:
    """The account's streams, newest first (flagged plays left out)."""
    query = (
        select(ListeningHistoryEntry)
        .where(ListeningHistoryEntry.user_id == user_id, ListeningHistoryEntry.flag.is_(None))
        .order_by(ListeningHistoryEntry.played_at.desc(), ListeningHistoryEntry.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        after = decode_cursor(cursor, {"played_at", "id"})
        try:
            played_at = datetime.fromisoformat(after["played_at"])
            last_id = uuid.UUID(after["id"])
        except (TypeError, ValueError):
            raise InvalidInput(
                "cursor is not valid: pass the next_cursor of a previous page unchanged",
                extra={"errors": [{"field": "query.cursor", "message": "not a cursor"}]},
            ) from None
        query = query.where(
            or_(
                ListeningHistoryEntry.played_at < played_at,
                and_(
                    ListeningHistoryEntry.played_at == played_at,
                    ListeningHistoryEntry.id < last_id,
                ),
            )
        )
    entries = list((await db_session.scalars(query)).all())
    more = len(entries) > limit
    entries = entries[:limit]
    tracks = await catalog_service.get_tracks(
        db_session=db_session, track_ids={entry.track_id for entry in entries}
    )
    items = [
        RecentlyPlayedItem(
            track=tracks[entry.track_id],
            played_at=entry.played_at,
            context=RecentlyPlayedContext(type=entry.context_type, id=entry.context_id)
            if entry.context_type
            else None,
        )
        for entry in entries
        if entry.track_id in tracks
    ]
    next_cursor = (
        encode_cursor({"played_at": entries[-1].played_at.isoformat(), "id": str(entries[-1].id)})
        if more
        else None
    )
    return RecentlyPlayedPage(items=items, next_cursor=next_cursor)

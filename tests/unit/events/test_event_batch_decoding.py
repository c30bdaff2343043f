"""Ingest's two validators agree: the msgspec fast path that takes well-formed batches and
the pydantic path that names every problem (and takes every batch the fast path refuses).

Generated batches mix valid and hostile values for every field; whatever path a batch
takes, the verdict (accepted events, repeats, refusals and their reasons) and the body each
accepted event is logged with must be the same as the naming path's alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encore.bus.event_log import AppendResult, EventConsumer, EventToAppend
from encore.events.schemas import MAX_MS_PLAYED, ContextType, DeviceType, EventType
from encore.events.service import decode_event_batch, parse_event_batch, record_events
from encore.problems import InvalidInput

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
ID = "0190f1c2-0000-7000-8000-00000000000"
MISSING = object()


def _iso(moment: datetime) -> str:
    return moment.isoformat()


FIELD_VALUES: dict[str, list[Any]] = {
    "event_id": [
        *(f"{ID}{n}" for n in range(4)),  # repeats within a batch happen
        uuid.UUID(f"{ID}5").hex,
        f"{ID}6".upper(),
        "not-a-uuid",
        123,
        None,
        MISSING,
    ],
    "type": [*(kind.value for kind in EventType), "PLAY_END", "", 5, None, MISSING],
    "occurred_at": [
        _iso(NOW - timedelta(hours=1)),
        (NOW - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        (NOW - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.%fz"),
        (NOW - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%SZ"),
        (NOW - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z"),
        _iso((NOW - timedelta(hours=2)).astimezone(UTC).replace(tzinfo=None)),  # naive
        _iso((NOW - timedelta(hours=2)).astimezone(UTC)).replace("+00:00", "+02:00"),
        _iso(NOW + timedelta(minutes=10)),  # too far ahead
        _iso(NOW - timedelta(days=2)),  # needs offline=true
        _iso(NOW - timedelta(days=40)),  # too old for anything
        "2026-11-26",
        "yesterday",
        NOW.timestamp(),
        None,
        MISSING,
    ],
    "track_id": [f"{ID}9", "nope", 7, None, MISSING],
    "album_id": [f"{ID}8", None, MISSING],
    "artist_id": [f"{ID}7", None, MISSING],
    "playlist_id": [f"{ID}6", "x", None, MISSING],
    "ms_played": [0, 185_000, MAX_MS_PLAYED, MAX_MS_PLAYED + 1, -1, "185000", 1.0, 1.5, True],
    "position_ms": [0, 5_000, -5, None, MISSING],
    "reason_start": ["trackdone", "clickrow", "nope", None, MISSING],
    "reason_end": ["trackdone", "unexpected-exit", "unexpected_exit", None, MISSING],
    "context": [
        {"type": "album", "id": "a1"},
        {"type": "radio"},
        {"type": "album", "id": None},
        {"type": "album", "id": ""},
        {"type": "album", "id": "x" * 101},
        {"type": "album", "id": "a\x00b"},
        {"type": "album", "id": "line\n"},
        {"type": "album", "id": "tab\there"},
        {"type": "album", "id": "é ü 漢字"},
        {"type": "album", "id": "é\x00"},
        {"type": "album", "id": "漢字\x7f"},
        {"type": "nope"},
        {"type": "album", "extra": 1},
        "album",
        None,
        MISSING,
    ],
    "device": [*[device.value for device in DeviceType][:3], "toaster", None, MISSING],
    "country": ["SE", "se", "SE\n", "SWE", "", "ÄÖ", "S", 46, None, MISSING],
    "shuffle": [True, False, "true", 1, None, MISSING],
    "offline": [True, False, 0, None, MISSING],
    "query": [
        "lofi",
        "",
        "q" * 200,
        "q" * 201,
        "nul\x00",
        "end\n",
        "\x7f",
        "ça va",
        "ça\x1f",
        None,
        MISSING,
    ],
    "bogus": [1, MISSING, MISSING, MISSING],
}
for _kind in ContextType:
    FIELD_VALUES["context"].append({"type": _kind.value, "id": "c"})
# ms_played is missing or null as often as it is anything else.
FIELD_VALUES["ms_played"] += [None, MISSING] * 5


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """One event: every field drawn from valid and hostile values, or left out."""
    event = {}
    for name, values in FIELD_VALUES.items():
        value = draw(st.sampled_from(values))
        if value is not MISSING:
            event[name] = value
    return event


@st.composite
def mostly_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed play_end or like, so the fast path's accepting side is well exercised."""
    event: dict[str, Any] = {
        "event_id": draw(st.sampled_from(FIELD_VALUES["event_id"][:5])),
        "occurred_at": draw(st.sampled_from(FIELD_VALUES["occurred_at"][:9])),
        "offline": draw(st.booleans()),
    }
    if draw(st.booleans()):
        event.update(type="play_end", track_id=f"{ID}9", ms_played=draw(st.integers(0, 10**6)))
        for name in ("reason_end", "context", "device", "country", "shuffle", "position_ms"):
            value = draw(st.sampled_from(FIELD_VALUES[name][:2]))
            if value is not MISSING:
                event[name] = value
    else:
        event.update(type="like", album_id=f"{ID}8")
    return event


@st.composite
def one_field_off(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed event with one field set to any value of its list, or left out: where
    the two validators could disagree on a single value, this is where it shows."""
    event = draw(mostly_valid_events())
    name = draw(st.sampled_from(sorted(FIELD_VALUES)))
    value = draw(st.sampled_from(FIELD_VALUES[name]))
    if value is MISSING:
        event.pop(name, None)
    else:
        event[name] = value
    return event


def _verdict(batch: Any) -> tuple[list[str], int, list[tuple[int, str | None, list[str]]]]:
    return (
        [str(event.event_id) for event in batch.events],
        batch.repeated,
        [(refusal.index, refusal.event_id, refusal.errors) for refusal in batch.rejected],
    )


def _naming_path(document: Any) -> Any:
    try:
        return _verdict(parse_event_batch(document, now=NOW))
    except InvalidInput as problem:
        return ("invalid", problem.detail)


def _either_path(document: Any) -> Any:
    try:
        return _verdict(decode_event_batch(orjson.dumps(document), now=NOW))
    except InvalidInput as problem:
        return ("invalid", problem.detail)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(one_field_off(), mostly_valid_events(), events()), min_size=0, max_size=4)
)
def test_both_paths_give_the_same_verdict(batch: list[dict[str, Any]]) -> None:
    document = {"events": batch}
    assert _either_path(document) == _naming_path(document)


BASE_EVENTS = [
    {
        "event_id": f"{ID}1",
        "type": "play_end",
        "occurred_at": _iso(NOW - timedelta(minutes=5)),
        "track_id": f"{ID}9",
        "ms_played": 185_000,
        "position_ms": 185_000,
        "reason_start": "clickrow",
        "reason_end": "trackdone",
        "context": {"type": "album", "id": "a1"},
        "device": "phone",
        "country": "SE",
        "shuffle": True,
        "offline": False,
    },
    {"event_id": f"{ID}2", "type": "like", "occurred_at": _iso(NOW), "album_id": f"{ID}8"},
    {"event_id": f"{ID}3", "type": "search", "occurred_at": _iso(NOW), "query": "lofi"},
]


def test_every_single_value_gets_the_same_verdict() -> None:
    # Each listed value of each field, alone in an otherwise valid event: exhaustive where
    # the generated batches above are a sample.
    disagreements = []
    for base in BASE_EVENTS:
        for name, values in FIELD_VALUES.items():
            for value in values:
                event = {key: item for key, item in base.items() if key != name}
                if value is not MISSING:
                    event[name] = value
                document = {"events": [event]}
                if _either_path(document) != _naming_path(document):
                    disagreements.append((base["type"], name, value))
    assert disagreements == []


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"events": "x"},
        {"events": [], "more": 1},
        {"events": [{"event_id": f"{ID}1"}] * 1001},
        {},
    ],
)
def test_malformed_documents_are_refused_alike(document: Any) -> None:
    assert _either_path(document) == _naming_path(document)
    assert _either_path(document)[0] == "invalid"


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_event_batch(b'{"events": [', now=NOW)


class CapturingLog:
    """An event log that keeps what it is given (the bodies are what this test compares)."""

    source = "memory"

    def __init__(self) -> None:
        self.events: list[EventToAppend] = []

    async def append(self, events: Sequence[EventToAppend]) -> AppendResult:
        self.events += events
        return AppendResult(len(events), 0)

    async def consume_once(self, consumer: EventConsumer) -> int:
        return 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _logged(events: Sequence[EventToAppend]) -> dict[str, dict[str, Any]]:
    bodies = {}
    for event in events:
        body = orjson.loads(event.body)
        # The same instant, whichever serializer wrote it.
        body["occurred_at"] = datetime.fromisoformat(body["occurred_at"])
        body.pop("received_at")
        bodies[body["event_id"]] = body
    return bodies


@settings(max_examples=150, deadline=None)
@given(st.lists(mostly_valid_events(), min_size=1, max_size=5))
async def test_both_paths_log_the_same_bodies(batch: list[dict[str, Any]]) -> None:
    user_id = uuid.uuid4()
    fast, naming = CapturingLog(), CapturingLog()
    # One hostile event sends the whole batch down the naming path.
    hostile = {"event_id": f"{ID}9", "type": "nope", "occurred_at": "x"}
    await record_events(
        event_log=fast, rate_limiter=None, user_id=user_id, body=orjson.dumps({"events": batch})
    )
    result = await record_events(
        event_log=naming,
        rate_limiter=None,
        user_id=user_id,
        body=orjson.dumps({"events": [*batch, hostile]}),
    )
    assert [refusal.index for refusal in result.rejected][-1:] == [len(batch)]
    assert _logged(fast.events) == _logged(naming.events)
    assert all(orjson.loads(event.body)["user_id"] == str(user_id) for event in fast.events)

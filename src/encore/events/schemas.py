"""Listening events as clients send them, and the answers of the events API."""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime
from string import ascii_uppercase
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from encore.catalog.schemas import TrackRead

MAX_EVENTS_PER_BATCH = 1000
MAX_MS_PLAYED = 24 * 3600 * 1000
STREAM_THRESHOLD_MS = 30_000
"""A play counts as a stream once this much of it was heard."""


class EventType(enum.StrEnum):
    """What happened."""

    play_start = "play_start"
    play_progress = "play_progress"
    play_end = "play_end"
    skip = "skip"
    like = "like"
    unlike = "unlike"
    playlist_add = "playlist_add"
    search = "search"
    follow = "follow"


PLAY_EVENT_TYPES = frozenset(
    {EventType.play_start, EventType.play_progress, EventType.play_end, EventType.skip}
)
"""Events about one play of a track: they need a track_id."""

PLAY_END_EVENT_TYPES = frozenset({EventType.play_end, EventType.skip})
"""Events that end a play and carry its ms_played: these may count as a stream."""


class ReasonStart(enum.StrEnum):
    """Why a play began."""

    trackdone = "trackdone"
    clickrow = "clickrow"
    playbtn = "playbtn"
    fwdbtn = "fwdbtn"
    backbtn = "backbtn"
    appload = "appload"
    remote = "remote"
    autoplay = "autoplay"
    trackerror = "trackerror"
    unknown = "unknown"


class ReasonEnd(enum.StrEnum):
    """Why a play ended."""

    trackdone = "trackdone"
    fwdbtn = "fwdbtn"
    backbtn = "backbtn"
    endplay = "endplay"
    logout = "logout"
    remote = "remote"
    trackerror = "trackerror"
    unexpected_exit = "unexpected-exit"
    unknown = "unknown"


class ContextType(enum.StrEnum):
    """Where a play was started from."""

    album = "album"
    playlist = "playlist"
    artist = "artist"
    radio = "radio"
    search = "search"
    recommendation = "recommendation"
    collection = "collection"


class DeviceType(enum.StrEnum):
    """The kind of device that played."""

    phone = "phone"
    tablet = "tablet"
    desktop = "desktop"
    web = "web"
    tv = "tv"
    car = "car"
    speaker = "speaker"
    console = "console"
    other = "other"


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def free_of_control_characters(text: str) -> bool:
    """Whether the text holds no control character (what WITHOUT_CONTROLS demands)."""
    # Printable ASCII (nearly all text sent) has none: two C calls, no regular expression.
    return (text.isascii() and text.isprintable()) or _CONTROL_CHARACTER.search(text) is None


def _without_control_characters(value: str) -> str:
    # Free text from clients (a context id, a search query) carries no control characters:
    # a NUL would be refused by PostgreSQL when a consumer stores it, and stop that consumer.
    if not free_of_control_characters(value):
        raise ValueError("must not contain control characters")
    return value


WITHOUT_CONTROLS = AfterValidator(_without_control_characters)


class PlayContext(BaseModel):
    """The album, playlist, station... a play belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ContextType
    id: Annotated[str, StringConstraints(min_length=1, max_length=100), WITHOUT_CONTROLS] | None = (
        None
    )


CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


class ListeningEvent(BaseModel):
    """One event as a client sends it (unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID = Field(description="Made by the client; a retry sends the same id.")
    type: EventType
    occurred_at: AwareDatetime = Field(description="When it happened on the device, with offset.")
    track_id: uuid.UUID | None = None
    album_id: uuid.UUID | None = Field(None, description="like/unlike of an album.")
    artist_id: uuid.UUID | None = Field(None, description="follow of an artist.")
    playlist_id: uuid.UUID | None = Field(None, description="playlist_add, follow of a playlist.")
    ms_played: int | None = Field(None, ge=0, le=MAX_MS_PLAYED)
    position_ms: int | None = Field(None, ge=0, le=MAX_MS_PLAYED)
    reason_start: ReasonStart | None = None
    reason_end: ReasonEnd | None = None
    context: PlayContext | None = None
    device: DeviceType | None = None
    country: CountryCode | None = Field(None, description="ISO 3166-1 alpha-2, upper case.")
    shuffle: bool = False
    offline: bool = Field(False, description="Buffered on the device and sent later.")
    query: Annotated[str, StringConstraints(max_length=200), WITHOUT_CONTROLS] | None = Field(
        None, description="What was searched (search events)."
    )


# No patterns on the fast path: msgspec runs each through Python's `re` (half its decoding
# time). Two capital letters are a set of 676 (a hash lookup); free text is checked for
# control characters after decoding (`free_of_control_characters`).
if TYPE_CHECKING:
    _WireCountry = str
else:
    _WireCountry = Literal[
        tuple(first + second for first in ascii_uppercase for second in ascii_uppercase)
    ]
_WireMilliseconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_MS_PLAYED)]


class WirePlayContext(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """PlayContext, as msgspec decodes it on the ingest fast path."""

    type: ContextType
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None


class WireListeningEvent(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True
):
    """ListeningEvent with the same fields and limits, decoded by msgspec straight from the
    request body: ingest validates every event it accepts, and this is several times cheaper
    than pydantic. A batch it refuses is checked again by ListeningEvent, which names every
    problem of every event; tests hold the two to the same verdicts."""

    event_id: uuid.UUID
    type: EventType
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    track_id: uuid.UUID | None = None
    album_id: uuid.UUID | None = None
    artist_id: uuid.UUID | None = None
    playlist_id: uuid.UUID | None = None
    ms_played: _WireMilliseconds | None = None
    position_ms: _WireMilliseconds | None = None
    reason_start: ReasonStart | None = None
    reason_end: ReasonEnd | None = None
    context: WirePlayContext | None = None
    device: DeviceType | None = None
    country: _WireCountry | None = None
    shuffle: bool = False
    offline: bool = False
    query: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class WireEventBatch(msgspec.Struct, forbid_unknown_fields=True):
    """A posted batch, as msgspec decodes it on the ingest fast path."""

    events: Annotated[
        list[WireListeningEvent], msgspec.Meta(min_length=1, max_length=MAX_EVENTS_PER_BATCH)
    ]


class RejectedEvent(BaseModel):
    """An event of the batch that was not recorded, and why."""

    index: int
    event_id: str | None
    errors: list[str]


class EventBatchResult(BaseModel):
    """What became of a batch: recorded, already recorded before (a retry), refused."""

    accepted: int = Field(description="Events recorded now.")
    duplicates: int = Field(description="Events recorded by an earlier send of the same ids.")
    rejected: list[RejectedEvent]


class RecentlyPlayedContext(BaseModel):
    """Where a stream was played from."""

    type: str
    id: str | None


class RecentlyPlayedItem(BaseModel):
    """One stream in the listening history."""

    track: TrackRead
    played_at: datetime
    context: RecentlyPlayedContext | None


class RecentlyPlayedPage(BaseModel):
    """A page of the listening history, newest first."""

    items: list[RecentlyPlayedItem]
    next_cursor: str | None

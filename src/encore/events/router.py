"""Events HTTP API: `POST /v1/events` and `GET /v1/me/recently-played`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from encore.auth.dependencies import require_scopes
from encore.auth.scopes import EVENTS_WRITE, USER_READ
from encore.auth.tokens import Principal
from encore.dependencies import ResourcesDep, SessionDep
from encore.events import service
from encore.events.schemas import EventBatchResult, RecentlyPlayedPage
from encore.problems import ContentTooLarge, Problem

router = APIRouter(prefix="/v1", tags=["events"])

MAX_EVENT_BATCH_BYTES = 2 * 1024 * 1024
"""A full batch of 1000 events is well under 1 MiB."""

EventWriter = Annotated[Principal, require_scopes(EVENTS_WRITE)]
HistoryReader = Annotated[Principal, require_scopes(USER_READ)]


async def _read_json_body(request: Request) -> bytes:
    """The request's JSON body, refused before reading when it is too large."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Problem(
            "send the batch as application/json",
            status=415,
            title="Unsupported media type",
            slug="unsupported-media-type",
        )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_EVENT_BATCH_BYTES):
        raise ContentTooLarge(f"a batch is at most {MAX_EVENT_BATCH_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_EVENT_BATCH_BYTES:
            raise ContentTooLarge(f"a batch is at most {MAX_EVENT_BATCH_BYTES} bytes")
    return bytes(body)


@router.post(
    "/events",
    status_code=202,
    response_model=EventBatchResult,
    summary="Record a batch of listening events",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["events"],
                        "properties": {
                            "events": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 1000,
                                "items": {
                                    "type": "object",
                                    "description": (
                                        "event_id, type, occurred_at, and as the type needs: "
                                        "track_id, album_id, artist_id, playlist_id, ms_played, "
                                        "position_ms, reason_start, reason_end, context "
                                        "{type, id}, device, country, shuffle, offline, query"
                                    ),
                                },
                            }
                        },
                    }
                }
            },
        }
    },
    responses={
        413: {"description": "The body is over 2 MiB."},
        422: {"description": 'The body is not {"events": [1..1000 items]}.'},
        429: {"description": "Too many events from this account; see Retry-After."},
    },
)
async def post_events(
    request: Request, principal: EventWriter, resources: ResourcesDep
) -> EventBatchResult:
    """Append the valid events durably (answered after commit or acknowledgement); each invalid
    event is listed with its reasons. Sending the same batch again records nothing twice."""
    assert principal.user_id is not None  # require_scopes(user=True)
    return await service.record_events(
        event_log=resources.event_log,
        rate_limiter=resources.event_rate_limiter,
        user_id=principal.user_id,
        body=await _read_json_body(request),
    )


@router.get(
    "/me/recently-played",
    response_model=RecentlyPlayedPage,
    summary="Your streams, newest first",
)
async def recently_played(
    principal: HistoryReader,
    db_session: SessionDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=service.RECENTLY_PLAYED_MAX_LIMIT)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> RecentlyPlayedPage:
    """Plays of 30 s or more (plays flagged as abuse are left out), with where they came from."""
    assert principal.user_id is not None
    response.headers["Cache-Control"] = "private, no-store"
    return await service.list_recently_played(
        db_session=db_session, user_id=principal.user_id, limit=limit, cursor=cursor
    )

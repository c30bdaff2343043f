"""Keyset pagination: opaque cursors and the `{"items", "next_cursor"}` page shape."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel, Field

from encore.problems import InvalidInput

MAX_CURSOR_LENGTH = 512

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list, and the cursor that fetches the next one (null on the last page)."""

    items: list[ItemT]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null when this is the last."
    )


def encode_cursor(values: dict[str, Any]) -> str:
    """Turn the keyset position after the last item into an opaque URL-safe string."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, expected: set[str]) -> dict[str, Any]:
    """Read a cursor made by encode_cursor; InvalidInput when it was not made by us."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(values, dict) or set(values) != expected:
            raise ValueError("unexpected shape")
        return values
    except (ValueError, binascii.Error, UnicodeEncodeError, orjson.JSONDecodeError):
        raise InvalidInput(
            "cursor is not valid: pass the next_cursor of a previous page unchanged",
            extra={"errors": [{"field": "query.cursor", "message": "not a cursor of this list"}]},
        ) from None


class PageParams(BaseModel):
    """Validated `limit` and `cursor` query parameters."""

    limit: int
    cursor: str | None


async def _page_params(
    limit: Annotated[
        int | None, Query(ge=1, le=100, description="Items per page (1-100, default 20).")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page."),
    ] = None,
) -> PageParams:
    return PageParams(limit=limit or 20, cursor=cursor)


PageDep = Annotated[PageParams, Depends(_page_params)]

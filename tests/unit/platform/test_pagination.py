"""Opaque keyset cursors."""

from __future__ import annotations

import pytest

from encore.pagination import decode_cursor, encode_cursor
from encore.problems import InvalidInput


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    values = {"release_date": "2001-03-12", "id": "0190f1c2-0000-7000-8000-000000000000"}
    cursor = encode_cursor(values)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor, {"release_date", "id"}) == values


@pytest.mark.parametrize(
    "cursor", ["", "%%%", "bm90IGpzb24", encode_cursor({"other": 1}), "é", "A" * 1000]
)
def test_anything_else_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(cursor, {"release_date", "id"})

"""Media paths: what `split_media_path` accepts, and every traversal form it refuses."""

from __future__ import annotations

import pytest

from encore.streaming.signing import split_media_path

TOKEN = "k0.1900000000.0123456789abcdef0123456789abcdef.sig.edge"
PREFIX = "renditions/0190f1c2-0000-7000-8000-000000000000/abc123"


def test_a_media_path_splits_into_token_prefix_and_file() -> None:
    assert split_media_path(f"/media/t/{TOKEN}/{PREFIX}/aac_128/segment_00001.m4s") == (
        TOKEN,
        PREFIX,
        "aac_128/segment_00001.m4s",
    )
    assert split_media_path(f"/media/t/{TOKEN}/{PREFIX}/master.m3u8") == (
        TOKEN,
        PREFIX,
        "master.m3u8",
    )


@pytest.mark.parametrize(
    "path",
    [
        f"/media/t/{TOKEN}/{PREFIX}",  # no file
        f"/media/t/{TOKEN}/renditions/x/master.m3u8",  # a prefix of two segments
        f"/media/x/{TOKEN}/{PREFIX}/master.m3u8",
        f"/media/t/{TOKEN}/{PREFIX}/../../secret.key",
        f"/media/t/{TOKEN}/{PREFIX}/aac_128/../master.m3u8",
        f"/media/t/{TOKEN}/{PREFIX}/./master.m3u8",
        f"/media/t/{TOKEN}/{PREFIX}/..",
        f"/media/t/{TOKEN}/renditions/../abc/master.m3u8",
        f"/media/t/{TOKEN}/renditions/./abc/master.m3u8",
        f"/media/t/{TOKEN}/{PREFIX}//master.m3u8",
        f"/media/t/{TOKEN}/{PREFIX}/aac_128/",
        f"/media/t/{TOKEN}/{PREFIX}/%2e%2e/secret.key",
        f"/media/t/{TOKEN}/{PREFIX}/..\\secret.key",
        f"/media/t/{TOKEN}/renditions\\x/abc/master.m3u8",
    ],
)
def test_traversal_and_malformed_paths_are_refused(path: str) -> None:
    assert split_media_path(path) is None

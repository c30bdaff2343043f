"""Signed media URLs: `/media/t/<token>/<prefix>/<file>` with an HMAC-SHA256 token.

The token sits in the path, so relative URIs inside HLS playlists inherit it. It signs the
track's rendition prefix (the first three path segments after the token:
`renditions/<track>/<content hash>`), an expiry and the listener's id, under a key named by
its id so keys can rotate. The nginx edge (deploy/nginx) checks the same token with the same
key before it serves anything, cached or not.

Token: `<kid>.<expires>.<user hex>.<signature>`, where signature is the unpadded base64url
HMAC-SHA256, under the key `kid`, of `v1|<kid>|<expires>|<user hex>|<prefix>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass
from enum import Enum

MEDIA_PATH_ROOT = "/media/t"
PREFIX_SEGMENTS = 3
_TOKEN = re.compile(
    r"^(?P<kid>[A-Za-z0-9_-]{1,16})\.(?P<expires>[0-9]{1,12})\.(?P<user>[0-9a-f]{32})\."
    r"(?P<signature>[A-Za-z0-9_-]{43})$"
)


class TokenVerdict(Enum):
    """What checking a media token found."""

    valid = "valid"
    invalid = "invalid"  # forged, malformed, unknown key, or for another prefix: 403
    expired = "expired"  # genuine but past its expiry: 410


@dataclass(frozen=True)
class MediaSigner:
    """Signs and checks media tokens with a set of keys; `current_kid` signs new ones."""

    keys: dict[str, bytes]
    current_kid: str

    def __post_init__(self) -> None:
        if self.current_kid not in self.keys:
            raise ValueError(f"no media signing key with id {self.current_kid!r}")

    def signature(self, kid: str, expires: int, user_hex: str, prefix: str) -> str | None:
        """The signature of these fields under key `kid` (None for an unknown key)."""
        key = self.keys.get(kid)
        if key is None:
            return None
        message = f"v1|{kid}|{expires}|{user_hex}|{prefix}".encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def token(self, *, prefix: str, user_id: uuid.UUID, expires: int) -> str:
        """A token granting `user_id` the files under `prefix` until `expires` (unix time)."""
        signature = self.signature(self.current_kid, expires, user_id.hex, prefix)
        assert signature is not None
        return f"{self.current_kid}.{expires}.{user_id.hex}.{signature}"

    def url(self, *, prefix: str, user_id: uuid.UUID, expires: int, file: str) -> str:
        """The path of one file under a signed prefix: `/media/t/<token>/<prefix>/<file>`."""
        token = self.token(prefix=prefix, user_id=user_id, expires=expires)
        return f"{MEDIA_PATH_ROOT}/{token}/{prefix}/{file}"

    def check(self, token: str, prefix: str, *, now: float | None = None) -> TokenVerdict:
        """Whether the token grants `prefix` now (constant-time signature comparison)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return TokenVerdict.invalid
        expected = self.signature(match["kid"], int(match["expires"]), match["user"], prefix)
        if expected is None or not hmac.compare_digest(expected, match["signature"]):
            return TokenVerdict.invalid
        if int(match["expires"]) <= (time.time() if now is None else now):
            return TokenVerdict.expired
        return TokenVerdict.valid


def split_media_path(path: str) -> tuple[str, str, str] | None:
    """(token, prefix, file) of `/media/t/<token>/<a>/<b>/<c>/<file…>`, or None if malformed."""
    if not path.startswith(MEDIA_PATH_ROOT + "/"):
        return None
    parts = path[len(MEDIA_PATH_ROOT) + 1 :].split("/")
    if len(parts) < 2 + PREFIX_SEGMENTS:
        return None
    token, prefix_parts, file_parts = parts[0], parts[1 : 1 + PREFIX_SEGMENTS], parts[4:]
    for part in (*prefix_parts, *file_parts):
        if part in ("", ".", "..") or "\\" in part or "%" in part:
            return None
    return token, "/".join(prefix_parts), "/".join(file_parts)

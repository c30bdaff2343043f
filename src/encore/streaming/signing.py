"""Signed media URLs: `/media/t/<token>/<prefix>/<file>` with an HMAC-SHA256 token.

The token sits in the path, so relative URIs inside HLS playlists inherit it. It signs the
track's rendition prefix (the first three path segments after the token:
`renditions/<track>/<content hash>`), an expiry and the listener's id, under a key named by
its id so keys can rotate.

Token: `<kid>.<expires>.<user hex>.<signature>.<edge hash>`:
- signature: the unpadded base64url HMAC-SHA256, under the key `kid`, of
  `v1|<kid>|<expires>|<user hex>|<prefix>`. Encore checks it.
- edge hash: the unpadded base64url MD5 of
  `<edge secret>|<expires>|<kid>|<user hex>|<prefix>|<edge secret>`, the form nginx's C
  `secure_link` module checks, so the edge (deploy/nginx) validates every request before it
  serves anything, cached or not, without a script per request (njs halved the edge's
  throughput, BENCHMARKS.md). The edge secret is derived from the key
  (HMAC-SHA256(key, "encore media edge v1")), so the edge never holds the HMAC keys and what
  it holds cannot sign origin tokens. Why MD5 is acceptable there: forging needs a
  second preimage of MD5 under an unknown secret that wraps the message on both sides, which
  no known attack gives (MD5's breaks are collisions between two messages the attacker
  chooses, and the attacker chooses none of the signed fields); a token only grants reading
  immutable, content-addressed media for a few hours; and the origin keeps HMAC-SHA256.
  Encore checks the edge hash too, so both agree on which tokens are valid.
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
    r"(?P<signature>[A-Za-z0-9_-]{43})\.(?P<edge>[A-Za-z0-9_-]{22})$"
)
_EDGE_SECRET_LABEL = b"encore media edge v1"
_MEDIA_PATH = re.compile(
    re.escape(MEDIA_PATH_ROOT) + rf"/([^/]*)/((?:[^/]+/){{{PREFIX_SEGMENTS - 1}}}[^/]+)/(.+)",
    re.DOTALL,
)


def _base64url(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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
        return _base64url(hmac.new(key, message, hashlib.sha256).digest())

    def edge_secret(self, kid: str) -> str | None:
        """The secret the edge checks tokens of key `kid` with (None for an unknown key)."""
        key = self.keys.get(kid)
        if key is None:
            return None
        return _base64url(hmac.new(key, _EDGE_SECRET_LABEL, hashlib.sha256).digest())

    def edge_hash(self, kid: str, expires: int, user_hex: str, prefix: str) -> str | None:
        """The edge's hash of these fields (None for an unknown key): what `secure_link_md5`
        in deploy/nginx/edge.conf computes."""
        secret = self.edge_secret(kid)
        if secret is None:
            return None
        message = f"{secret}|{expires}|{kid}|{user_hex}|{prefix}|{secret}".encode()
        # MD5 because nginx's secure_link computes nothing else (see the module docstring).
        return _base64url(hashlib.md5(message, usedforsecurity=True).digest())  # noqa: S324

    def edge_keys_config(self) -> str:
        """The nginx `map` of key ids to edge secrets that deploy/nginx/edge.conf reads."""
        lines = [
            "# Encore media edge secrets (encore media edge-keys): key id -> secret.",
            "# Credentials: owned by root, mode 0600. Regenerate after rotating media keys.",
            "map $media_kid $media_edge_secret {",
            '    default "";',
        ]
        lines += [f'    "{kid}" "{self.edge_secret(kid)}";' for kid in sorted(self.keys)]
        return "\n".join([*lines, "}", ""])

    def token(self, *, prefix: str, user_id: uuid.UUID, expires: int) -> str:
        """A token granting `user_id` the files under `prefix` until `expires` (unix time)."""
        fields = (self.current_kid, expires, user_id.hex, prefix)
        signature, edge = self.signature(*fields), self.edge_hash(*fields)
        assert signature is not None and edge is not None
        return f"{self.current_kid}.{expires}.{user_id.hex}.{signature}.{edge}"

    def url(self, *, prefix: str, user_id: uuid.UUID, expires: int, file: str) -> str:
        """The path of one file under a signed prefix: `/media/t/<token>/<prefix>/<file>`."""
        token = self.token(prefix=prefix, user_id=user_id, expires=expires)
        return f"{MEDIA_PATH_ROOT}/{token}/{prefix}/{file}"

    def check(self, token: str, prefix: str, *, now: float | None = None) -> TokenVerdict:
        """Whether the token grants `prefix` now (constant-time signature comparison)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return TokenVerdict.invalid
        fields = (match["kid"], int(match["expires"]), match["user"], prefix)
        expected, edge = self.signature(*fields), self.edge_hash(*fields)
        if expected is None or edge is None:
            return TokenVerdict.invalid
        # Both compared, in constant time, whatever the first one found.
        signature_ok = hmac.compare_digest(expected, match["signature"])
        edge_ok = hmac.compare_digest(edge, match["edge"])
        if not (signature_ok and edge_ok):
            return TokenVerdict.invalid
        if int(match["expires"]) <= (time.time() if now is None else now):
            return TokenVerdict.expired
        return TokenVerdict.valid


def split_media_path(path: str) -> tuple[str, str, str] | None:
    """(token, prefix, file) of `/media/t/<token>/<a>/<b>/<c>/<file…>`, or None if malformed."""
    # One regex and substring tests rather than a loop over the parts: this runs on every
    # segment request.
    match = _MEDIA_PATH.fullmatch(path)
    if match is None:
        return None
    token, prefix, file = match.groups()
    # Refused anywhere in the prefix or file: an empty, `.` or `..` segment, `\\` or `%`.
    wrapped = f"/{prefix}/{file}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped or "\\" in wrapped:
        return None
    if "%" in wrapped:
        return None
    return token, prefix, file

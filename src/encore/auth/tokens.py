"""Signing keys and JWTs: issuing access and id tokens, and verifying them without the database.

Access tokens are RFC 9068 JWTs (`typ: at+jwt`) signed with ES256. Every API process holds the
public keys of the deployment, loaded at start and re-read when a token names an unknown
`kid` (at most once every few seconds), so verifying a token costs no database round trip.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from cachetools import LRUCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth.models import SigningKey
from encore.auth.secrets import SecretBox
from encore.db import utcnow

ALGORITHM = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 media type)
LEEWAY_S = 30
_UNKNOWN_KID_REFRESH_S = 5.0
_SEAL_CONTEXT = b"oauth-signing-key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified access token speaks for: a user (through a client) or a client alone."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    roles: frozenset[str]
    expires_at: float
    token_id: str
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

    @property
    def is_user(self) -> bool:
        """True when a user signed in; false for client-credentials (service) tokens."""
        return self.user_id is not None


class InvalidToken(Exception):
    """A bearer token that is malformed, expired, forged or not meant for this server."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A loaded signing key."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey | None
    public_key: ec.EllipticCurvePublicKey
    public_jwk: dict[str, str]
    retired_at: datetime | None


def jwk_thumbprint(public_jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint of an EC public JWK, used as its `kid`."""
    members = {name: public_jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    jwk: dict[str, str] = ECAlgorithm.to_jwk(public_key, as_dict=True)
    return {name: jwk[name] for name in ("kty", "crv", "x", "y")}


async def create_signing_key(*, db_session: AsyncSession, box: SecretBox) -> str:
    """Generate a new ES256 key pair, make it the signing key, retire the previous one."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_jwk = _public_jwk(private_key.public_key())
    kid = jwk_thumbprint(public_jwk)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    now = utcnow()
    for current in (
        await db_session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))
    ).all():
        current.retired_at = now
    db_session.add(
        SigningKey(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk={**public_jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"},
            private_key_sealed=box.seal(pem, context=_SEAL_CONTEXT),
            created_at=now,
        )
    )
    await db_session.flush()
    return kid


async def load_signing_keys(
    *, db_session: AsyncSession, box: SecretBox | None, keep_retired_for: timedelta
) -> list[KeyPair]:
    """Keys still worth publishing (newest first); private halves only when `box` is given."""
    cutoff = utcnow() - keep_retired_for
    rows = (
        await db_session.scalars(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None) | (SigningKey.retired_at > cutoff))
            .order_by(SigningKey.created_at.desc())
        )
    ).all()
    pairs = []
    for row in rows:
        private_key = None
        if box is not None and row.retired_at is None:
            loaded = serialization.load_pem_private_key(
                box.open(row.private_key_sealed, context=_SEAL_CONTEXT), password=None
            )
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise TypeError(f"signing key {row.kid} is not an EC key")
            private_key = loaded
        public_key = ECAlgorithm.from_jwk(json.dumps(row.public_jwk))
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise TypeError(f"signing key {row.kid} has no EC public key")
        pairs.append(
            KeyPair(
                kid=row.kid,
                private_key=private_key,
                public_key=public_key,
                public_jwk=dict(row.public_jwk),
                retired_at=row.retired_at,
            )
        )
    return pairs


@dataclass
class TokenIssuer:
    """Signs access tokens and id tokens with the current key."""

    issuer: str
    audience: str
    access_token_lifetime: timedelta
    key: KeyPair

    def access_token(
        self,
        *,
        subject: str,
        client_id: str,
        scopes: Iterable[str],
        roles: Iterable[str],
        session_id: uuid.UUID | None,
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        now = int(time.time())
        lifetime = int(self.access_token_lifetime.total_seconds())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "client_id": client_id,
            "scope": " ".join(sorted(set(scopes))),
            "roles": sorted(set(roles)),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        return self._sign(claims, ACCESS_TOKEN_TYPE), lifetime

    def id_token(
        self,
        *,
        subject: str,
        client_id: str,
        auth_time: datetime,
        nonce: str | None,
        profile: dict[str, Any],
    ) -> str:
        """An OpenID Connect id token for the client."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "iat": now,
            "exp": now + int(self.access_token_lifetime.total_seconds()),
            "auth_time": int(auth_time.timestamp()),
            **profile,
        }
        if nonce:
            claims["nonce"] = nonce
        return self._sign(claims, "JWT")

    def _sign(self, claims: dict[str, Any], token_type: str) -> str:
        if self.key.private_key is None:
            raise RuntimeError("the signing key's private half is not loaded")
        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.key.kid, "typ": token_type},
        )


@dataclass
class TokenVerifier:
    """Verifies access tokens locally, with the published keys and a cache of good tokens."""

    issuer: str
    audience: str
    reload_keys: Callable[[], Awaitable[list[KeyPair]]]
    cache_size: int = 10_000
    _keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    _verified: LRUCache[str, Principal] = field(init=False)
    _reloaded_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        # A client sends the same token for up to 15 minutes: checking its signature once is
        # enough. Revocation is not checked here either way (introspection does that).
        self._verified = LRUCache(maxsize=self.cache_size)

    def use_keys(self, keys: Iterable[KeyPair]) -> None:
        """Replace the known public keys."""
        self._keys = {key.kid: key.public_key for key in keys}
        self._verified.clear()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid access token, or InvalidToken saying why not."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at > time.time() - LEEWAY_S:
                return cached
            del self._verified[token]
        if len(token) > 4096:
            raise InvalidToken("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unexpected signing algorithm")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token names no key")
        key = self._keys.get(kid) or await self._refresh_for(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti", "client_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token is for another audience") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("token signature or claims are invalid") from None
        principal = _principal(claims)
        self._verified[token] = principal
        return principal

    async def _refresh_for(self, kid: str) -> ec.EllipticCurvePublicKey:
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._reloaded_at > (
                _UNKNOWN_KID_REFRESH_S
            ):
                self._reloaded_at = time.monotonic()
                self.use_keys(await self.reload_keys())
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("token signed with an unknown key")
        return key


def _principal(claims: dict[str, Any]) -> Principal:
    try:
        subject = str(claims["sub"])
        user_id = None if subject.startswith("client:") else uuid.UUID(subject)
        session = claims.get("sid")
        scope = claims.get("scope", "")
        roles = claims.get("roles", [])
        if not isinstance(scope, str) or not isinstance(roles, list):
            raise TypeError("scope must be a string and roles a list")
        return Principal(
            subject=subject,
            user_id=user_id,
            client_id=str(claims["client_id"]),
            scopes=frozenset(scope.split()),
            roles=frozenset(str(role) for role in roles),
            expires_at=float(claims["exp"]),
            token_id=str(claims["jti"]),
            session_id=uuid.UUID(str(session)) if session is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidToken("token claims are malformed") from None

"""Accounts: users, passwords, OAuth clients, sign-in throttling, API keys and app passwords.

Other domains use accounts only through this module (`from encore.auth import service as
auth_service`). The OAuth grants live in `encore.auth.oauth`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import re
import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth.models import (
    ApiKey,
    AppPassword,
    LoginThrottle,
    OAuthClient,
    Role,
    TokenFamily,
    User,
)
from encore.auth.scopes import ALL_SCOPES, LISTENER_SCOPES
from encore.auth.secrets import DecryptionError, SecretBox
from encore.db import dialect_insert, new_id, utcnow
from encore.pagination import Page, decode_cursor, encode_cursor
from encore.problems import Conflict, InvalidInput, NotFound

# OWASP Password Storage Cheat Sheet: argon2id with m=19 MiB, t=2, p=1 at least.
PASSWORD_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
WEB_CLIENT_ID = "encore-web"
# The account that owns what Encore itself makes (generated playlists). Its username fails
# USERNAME_PATTERN, so no one can register it first; its password hash is not an argon2 hash,
# so no password ever matches; and it is disabled, so no other credential works either.
SYSTEM_USERNAME = "~encore"
SYSTEM_EMAIL = "system@encore.invalid"
_UNUSABLE_PASSWORD_HASH = "!"  # noqa: S105 (a marker no argon2 hash equals)

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"  # noqa: S105 (a grant type name)
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = (
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
)

# Failed sign-ins before back-off starts, and its ceiling: a delay, never a lockout that
# someone else could impose on an account for good.
THROTTLE_FREE_FAILURES = {"user": 5, "ip": 20}
THROTTLE_MAX_DELAY = timedelta(minutes=15)
THROTTLE_FORGET_AFTER = timedelta(hours=1)


def sha256_hex(value: str) -> str:
    """Hex SHA-256 of a high-entropy secret (tokens, codes, keys), as stored."""
    return hashlib.sha256(value.encode()).hexdigest()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, username: str | None = None) -> str | None:
    """Why a new password is refused (length, a common password, the username), or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"must be at least {PASSWORD_MIN_LENGTH} characters"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"must be at most {PASSWORD_MAX_LENGTH} characters"
    folded = _fold(password)
    if folded in _common_passwords():
        return "is one of the most common passwords; choose another"
    if username is not None and folded == _fold(username):
        return "must not be the username"
    return None


async def hash_password(password: str) -> str:
    """An argon2id hash of a password (computed off the event loop)."""
    return await asyncio.to_thread(PASSWORD_HASHER.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches the hash (computed off the event loop)."""

    def check() -> bool:
        try:
            return PASSWORD_HASHER.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return PASSWORD_HASHER.hash(secrets.token_urlsafe(16))


# ---------------------------------------------------------------------------------------------
# Users


def check_username(username: str) -> str:
    """A valid username, or InvalidInput."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidInput(
            "username must be 3-32 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            extra={"errors": [{"field": "body.username", "message": "invalid username"}]},
        )
    return username


async def create_user(
    *,
    db_session: AsyncSession,
    username: str,
    email: str,
    password: str,
    display_name: str | None = None,
    roles: Sequence[Role] = (Role.listener,),
) -> User:
    """A new account; Conflict if the username or email is taken, InvalidInput if weak."""
    check_username(username)
    problem = password_problem(password, username=username)
    if problem is not None:
        raise InvalidInput(
            f"password {problem}",
            extra={"errors": [{"field": "body.password", "message": problem}]},
        )
    user = User(
        username=username,
        username_key=_fold(username),
        email=email,
        email_key=_fold(email),
        display_name=(display_name or username).strip()[:100] or username,
        password_hash=await hash_password(password),
        roles=sorted({Role.listener.value, *(Role(role).value for role in roles)}),
    )
    async with db_session.begin_nested():
        taken = await db_session.scalar(
            select(User.username_key, User.email_key).where(
                (User.username_key == user.username_key) | (User.email_key == user.email_key)
            )
        )
        if taken is not None:
            raise Conflict("that username or email is already registered")
        db_session.add(user)
        try:
            await db_session.flush()
        except IntegrityError:
            raise Conflict("that username or email is already registered") from None
    return user


async def get_user(*, db_session: AsyncSession, user_id: uuid.UUID) -> User:
    """A user by id; NotFound if unknown."""
    user = await db_session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


async def find_user_by_username(*, db_session: AsyncSession, username: str) -> User | None:
    """A user by username (case-insensitive), or None."""
    return await db_session.scalar(select(User).where(User.username_key == _fold(username)))


async def authenticate_user(
    *, db_session: AsyncSession, username: str, password: str
) -> User | None:
    """The enabled user with these credentials, or None (as slow for unknown names)."""
    user = await find_user_by_username(db_session=db_session, username=username[:64])
    if user is None:
        # Hash anyway, so timing does not tell which usernames exist.
        await verify_password(_dummy_hash(), password)
        return None
    if not await verify_password(user.password_hash, password[:PASSWORD_MAX_LENGTH]):
        return None
    if user.disabled:
        return None
    if PASSWORD_HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
    return user


async def update_profile(
    *,
    db_session: AsyncSession,
    user: User,
    display_name: str | None,
    email: str | None,
) -> User:
    """Change a user's display name and/or email; Conflict if the email is taken."""
    if display_name is not None:
        cleaned = " ".join(display_name.split())
        if not cleaned:
            raise InvalidInput(
                "display name must not be blank",
                extra={"errors": [{"field": "body.display_name", "message": "must not be blank"}]},
            )
        user.display_name = cleaned[:100]
    if email is not None and _fold(email) != user.email_key:
        owner = await db_session.scalar(select(User.id).where(User.email_key == _fold(email)))
        if owner is not None:
            raise Conflict("that email is already registered")
        user.email = email
        user.email_key = _fold(email)
    await db_session.flush()
    return user


async def change_password(
    *, db_session: AsyncSession, user: User, current_password: str, new_password: str
) -> None:
    """Set a new password after checking the current one; every sign-in is revoked."""
    if not await verify_password(user.password_hash, current_password):
        raise InvalidInput(
            "the current password is wrong",
            extra={"errors": [{"field": "body.current_password", "message": "wrong password"}]},
        )
    problem = password_problem(new_password, username=user.username)
    if problem is not None:
        raise InvalidInput(
            f"new password {problem}",
            extra={"errors": [{"field": "body.new_password", "message": problem}]},
        )
    user.password_hash = await hash_password(new_password)
    await revoke_user_sessions(db_session=db_session, user_id=user.id, reason="password_changed")
    await db_session.flush()


async def set_roles(*, db_session: AsyncSession, username: str, roles: Sequence[Role]) -> User:
    """Give a user exactly these roles (listener always included)."""
    user = await find_user_by_username(db_session=db_session, username=username)
    if user is None or user.username_key == SYSTEM_USERNAME:
        raise NotFound(f"no user named {username}")
    user.roles = sorted({Role.listener.value, *(role.value for role in roles)})
    await db_session.flush()
    return user


async def set_disabled(*, db_session: AsyncSession, username: str, disabled: bool) -> User:
    """Disable (revoking every sign-in) or re-enable an account."""
    user = await find_user_by_username(db_session=db_session, username=username)
    if user is None or user.username_key == SYSTEM_USERNAME:
        raise NotFound(f"no user named {username}")
    user.disabled = disabled
    if disabled:
        await revoke_user_sessions(db_session=db_session, user_id=user.id, reason="disabled")
    await db_session.flush()
    return user


async def list_users(*, db_session: AsyncSession, limit: int, cursor: str | None) -> Page[User]:
    """Users by username, a page at a time (the system account left out)."""
    query = (
        select(User)
        .where(User.username_key != SYSTEM_USERNAME)
        .order_by(User.username_key)
        .limit(limit + 1)
    )
    if cursor is not None:
        after = decode_cursor(cursor, {"u"})
        query = query.where(User.username_key > str(after["u"]))
    users = list((await db_session.scalars(query)).all())
    next_cursor = (
        encode_cursor({"u": users[limit - 1].username_key}) if len(users) > limit else None
    )
    return Page(items=users[:limit], next_cursor=next_cursor)


async def ensure_system_user(*, db_session: AsyncSession) -> uuid.UUID:
    """The id of the system account, made on first need (idempotent, safe under races)."""
    found = await db_session.scalar(select(User.id).where(User.username_key == SYSTEM_USERNAME))
    if found is not None:
        return found
    insert = dialect_insert(db_session)
    now = utcnow()
    await db_session.execute(
        insert(User)
        .values(
            id=new_id(),
            username=SYSTEM_USERNAME,
            username_key=SYSTEM_USERNAME,
            email=SYSTEM_EMAIL,
            email_key=SYSTEM_EMAIL,
            display_name="Encore",
            password_hash=_UNUSABLE_PASSWORD_HASH,
            roles=[Role.listener.value],
            disabled=True,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    created = await db_session.scalar(select(User.id).where(User.username_key == SYSTEM_USERNAME))
    assert created is not None
    return created


async def is_system_user(*, db_session: AsyncSession, user_id: uuid.UUID) -> bool:
    """True when the id is the system account's."""
    key = await db_session.scalar(select(User.username_key).where(User.id == user_id))
    return key == SYSTEM_USERNAME


async def user_is_active(*, db_session: AsyncSession, user_id: uuid.UUID) -> bool:
    """True when the user exists and is not disabled."""
    disabled = await db_session.scalar(select(User.disabled).where(User.id == user_id))
    return disabled is False


# ---------------------------------------------------------------------------------------------
# Sessions (refresh-token families)


async def revoke_user_sessions(*, db_session: AsyncSession, user_id: uuid.UUID, reason: str) -> int:
    """Revoke every live sign-in of a user; returns how many."""
    result = await db_session.execute(
        update(TokenFamily)
        .where(TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class SessionView:
    """A sign-in as shown to its user."""

    id: uuid.UUID
    client_id: str
    client_name: str
    scope: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime


async def list_sessions(*, db_session: AsyncSession, user_id: uuid.UUID) -> list[SessionView]:
    """A user's live sign-ins, most recently used first."""
    rows = await db_session.execute(
        select(TokenFamily, OAuthClient.client_id, OAuthClient.name)
        .join(OAuthClient, OAuthClient.id == TokenFamily.client_id)
        .where(
            TokenFamily.user_id == user_id,
            TokenFamily.revoked_at.is_(None),
            TokenFamily.expires_at > utcnow(),
        )
        .order_by(TokenFamily.last_used_at.desc())
        .limit(200)
    )
    return [
        SessionView(
            id=family.id,
            client_id=client_id,
            client_name=name,
            scope=family.scope,
            created_at=family.created_at,
            last_used_at=family.last_used_at,
            expires_at=family.expires_at,
        )
        for family, client_id, name in rows
    ]


async def revoke_session(
    *, db_session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """Revoke one of the user's sign-ins; NotFound when it is not theirs."""
    family = await db_session.get(TokenFamily, session_id)
    if family is None or family.user_id != user_id:
        raise NotFound(f"no session with id {session_id}")
    if family.revoked_at is None:
        family.revoked_at = utcnow()
        family.revoked_reason = "signed_out"
    await db_session.flush()


# ---------------------------------------------------------------------------------------------
# OAuth clients


@dataclass(frozen=True)
class NewClient:
    """A client just registered; `secret` is shown this once and never stored."""

    client: OAuthClient
    secret: str | None


def _check_redirect_uri(uri: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if (
        parts.fragment
        or not parts.scheme
        or (parts.scheme in ("http", "https") and not parts.netloc)
    ):
        raise InvalidInput(f"redirect URI {uri!r} must be absolute and have no fragment")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise InvalidInput(f"redirect URI {uri!r} must use https (http only on loopback)")
    return uri


async def create_client(
    *,
    db_session: AsyncSession,
    name: str,
    redirect_uris: Sequence[str] = (),
    confidential: bool = False,
    first_party: bool = False,
    grant_types: Sequence[str] = (GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN),
    scopes: Sequence[str] = tuple(sorted(LISTENER_SCOPES)),
    client_id: str | None = None,
) -> NewClient:
    """Register an OAuth client; confidential ones get a secret, returned once."""
    unknown_grants = set(grant_types) - set(GRANT_TYPES)
    if unknown_grants:
        raise InvalidInput(f"unknown grant types: {', '.join(sorted(unknown_grants))}")
    unknown_scopes = set(scopes) - ALL_SCOPES
    if unknown_scopes:
        raise InvalidInput(f"unknown scopes: {', '.join(sorted(unknown_scopes))}")
    if GRANT_CLIENT_CREDENTIALS in grant_types and not confidential:
        raise InvalidInput("client_credentials needs a confidential client")
    if GRANT_AUTHORIZATION_CODE in grant_types and not redirect_uris:
        raise InvalidInput("authorization_code needs at least one redirect URI")
    secret = secrets.token_urlsafe(32) if confidential else None
    client = OAuthClient(
        client_id=client_id or secrets.token_urlsafe(16),
        name=name.strip()[:100] or "Unnamed client",
        secret_hash=sha256_hex(secret) if secret else None,
        first_party=first_party,
        redirect_uris=[_check_redirect_uri(uri) for uri in redirect_uris],
        grant_types=sorted(set(grant_types)),
        scopes=sorted(set(scopes)),
    )
    db_session.add(client)
    try:
        async with db_session.begin_nested():
            await db_session.flush()
    except IntegrityError:
        raise Conflict(f"a client with id {client.client_id} exists") from None
    return NewClient(client=client, secret=secret)


async def get_client(*, db_session: AsyncSession, client_id: str) -> OAuthClient | None:
    """A client by its public client_id, or None."""
    if len(client_id) > 64:
        return None
    return await db_session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))


async def list_clients(*, db_session: AsyncSession) -> list[OAuthClient]:
    """Every registered client, by name."""
    return list((await db_session.scalars(select(OAuthClient).order_by(OAuthClient.name))).all())


async def delete_client(*, db_session: AsyncSession, client_id: str) -> None:
    """Remove a client and everything issued to it."""
    client = await get_client(db_session=db_session, client_id=client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    await db_session.delete(client)
    await db_session.flush()


def client_secret_matches(client: OAuthClient, secret: str) -> bool:
    """Constant-time check of a presented client secret."""
    if client.secret_hash is None:
        return False
    return hmac.compare_digest(client.secret_hash, sha256_hex(secret))


async def ensure_web_client(*, db_session: AsyncSession, redirect_uris: Sequence[str]) -> None:
    """Create or update the first-party public web player client `encore-web`."""
    client = await get_client(db_session=db_session, client_id=WEB_CLIENT_ID)
    if client is None:
        await create_client(
            db_session=db_session,
            client_id=WEB_CLIENT_ID,
            name="Encore web player",
            redirect_uris=redirect_uris,
            first_party=True,
            grant_types=(GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN),
            scopes=sorted(ALL_SCOPES),
        )
        return
    client.redirect_uris = [_check_redirect_uri(uri) for uri in redirect_uris]
    await db_session.flush()


# ---------------------------------------------------------------------------------------------
# Sign-in throttling


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[str]
) -> str:
    """The client's address: the peer, or from X-Forwarded-For when the peer is a trusted proxy."""
    networks = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    address = peer or "unknown"
    if forwarded_for is None or not trusted(address):
        return address
    # Walk from the nearest hop back; the first address not one of our proxies is the client.
    for hop in reversed([part.strip() for part in forwarded_for.split(",")][-20:]):
        if not hop:
            continue
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return address
        address = hop
    return address


def _throttle_keys(username: str, address: str) -> list[tuple[str, int]]:
    return [
        (f"user:{_fold(username)[:64]}", THROTTLE_FREE_FAILURES["user"]),
        (f"ip:{address}", THROTTLE_FREE_FAILURES["ip"]),
    ]


async def login_blocked_for(
    *, db_session: AsyncSession, username: str, address: str
) -> timedelta | None:
    """How long sign-ins for this account or from this address must wait, or None."""
    now = utcnow()
    keys = [key for key, _ in _throttle_keys(username, address)]
    waits = (
        await db_session.scalars(
            select(LoginThrottle.blocked_until).where(
                LoginThrottle.key.in_(keys), LoginThrottle.blocked_until > now
            )
        )
    ).all()
    return max((until - now for until in waits if until is not None), default=None)


async def record_login_failure(*, db_session: AsyncSession, username: str, address: str) -> None:
    """Count a failed sign-in; past the free allowance each failure doubles the wait."""
    now = utcnow()
    for key, free in _throttle_keys(username, address):
        row = await db_session.get(LoginThrottle, key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, last_failure_at=now)
            db_session.add(row)
        elif now - row.last_failure_at > THROTTLE_FORGET_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        over = row.failures - free
        if over > 0:
            delay = min(timedelta(seconds=2 ** min(over - 1, 20)), THROTTLE_MAX_DELAY)
            row.blocked_until = now + delay
    await db_session.flush()


async def record_login_success(*, db_session: AsyncSession, username: str) -> None:
    """Forget an account's failed sign-ins (not its address's: one good account must not
    wipe an attacker's record)."""
    await db_session.execute(
        delete(LoginThrottle).where(LoginThrottle.key == f"user:{_fold(username)[:64]}")
    )


# ---------------------------------------------------------------------------------------------
# API keys (OpenSubsonic apiKeyAuthentication)

API_KEY_PREFIX = "enc_"
MAX_API_KEYS_PER_USER = 50


@dataclass(frozen=True)
class NewApiKey:
    """A key just created; `key` is shown this once."""

    api_key: ApiKey
    key: str


async def create_api_key(*, db_session: AsyncSession, user_id: uuid.UUID, name: str) -> NewApiKey:
    """A new API key for the user (at most MAX_API_KEYS_PER_USER)."""
    count = await db_session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id)
    )
    if (count or 0) >= MAX_API_KEYS_PER_USER:
        raise Conflict(f"at most {MAX_API_KEYS_PER_USER} API keys per account; delete one first")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        user_id=user_id, name=name, prefix=key[: len(API_KEY_PREFIX) + 6], key_hash=sha256_hex(key)
    )
    db_session.add(api_key)
    await db_session.flush()
    return NewApiKey(api_key=api_key, key=key)


async def list_api_keys(*, db_session: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    """The user's API keys, newest first (never the keys themselves)."""
    return list(
        (
            await db_session.scalars(
                select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
            )
        ).all()
    )


async def delete_api_key(
    *, db_session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID
) -> None:
    """Delete one of the user's API keys; NotFound when it is not theirs."""
    api_key = await db_session.get(ApiKey, key_id)
    if api_key is None or api_key.user_id != user_id:
        raise NotFound(f"no API key with id {key_id}")
    await db_session.delete(api_key)
    await db_session.flush()


async def user_for_api_key(*, db_session: AsyncSession, key: str) -> User | None:
    """The enabled user an API key belongs to, or None."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > 100:
        return None
    row = await db_session.execute(
        select(ApiKey, User)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == sha256_hex(key))
    )
    found = row.first()
    if found is None:
        return None
    api_key, user = found
    if user.disabled:
        return None
    api_key.last_used_at = utcnow()
    return user


# ---------------------------------------------------------------------------------------------
# App passwords (legacy Subsonic token + salt)

APP_PASSWORD_PURPOSE = "app-password"  # noqa: S105 (a key-derivation label)


def _app_password_context(user_id: uuid.UUID) -> bytes:
    return b"app-password:" + user_id.bytes


async def create_app_password(
    *, db_session: AsyncSession, user_id: uuid.UUID, box: SecretBox
) -> str:
    """A new random app password for the user (replacing any), returned once."""
    password = secrets.token_urlsafe(18)
    sealed = box.seal(password.encode(), context=_app_password_context(user_id))
    existing = await db_session.get(AppPassword, user_id)
    if existing is None:
        db_session.add(AppPassword(user_id=user_id, sealed=sealed))
    else:
        existing.sealed = sealed
        existing.created_at = utcnow()
    await db_session.flush()
    return password


async def delete_app_password(*, db_session: AsyncSession, user_id: uuid.UUID) -> None:
    """Remove the user's app password; NotFound when there is none."""
    existing = await db_session.get(AppPassword, user_id)
    if existing is None:
        raise NotFound("no app password is set")
    await db_session.delete(existing)
    await db_session.flush()


async def app_password_created_at(
    *, db_session: AsyncSession, user_id: uuid.UUID
) -> datetime | None:
    """When the user's app password was made, or None when there is none."""
    return await db_session.scalar(
        select(AppPassword.created_at).where(AppPassword.user_id == user_id)
    )


async def subsonic_token_matches(
    *, db_session: AsyncSession, username: str, token: str, salt: str, box: SecretBox
) -> User | None:
    """The user when `token` is md5(app password + salt), as legacy Subsonic clients send."""
    user = await find_user_by_username(db_session=db_session, username=username)
    if user is None or user.disabled or not (6 <= len(salt) <= 64):
        return None
    stored = await db_session.get(AppPassword, user.id)
    if stored is None:
        return None
    try:
        password = box.open(stored.sealed, context=_app_password_context(user.id)).decode()
    except DecryptionError:
        return None
    # MD5 is what the Subsonic protocol defines; the password it covers is random, per-app.
    expected = hashlib.md5((password + salt).encode(), usedforsecurity=False).hexdigest()
    return user if hmac.compare_digest(expected, token.lower()) else None

"""Accounts and OAuth tables: users, clients, codes, token families, keys and credentials."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base, Timestamped, UUIDPrimaryKey, utcnow


class Role(enum.StrEnum):
    """What a user is on Encore; each role may be granted a set of scopes."""

    listener = "listener"
    artist = "artist"
    analyst = "analyst"
    admin = "admin"


class User(UUIDPrimaryKey, Timestamped, Base):
    """An account: a listener, and maybe also an artist, analyst or admin."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(32))
    # Case-insensitive uniqueness: "Alice" and "alice" are the same account.
    username_key: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSON, default=lambda: [Role.listener.value])
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OAuthClient(UUIDPrimaryKey, Timestamped, Base):
    """An application allowed to ask for tokens."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    # SHA-256 of a 256-bit random secret: a slow hash adds nothing for so much entropy.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)

    @property
    def confidential(self) -> bool:
        """True for clients that hold a secret (servers), false for apps and browsers."""
        return self.secret_hash is not None


class AuthorizationCode(Base):
    """A single-use code from /oauth/authorize, bound to client, redirect URI and challenge."""

    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str | None] = mapped_column(String(255))
    auth_time: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    # The sign-in the code was exchanged for: revoked if the code is presented again.
    family_id: Mapped[uuid.UUID | None] = mapped_column()


class TokenFamily(UUIDPrimaryKey, Timestamped, Base):
    """One sign-in of a user on a client: the chain of refresh tokens it rotates through."""

    __tablename__ = "oauth_token_families"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text)
    auth_time: Mapped[datetime] = mapped_column()
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    """One refresh token of a family; stored hashed, usable once."""

    __tablename__ = "oauth_refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("oauth_token_families.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    rotated_at: Mapped[datetime | None] = mapped_column()


class DeviceStatus(enum.StrEnum):
    """Where a device authorization stands."""

    pending = "pending"
    approved = "approved"
    denied = "denied"
    consumed = "consumed"


class DeviceAuthorization(UUIDPrimaryKey, Timestamped, Base):
    """A TV or CLI waiting for its user to approve it on another screen (RFC 8628)."""

    __tablename__ = "oauth_device_authorizations"

    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text)
    status: Mapped[DeviceStatus] = mapped_column(
        Enum(DeviceStatus, name="device_status", native_enum=False, length=16),
        default=DeviceStatus.pending,
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    interval_s: Mapped[int] = mapped_column(Integer)
    last_polled_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()


class Consent(Base):
    """Scopes a user has allowed a third-party client, so it is not asked again."""

    __tablename__ = "oauth_consents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class SigningKey(Base):
    """A token signing key pair; the private half sealed with the master key."""

    __tablename__ = "oauth_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSON)
    private_key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when a newer key takes over signing; the key stays published until its tokens expire.
    retired_at: Mapped[datetime | None] = mapped_column()


class LoginThrottle(Base):
    """Recent failed sign-ins of one account or one client address."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column()
    blocked_until: Mapped[datetime | None] = mapped_column()


class ApiKey(UUIDPrimaryKey, Timestamped, Base):
    """A per-user key for OpenSubsonic `apiKeyAuthentication`, stored hashed."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column()


class AppPassword(Base):
    """A per-user password for legacy Subsonic token+salt clients, sealed with a server key."""

    __tablename__ = "app_passwords"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

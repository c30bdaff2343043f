"""The OAuth 2.1 grants: authorization code + PKCE, refresh rotation, client credentials, device.

Follows RFC 9700 (OAuth 2.0 Security Best Current Practice): S256 PKCE on every code, exact
redirect URIs (any port on loopback for native apps, RFC 8252), single-use codes bound to their
client, challenge and redirect URI, refresh tokens rotated on every use with reuse detection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth import service as auth_service
from encore.auth.models import (
    AuthorizationCode,
    Consent,
    DeviceAuthorization,
    DeviceStatus,
    OAuthClient,
    RefreshToken,
    TokenFamily,
    User,
)
from encore.auth.runtime import AuthRuntime
from encore.auth.scopes import (
    ALL_SCOPES,
    EMAIL,
    OPENID,
    PROFILE,
    format_scope,
    parse_scope,
    scopes_for_roles,
)
from encore.auth.service import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_TYPES,
    sha256_hex,
)
from encore.auth.tokens import InvalidToken
from encore.db import utcnow

CODE_LIFETIME = timedelta(seconds=60)
DEVICE_CODE_LIFETIME = timedelta(minutes=10)
DEVICE_POLL_INTERVAL_S = 5
# RFC 8628 §6.1: 20 consonants, no vowels (no words), no look-alikes; 8 characters ≈ 34 bits.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
_VERIFIER_PATTERN = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE_PATTERN = re.compile(r"^[A-Za-z0-9\-_]{43}$")
_LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")
MAX_PARAMETER_LENGTH = 2048


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error`, `error_description`, HTTP status."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.error, "error_description": self.description}


class AuthorizeError(Exception):
    """A bad authorization request: shown on a page when the redirect URI cannot be trusted,
    otherwise sent back to the client's redirect URI."""

    def __init__(
        self, error: str, description: str, *, redirect_uri: str | None, state: str | None
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


# ---------------------------------------------------------------------------------------------
# Clients and redirect URIs


def redirect_uri_registered(client: OAuthClient, redirect_uri: str) -> bool:
    """Exact match with a registered URI; on http loopback the port may differ (RFC 8252 §7.3)."""
    if redirect_uri in client.redirect_uris:
        return True
    presented = urlsplit(redirect_uri)
    if presented.scheme != "http" or presented.netloc.rsplit(":", 1)[0] not in _LOOPBACK_HOSTS:
        return False
    for registered in client.redirect_uris:
        expected = urlsplit(registered)
        if (
            expected.scheme == "http"
            and expected.hostname == presented.hostname
            and expected.netloc.rsplit(":", 1)[0] in _LOOPBACK_HOSTS
            and expected.path == presented.path
            and expected.query == presented.query
            and not presented.fragment
        ):
            return True
    return False


async def authenticate_client(
    *,
    db_session: AsyncSession,
    form: dict[str, str],
    authorization: str | None,
) -> OAuthClient:
    """The client making a token-endpoint request (secret_basic, secret_post or public)."""
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            basic_id, _, basic_secret = decoded.partition(":")
        except (ValueError, UnicodeDecodeError):
            raise _invalid_client() from None
        basic_id, basic_secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        if client_id is not None and client_id != basic_id:
            raise _invalid_client()
        if secret is not None:
            raise OAuthError("invalid_request", "use one client authentication method")
        client_id, secret = basic_id, basic_secret
    if not client_id:
        raise _invalid_client()
    client = await auth_service.get_client(db_session=db_session, client_id=client_id)
    if client is None:
        raise _invalid_client()
    if client.confidential:
        if secret is None or not auth_service.client_secret_matches(client, secret):
            raise _invalid_client()
    elif secret is not None:
        raise _invalid_client()
    return client


def _invalid_client() -> OAuthError:
    return OAuthError(
        "invalid_client",
        "client authentication failed",
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="encore"'},
    )


def _granted_scopes(
    *, requested: str | None, client: OAuthClient, roles: list[str] | None
) -> frozenset[str]:
    wanted = parse_scope(requested)
    unknown = wanted - ALL_SCOPES
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope: {' '.join(sorted(unknown))}")
    beyond_client = wanted - set(client.scopes)
    if beyond_client:
        raise OAuthError(
            "invalid_scope", f"scope not allowed for this client: {' '.join(sorted(beyond_client))}"
        )
    allowed = set(client.scopes)
    if roles is not None:
        # A user is granted only what their roles allow; the response's `scope` says what.
        allowed &= scopes_for_roles(roles)
    return frozenset((wanted or frozenset(client.scopes)) & allowed)


# ---------------------------------------------------------------------------------------------
# Authorization requests


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated /oauth/authorize request."""

    client: OAuthClient
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None

    def hidden_fields(self) -> dict[str, str]:
        """The request's parameters, to carry through the login form."""
        fields = {
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": self.scope,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        if self.state is not None:
            fields["state"] = self.state
        if self.nonce is not None:
            fields["nonce"] = self.nonce
        return fields


async def validate_authorization_request(
    *, db_session: AsyncSession, params: dict[str, str]
) -> AuthorizationRequest:
    """Check an authorization request, or raise AuthorizeError (with a trusted redirect or not)."""
    for name, value in params.items():
        if len(value) > MAX_PARAMETER_LENGTH:
            raise AuthorizeError(
                "invalid_request", f"{name} is too long", redirect_uri=None, state=None
            )
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    client = await auth_service.get_client(db_session=db_session, client_id=client_id)
    if client is None or GRANT_AUTHORIZATION_CODE not in client.grant_types:
        raise AuthorizeError("invalid_client", "unknown client", redirect_uri=None, state=None)
    if not redirect_uri or not redirect_uri_registered(client, redirect_uri):
        # Never redirect to an unregistered URI: that is how codes get stolen.
        raise AuthorizeError(
            "invalid_request",
            "the redirect_uri is not registered for this client",
            redirect_uri=None,
            state=None,
        )
    state = params.get("state")

    def fail(error: str, description: str) -> AuthorizeError:
        return AuthorizeError(error, description, redirect_uri=redirect_uri, state=state)

    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if not challenge:
        raise fail("invalid_request", "code_challenge is required (PKCE)")
    if method != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256")
    if not _CHALLENGE_PATTERN.fullmatch(challenge):
        raise fail("invalid_request", "code_challenge must be a base64url SHA-256 digest")
    try:
        scopes = _granted_scopes(requested=params.get("scope"), client=client, roles=None)
    except OAuthError as exc:
        raise fail(exc.error, exc.description) from None
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scope=format_scope(scopes),
        state=state,
        code_challenge=challenge,
        nonce=params.get("nonce"),
    )


def redirect_with(redirect_uri: str, parameters: dict[str, str | None]) -> str:
    """The redirect URI with response parameters added to its query."""
    parts = urlsplit(redirect_uri)
    extra = urlencode({k: v for k, v in parameters.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


async def consent_needed(
    *, db_session: AsyncSession, client: OAuthClient, user: User, scope: str
) -> bool:
    """True when a third-party client asks for scopes the user has not allowed it yet."""
    if client.first_party:
        return False
    consent = await db_session.get(Consent, (user.id, client.id))
    return consent is None or not parse_scope(scope) <= parse_scope(consent.scope)


async def record_consent(
    *, db_session: AsyncSession, client: OAuthClient, user: User, scope: str
) -> None:
    """Remember that the user allowed these scopes to the client."""
    consent = await db_session.get(Consent, (user.id, client.id))
    if consent is None:
        db_session.add(Consent(user_id=user.id, client_id=client.id, scope=scope))
    else:
        consent.scope = format_scope(parse_scope(consent.scope) | parse_scope(scope))
        consent.granted_at = utcnow()
    await db_session.flush()


async def issue_authorization_code(
    *, db_session: AsyncSession, request: AuthorizationRequest, user: User, auth_time: datetime
) -> str:
    """A single-use code for the client, valid CODE_LIFETIME."""
    code = secrets.token_urlsafe(32)
    db_session.add(
        AuthorizationCode(
            code_hash=sha256_hex(code),
            client_id=request.client.id,
            user_id=user.id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            code_challenge=request.code_challenge,
            nonce=request.nonce,
            auth_time=auth_time,
            expires_at=utcnow() + CODE_LIFETIME,
        )
    )
    await db_session.flush()
    return code


# ---------------------------------------------------------------------------------------------
# Token endpoint


async def _user_tokens(
    *,
    db_session: AsyncSession,
    runtime: AuthRuntime,
    client: OAuthClient,
    user: User,
    scope: frozenset[str],
    auth_time: datetime,
    nonce: str | None = None,
    family: TokenFamily | None = None,
) -> dict[str, Any]:
    now = utcnow()
    settings = runtime.settings
    if family is None:
        family = TokenFamily(
            user_id=user.id,
            client_id=client.id,
            scope=format_scope(scope),
            auth_time=auth_time,
            last_used_at=now,
            expires_at=now + timedelta(days=settings.session_max_days),
        )
        db_session.add(family)
        await db_session.flush()
    refresh_token = secrets.token_urlsafe(32)
    db_session.add(
        RefreshToken(
            token_hash=sha256_hex(refresh_token),
            family_id=family.id,
            created_at=now,
            expires_at=min(now + timedelta(days=settings.refresh_token_days), family.expires_at),
        )
    )
    await db_session.flush()
    issuer = await runtime.issuer()
    access_token, expires_in = issuer.access_token(
        subject=str(user.id),
        client_id=client.client_id,
        scopes=scope,
        roles=user.roles,
        session_id=family.id,
    )
    response: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh_token,
        "scope": format_scope(scope),
    }
    if OPENID in scope:
        response["id_token"] = issuer.id_token(
            subject=str(user.id),
            client_id=client.client_id,
            auth_time=family.auth_time,
            nonce=nonce,
            profile=profile_claims(user, scope),
        )
    return response


def profile_claims(user: User, scope: frozenset[str]) -> dict[str, Any]:
    """OpenID Connect claims about the user that these scopes allow."""
    claims: dict[str, Any] = {}
    if PROFILE in scope:
        claims["preferred_username"] = user.username
        claims["name"] = user.display_name
    if EMAIL in scope:
        claims["email"] = user.email
    return claims


def _pkce_matches(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return hmac.compare_digest(computed, challenge)


async def exchange_authorization_code(
    *, db_session: AsyncSession, runtime: AuthRuntime, client: OAuthClient, form: dict[str, str]
) -> dict[str, Any]:
    """grant_type=authorization_code."""
    code = form.get("code", "")
    verifier = form.get("code_verifier")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    if not verifier:
        raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
    if not _VERIFIER_PATTERN.fullmatch(verifier):
        raise OAuthError("invalid_request", "code_verifier must be 43-128 unreserved characters")
    record = await db_session.get(AuthorizationCode, sha256_hex(code))
    if record is None or record.client_id != client.id:
        raise OAuthError("invalid_grant", "unknown authorization code")
    claimed = await db_session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_hash == record.code_hash, AuthorizationCode.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if getattr(claimed, "rowcount", 0) != 1:
        # A replayed code: someone else may hold it; revoke what the first use gave out.
        if record.family_id is not None:
            await _revoke_family(db_session, record.family_id, "authorization_code_reuse")
        raise OAuthError("invalid_grant", "authorization code already used")
    if record.expires_at <= utcnow():
        raise OAuthError("invalid_grant", "authorization code expired")
    if form.get("redirect_uri", record.redirect_uri) != record.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if not _pkce_matches(verifier, record.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    user = await db_session.get(User, record.user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "the account is not active")
    response = await _user_tokens(
        db_session=db_session,
        runtime=runtime,
        client=client,
        user=user,
        scope=parse_scope(record.scope) & scopes_for_roles(user.roles),
        auth_time=record.auth_time,
        nonce=record.nonce,
    )
    family_id = await db_session.scalar(
        select(RefreshToken.family_id).where(
            RefreshToken.token_hash == sha256_hex(response["refresh_token"])
        )
    )
    record.family_id = family_id
    await db_session.flush()
    return response


async def _revoke_family(db_session: AsyncSession, family_id: uuid.UUID, reason: str) -> None:
    await db_session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


async def rotate_refresh_token(
    *, db_session: AsyncSession, runtime: AuthRuntime, client: OAuthClient, form: dict[str, str]
) -> dict[str, Any]:
    """grant_type=refresh_token: a new pair; a replayed token revokes the whole family."""
    presented = form.get("refresh_token", "")
    if not presented:
        raise OAuthError("invalid_request", "refresh_token is required")
    token = await db_session.get(RefreshToken, sha256_hex(presented[:512]))
    if token is None:
        raise OAuthError("invalid_grant", "unknown refresh token")
    family = await db_session.get(TokenFamily, token.family_id)
    if family is None or family.client_id != client.id:
        raise OAuthError("invalid_grant", "unknown refresh token")
    now = utcnow()
    claimed = await db_session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token.token_hash, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        await _revoke_family(db_session, family.id, "refresh_token_reuse")
        raise OAuthError("invalid_grant", "refresh token already used; the session is revoked")
    if family.revoked_at is not None:
        raise OAuthError("invalid_grant", "the session was revoked")
    if token.expires_at <= now or family.expires_at <= now:
        raise OAuthError("invalid_grant", "refresh token expired")
    user = await db_session.get(User, family.user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "the account is not active")
    scope = parse_scope(family.scope) & scopes_for_roles(user.roles)
    if "scope" in form:
        narrowed = parse_scope(form["scope"])
        if not narrowed <= parse_scope(family.scope):
            raise OAuthError("invalid_scope", "a refresh cannot widen the granted scope")
        scope &= narrowed
    family.last_used_at = now
    return await _user_tokens(
        db_session=db_session,
        runtime=runtime,
        client=client,
        user=user,
        scope=scope,
        auth_time=family.auth_time,
        family=family,
    )


async def client_credentials_token(
    *, runtime: AuthRuntime, client: OAuthClient, form: dict[str, str]
) -> dict[str, Any]:
    """grant_type=client_credentials: a token for the client itself, no refresh token."""
    if not client.confidential:
        raise OAuthError("unauthorized_client", "client_credentials needs a confidential client")
    scope = _granted_scopes(requested=form.get("scope"), client=client, roles=None) - {
        OPENID,
        PROFILE,
        EMAIL,
    }
    issuer = await runtime.issuer()
    access_token, expires_in = issuer.access_token(
        subject=f"client:{client.client_id}",
        client_id=client.client_id,
        scopes=scope,
        roles=(),
        session_id=None,
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": format_scope(scope),
    }


async def token_response(
    *, db_session: AsyncSession, runtime: AuthRuntime, client: OAuthClient, form: dict[str, str]
) -> dict[str, Any]:
    """Answer a token request for an authenticated client."""
    grant_type = form.get("grant_type", "")
    if grant_type not in GRANT_TYPES:
        raise OAuthError("unsupported_grant_type", f"unsupported grant_type {grant_type[:64]!r}")
    if grant_type not in client.grant_types:
        raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
    if grant_type == GRANT_AUTHORIZATION_CODE:
        return await exchange_authorization_code(
            db_session=db_session, runtime=runtime, client=client, form=form
        )
    if grant_type == GRANT_REFRESH_TOKEN:
        return await rotate_refresh_token(
            db_session=db_session, runtime=runtime, client=client, form=form
        )
    if grant_type == GRANT_CLIENT_CREDENTIALS:
        return await client_credentials_token(runtime=runtime, client=client, form=form)
    return await poll_device_authorization(
        db_session=db_session, runtime=runtime, client=client, form=form
    )


# ---------------------------------------------------------------------------------------------
# Device authorization grant (RFC 8628)


def normalize_user_code(text: str) -> str:
    """A user code as stored: upper case, without the dash or spaces people type."""
    return "".join(ch for ch in text.upper() if ch.isalnum())[:16]


def format_user_code(code: str) -> str:
    """A user code as shown: XXXX-XXXX."""
    return f"{code[:4]}-{code[4:]}"


async def start_device_authorization(
    *, db_session: AsyncSession, runtime: AuthRuntime, client: OAuthClient, form: dict[str, str]
) -> dict[str, Any]:
    """POST /oauth/device_authorization: a device code and the code its user types."""
    if GRANT_DEVICE_CODE not in client.grant_types:
        raise OAuthError("unauthorized_client", "this client may not use the device grant")
    scope = _granted_scopes(requested=form.get("scope"), client=client, roles=None)
    device_code = secrets.token_urlsafe(32)
    user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    db_session.add(
        DeviceAuthorization(
            device_code_hash=sha256_hex(device_code),
            user_code=user_code,
            client_id=client.id,
            scope=format_scope(scope),
            interval_s=DEVICE_POLL_INTERVAL_S,
            expires_at=utcnow() + DEVICE_CODE_LIFETIME,
        )
    )
    await db_session.flush()
    verification_uri = f"{runtime.settings.public_url}/oauth/device"
    shown = format_user_code(user_code)
    return {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?{urlencode({'user_code': shown})}",
        "expires_in": int(DEVICE_CODE_LIFETIME.total_seconds()),
        "interval": DEVICE_POLL_INTERVAL_S,
    }


async def find_pending_device_authorization(
    *, db_session: AsyncSession, user_code: str
) -> tuple[DeviceAuthorization, OAuthClient] | None:
    """The live, undecided device authorization for a typed user code, with its client."""
    row = (
        await db_session.execute(
            select(DeviceAuthorization, OAuthClient)
            .join(OAuthClient, OAuthClient.id == DeviceAuthorization.client_id)
            .where(
                DeviceAuthorization.user_code == normalize_user_code(user_code),
                DeviceAuthorization.status == DeviceStatus.pending,
                DeviceAuthorization.expires_at > utcnow(),
            )
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def decide_device_authorization(
    *, db_session: AsyncSession, device_id: uuid.UUID, user: User, approve: bool
) -> bool:
    """Approve or deny a pending device authorization; False if it is no longer pending."""
    decided = await db_session.execute(
        update(DeviceAuthorization)
        .where(
            DeviceAuthorization.id == device_id,
            DeviceAuthorization.status == DeviceStatus.pending,
            DeviceAuthorization.expires_at > utcnow(),
        )
        .values(
            status=DeviceStatus.approved if approve else DeviceStatus.denied,
            user_id=user.id,
        )
    )
    return getattr(decided, "rowcount", 0) == 1


async def poll_device_authorization(
    *, db_session: AsyncSession, runtime: AuthRuntime, client: OAuthClient, form: dict[str, str]
) -> dict[str, Any]:
    """grant_type=device_code: pending, slow down, denied, expired, or the tokens."""
    device_code = form.get("device_code", "")
    if not device_code:
        raise OAuthError("invalid_request", "device_code is required")
    record = await db_session.scalar(
        select(DeviceAuthorization).where(
            DeviceAuthorization.device_code_hash == sha256_hex(device_code[:512])
        )
    )
    if record is None or record.client_id != client.id:
        raise OAuthError("invalid_grant", "unknown device code")
    now = utcnow()
    if record.expires_at <= now:
        raise OAuthError("expired_token", "the device code expired; start again")
    if record.status == DeviceStatus.denied:
        raise OAuthError("access_denied", "the user denied the request")
    if record.status == DeviceStatus.consumed:
        raise OAuthError("invalid_grant", "device code already used")
    too_soon = record.last_polled_at is not None and now - record.last_polled_at < timedelta(
        seconds=record.interval_s
    )
    record.last_polled_at = now
    if too_soon:
        record.interval_s += 5
        raise OAuthError("slow_down", f"poll at most every {record.interval_s} seconds")
    if record.status == DeviceStatus.pending:
        raise OAuthError("authorization_pending", "waiting for the user to approve")
    claimed = await db_session.execute(
        update(DeviceAuthorization)
        .where(
            DeviceAuthorization.id == record.id,
            DeviceAuthorization.status == DeviceStatus.approved,
        )
        .values(status=DeviceStatus.consumed)
    )
    if getattr(claimed, "rowcount", 0) != 1 or record.user_id is None:
        raise OAuthError("invalid_grant", "device code already used")
    user = await db_session.get(User, record.user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "the account is not active")
    return await _user_tokens(
        db_session=db_session,
        runtime=runtime,
        client=client,
        user=user,
        scope=parse_scope(record.scope) & scopes_for_roles(user.roles),
        auth_time=now,
    )


# ---------------------------------------------------------------------------------------------
# Revocation (RFC 7009) and introspection (RFC 7662)


def _unverified_claims(token: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return claims


async def revoke_token(
    *,
    db_session: AsyncSession,
    runtime: AuthRuntime,
    client: OAuthClient,
    token: str,
) -> None:
    """Revoke the sign-in a refresh or access token belongs to, if it is this client's."""
    refresh = await db_session.get(RefreshToken, sha256_hex(token[:512]))
    if refresh is not None:
        family = await db_session.get(TokenFamily, refresh.family_id)
        if family is not None and family.client_id == client.id:
            await _revoke_family(db_session, family.id, "revoked_by_client")
        return
    try:
        principal = await runtime.verifier.verify(token)
    except InvalidToken:
        return
    if principal.client_id == client.client_id and principal.session_id is not None:
        await _revoke_family(db_session, principal.session_id, "revoked_by_client")


async def introspect_token(
    *, db_session: AsyncSession, runtime: AuthRuntime, token: str
) -> dict[str, Any]:
    """RFC 7662 answer: whether the token is active now, and what it carries."""
    inactive: dict[str, Any] = {"active": False}
    refresh = await db_session.get(RefreshToken, sha256_hex(token[:512]))
    now = utcnow()
    if refresh is not None:
        family = await db_session.get(TokenFamily, refresh.family_id)
        if (
            family is None
            or family.revoked_at is not None
            or refresh.rotated_at is not None
            or refresh.expires_at <= now
            or family.expires_at <= now
            or not await auth_service.user_is_active(db_session=db_session, user_id=family.user_id)
        ):
            return inactive
        client = await db_session.get(OAuthClient, family.client_id)
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": family.scope,
            "client_id": client.client_id if client else None,
            "sub": str(family.user_id),
            "exp": int(refresh.expires_at.timestamp()),
            "iss": runtime.settings.issuer,
        }
    try:
        principal = await runtime.verifier.verify(token)
    except InvalidToken:
        return inactive
    if principal.session_id is not None:
        family = await db_session.get(TokenFamily, principal.session_id)
        if family is None or family.revoked_at is not None:
            return inactive
    if principal.user_id is not None and not await auth_service.user_is_active(
        db_session=db_session, user_id=principal.user_id
    ):
        return inactive
    claims = _unverified_claims(token) or {}
    answer: dict[str, Any] = {
        "active": True,
        "token_type": "access_token",
        "scope": " ".join(sorted(principal.scopes)),
        "client_id": principal.client_id,
        "sub": principal.subject,
        "exp": int(principal.expires_at),
        "iat": claims.get("iat"),
        "aud": claims.get("aud"),
        "iss": claims.get("iss"),
        "jti": principal.token_id,
        "roles": sorted(principal.roles),
    }
    if principal.user_id is not None:
        user = await db_session.get(User, principal.user_id)
        if user is not None:
            answer["username"] = user.username
    return answer


def authorization_server_metadata(public_url: str) -> dict[str, Any]:
    """RFC 8414 / OpenID Connect Discovery metadata."""
    return {
        "issuer": public_url,
        "authorization_endpoint": f"{public_url}/oauth/authorize",
        "token_endpoint": f"{public_url}/oauth/token",
        "device_authorization_endpoint": f"{public_url}/oauth/device_authorization",
        "revocation_endpoint": f"{public_url}/oauth/revoke",
        "introspection_endpoint": f"{public_url}/oauth/introspect",
        "userinfo_endpoint": f"{public_url}/oauth/userinfo",
        "jwks_uri": f"{public_url}/oauth/jwks",
        "scopes_supported": sorted(ALL_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            GRANT_AUTHORIZATION_CODE,
            GRANT_REFRESH_TOKEN,
            GRANT_CLIENT_CREDENTIALS,
            GRANT_DEVICE_CODE,
        ],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "preferred_username",
            "name",
            "email",
        ],
        "authorization_response_iss_parameter_supported": True,
    }

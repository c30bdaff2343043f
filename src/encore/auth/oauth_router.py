"""OAuth 2.1 and OpenID Connect endpoints: discovery, JWKS, authorize pages, token, device,
revocation, introspection and userinfo.

Token-endpoint errors follow RFC 6749 §5.2 (`{"error": …, "error_description": …}`), which
every OAuth client library parses; the rest of the API answers RFC 9457 problems.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth import oauth
from encore.auth import service as auth_service
from encore.auth.dependencies import Authenticated, auth_runtime
from encore.auth.models import User
from encore.auth.oauth import AuthorizeError, OAuthError
from encore.auth.pages import csrf_valid, open_ticket, render_page, sign_ticket
from encore.auth.runtime import AuthRuntime
from encore.auth.scopes import OPENID, SCOPE_DESCRIPTIONS, parse_scope
from encore.auth.tokens import Principal
from encore.db import utcnow
from encore.problems import Forbidden, Problem

router = APIRouter(tags=["oauth"])

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 30
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

RuntimeDep = Annotated[AuthRuntime, Depends(auth_runtime)]


@asynccontextmanager
async def _transaction(runtime: AuthRuntime) -> AsyncIterator[AsyncSession]:
    """A session committed on success and on OAuth errors (which may revoke tokens), rolled
    back on anything unexpected."""
    async with runtime.session_factory() as db_session:
        try:
            yield db_session
        except (OAuthError, AuthorizeError, Problem):
            await db_session.commit()
            raise
        except BaseException:
            await db_session.rollback()
            raise
        await db_session.commit()


async def _read_form(request: Request) -> dict[str, str]:
    """The url-encoded form, each parameter at most once (RFC 6749 §3.1), within size caps."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise OAuthError("invalid_request", f"the request body is over {MAX_FORM_BYTES} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the request body is over {MAX_FORM_BYTES} bytes")
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    values: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise OAuthError("invalid_request", "files are not accepted here")
        if name in values:
            raise OAuthError("invalid_request", f"parameter {name} was sent more than once")
        values[name] = value
    return values


def _oauth_error_response(exc: OAuthError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers={**_NO_STORE, **exc.headers})


# ---------------------------------------------------------------------------------------------
# Discovery


@router.get("/.well-known/oauth-authorization-server", summary="OAuth server metadata (RFC 8414)")
async def authorization_server_metadata(runtime: RuntimeDep) -> dict[str, Any]:
    """Where the endpoints are and what this server supports."""
    return oauth.authorization_server_metadata(runtime.settings.public_url)


@router.get("/.well-known/openid-configuration", summary="OpenID Connect discovery")
async def openid_configuration(runtime: RuntimeDep) -> dict[str, Any]:
    """The same metadata, at the OpenID Connect location."""
    return oauth.authorization_server_metadata(runtime.settings.public_url)


@router.get("/oauth/jwks", summary="Public keys that sign tokens (JWKS)")
async def jwks(runtime: RuntimeDep) -> JSONResponse:
    """Every key whose tokens may still be valid, current one first."""
    keys = await runtime.refresh_keys()
    return JSONResponse(
        {"keys": [key.public_jwk for key in keys]},
        headers={"Cache-Control": "public, max-age=300"},
    )


# ---------------------------------------------------------------------------------------------
# Authorization code: sign-in and consent pages


def _message_page(
    request: Request, runtime: AuthRuntime, *, title: str, message: str, status_code: int = 200
) -> Response:
    return render_page(
        request,
        "message.html",
        form_key=runtime.form_key,
        status_code=status_code,
        title=title,
        message=message,
    )


async def _posted_page_form(
    request: Request, runtime: AuthRuntime, *, retry_hint: str
) -> dict[str, str] | Response:
    """A sign-in page's posted form, or the page explaining why it cannot be used."""
    try:
        form = await _read_form(request)
    except OAuthError as exc:
        return _message_page(
            request, runtime, status_code=400, title="Something went wrong", message=exc.description
        )
    if not csrf_valid(request, runtime.form_key, form.get("csrf_token")):
        return _message_page(
            request, runtime, status_code=403, title="Please try again", message=retry_hint
        )
    return form


def _authorize_error_response(
    request: Request, runtime: AuthRuntime, exc: AuthorizeError
) -> Response:
    if exc.redirect_uri is None:
        return _message_page(
            request,
            runtime,
            status_code=400,
            title="This sign-in link is not valid",
            message=f"{exc.description}. Go back to the app and try again.",
        )
    target = oauth.redirect_with(
        exc.redirect_uri,
        {
            "error": exc.error,
            "error_description": exc.description,
            "state": exc.state,
            "iss": runtime.settings.issuer,
        },
    )
    return RedirectResponse(target, status_code=303, headers=_NO_STORE)


def _login_page(
    request: Request,
    runtime: AuthRuntime,
    *,
    client_name: str,
    hidden: dict[str, str],
    action: str,
    status_code: int = 200,
    error: str | None = None,
    username: str = "",
    ask_user_code: bool = False,
    user_code: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    return render_page(
        request,
        "login.html",
        form_key=runtime.form_key,
        status_code=status_code,
        headers=headers,
        title="Sign in to Encore",
        client_name=client_name,
        hidden=hidden,
        action=action,
        error=error,
        username=username,
        ask_user_code=ask_user_code,
        user_code=user_code,
    )


def _consent_page(
    request: Request,
    runtime: AuthRuntime,
    *,
    client_name: str,
    username: str,
    scope: str,
    ticket: str,
    action: str,
) -> Response:
    return render_page(
        request,
        "consent.html",
        form_key=runtime.form_key,
        title="Allow access?",
        client_name=client_name,
        username=username,
        scopes=[SCOPE_DESCRIPTIONS.get(name, name) for name in sorted(parse_scope(scope))],
        ticket=ticket,
        action=action,
    )


def _address(request: Request, runtime: AuthRuntime) -> str:
    return auth_service.client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        runtime.settings.trusted_proxies,
    )


async def _sign_in(
    request: Request,
    runtime: AuthRuntime,
    db_session: AsyncSession,
    form: dict[str, str],
) -> tuple[User | None, str | None, int, dict[str, str]]:
    """Check the form's credentials under the throttle: (user, error, status, headers)."""
    username = form.get("username", "")[:64]
    password = form.get("password", "")
    address = _address(request, runtime)
    wait = await auth_service.login_blocked_for(
        db_session=db_session, username=username, address=address
    )
    if wait is not None:
        seconds = max(1, int(wait.total_seconds()) + 1)
        return (
            None,
            f"Too many failed sign-ins. Try again in {seconds} seconds.",
            429,
            {"Retry-After": str(seconds)},
        )
    user = await auth_service.authenticate_user(
        db_session=db_session, username=username, password=password
    )
    if user is None:
        await auth_service.record_login_failure(
            db_session=db_session, username=username, address=address
        )
        return None, "Wrong username or password.", 400, {}
    await auth_service.record_login_success(db_session=db_session, username=username)
    return user, None, 200, {}


async def _finish_authorization(
    runtime: AuthRuntime,
    db_session: AsyncSession,
    request_: oauth.AuthorizationRequest,
    user: User,
    auth_time: datetime,
) -> Response:
    code = await oauth.issue_authorization_code(
        db_session=db_session, request=request_, user=user, auth_time=auth_time
    )
    target = oauth.redirect_with(
        request_.redirect_uri,
        {"code": code, "state": request_.state, "iss": runtime.settings.issuer},
    )
    return RedirectResponse(target, status_code=303, headers=_NO_STORE)


@router.get("/oauth/authorize", summary="Start an authorization (sign-in page)")
async def authorize_page(request: Request, runtime: RuntimeDep) -> Response:
    """Validate the authorization request and show the sign-in form."""
    params = dict(request.query_params)
    async with runtime.session_factory() as db_session:
        try:
            validated = await oauth.validate_authorization_request(
                db_session=db_session, params=params
            )
        except AuthorizeError as exc:
            return _authorize_error_response(request, runtime, exc)
    return _login_page(
        request,
        runtime,
        client_name=validated.client.name,
        hidden=validated.hidden_fields(),
        action="/oauth/authorize",
    )


@router.post("/oauth/authorize", summary="Sign in or answer the consent page")
async def authorize_submit(request: Request, runtime: RuntimeDep) -> Response:
    """The sign-in form (step=login) or the consent form (step=consent) posts here."""
    form = await _posted_page_form(
        request,
        runtime,
        retry_hint="The form expired or came from another site. Go back to the app and retry.",
    )
    if isinstance(form, Response):
        return form
    async with _transaction(runtime) as db_session:
        if form.get("step") == "consent":
            return await _authorize_consent(request, runtime, db_session, form)
        try:
            validated = await oauth.validate_authorization_request(
                db_session=db_session,
                params={
                    name: form[name]
                    for name in (
                        "client_id",
                        "redirect_uri",
                        "response_type",
                        "scope",
                        "state",
                        "code_challenge",
                        "code_challenge_method",
                        "nonce",
                    )
                    if name in form
                },
            )
        except AuthorizeError as exc:
            return _authorize_error_response(request, runtime, exc)
        user, error, status, headers = await _sign_in(request, runtime, db_session, form)
        if user is None:
            return _login_page(
                request,
                runtime,
                client_name=validated.client.name,
                hidden=validated.hidden_fields(),
                action="/oauth/authorize",
                status_code=status,
                error=error,
                username=form.get("username", "")[:64],
                headers=headers,
            )
        auth_time = utcnow()
        if await oauth.consent_needed(
            db_session=db_session, client=validated.client, user=user, scope=validated.scope
        ):
            ticket = sign_ticket(
                runtime.form_key,
                {
                    "kind": "authorize",
                    "sub": str(user.id),
                    "auth_time": int(auth_time.timestamp()),
                    **validated.hidden_fields(),
                },
            )
            return _consent_page(
                request,
                runtime,
                client_name=validated.client.name,
                username=user.username,
                scope=validated.scope,
                ticket=ticket,
                action="/oauth/authorize",
            )
        return await _finish_authorization(runtime, db_session, validated, user, auth_time)


async def _authorize_consent(
    request: Request, runtime: AuthRuntime, db_session: AsyncSession, form: dict[str, str]
) -> Response:
    claims = open_ticket(runtime.form_key, form.get("ticket", ""))
    if claims is None or claims.get("kind") != "authorize":
        return _message_page(
            request,
            runtime,
            status_code=400,
            title="Please sign in again",
            message="This page expired. Go back to the app and retry.",
        )
    params = {
        name: str(value)
        for name, value in claims.items()
        if name not in ("kind", "sub", "auth_time", "aud", "iat", "exp")
    }
    try:
        validated = await oauth.validate_authorization_request(db_session=db_session, params=params)
    except AuthorizeError as exc:
        return _authorize_error_response(request, runtime, exc)
    user = await db_session.get(User, uuid.UUID(str(claims["sub"])))
    if user is None or user.disabled:
        return _message_page(
            request,
            runtime,
            status_code=400,
            title="Please sign in again",
            message="This account cannot sign in.",
        )
    if form.get("decision") != "allow":
        return _authorize_error_response(
            request,
            runtime,
            AuthorizeError(
                "access_denied",
                "the user denied the request",
                redirect_uri=validated.redirect_uri,
                state=validated.state,
            ),
        )
    await oauth.record_consent(
        db_session=db_session, client=validated.client, user=user, scope=validated.scope
    )
    auth_time = datetime.fromtimestamp(int(claims["auth_time"]), tz=utcnow().tzinfo)
    return await _finish_authorization(runtime, db_session, validated, user, auth_time)


# ---------------------------------------------------------------------------------------------
# Token, revocation, introspection


@router.post("/oauth/token", summary="Exchange a grant for tokens")
async def token(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """authorization_code, refresh_token, client_credentials and device_code grants."""
    try:
        form = await _read_form(request)
        async with _transaction(runtime) as db_session:
            client = await oauth.authenticate_client(
                db_session=db_session, form=form, authorization=request.headers.get("authorization")
            )
            answer = await oauth.token_response(
                db_session=db_session, runtime=runtime, client=client, form=form
            )
    except OAuthError as exc:
        return _oauth_error_response(exc)
    return JSONResponse(answer, headers=_NO_STORE)


@router.post("/oauth/revoke", summary="Revoke a token (RFC 7009)")
async def revoke(request: Request, runtime: RuntimeDep) -> Response:
    """Revoke the sign-in behind a refresh or access token; 200 even for unknown tokens."""
    try:
        form = await _read_form(request)
        if not form.get("token"):
            raise OAuthError("invalid_request", "token is required")
        async with _transaction(runtime) as db_session:
            client = await oauth.authenticate_client(
                db_session=db_session, form=form, authorization=request.headers.get("authorization")
            )
            await oauth.revoke_token(
                db_session=db_session, runtime=runtime, client=client, token=form["token"]
            )
    except OAuthError as exc:
        return _oauth_error_response(exc)
    return Response(status_code=200, headers=_NO_STORE)


@router.post("/oauth/introspect", summary="Is this token active? (RFC 7662)")
async def introspect(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """For confidential clients (the edge, internal services): the token's current state."""
    try:
        form = await _read_form(request)
        if not form.get("token"):
            raise OAuthError("invalid_request", "token is required")
        async with _transaction(runtime) as db_session:
            client = await oauth.authenticate_client(
                db_session=db_session, form=form, authorization=request.headers.get("authorization")
            )
            if not client.confidential:
                raise OAuthError(
                    "invalid_client", "introspection needs a confidential client", status=401
                )
            answer = await oauth.introspect_token(
                db_session=db_session, runtime=runtime, token=form["token"]
            )
    except OAuthError as exc:
        return _oauth_error_response(exc)
    return JSONResponse(answer, headers=_NO_STORE)


# ---------------------------------------------------------------------------------------------
# Device authorization grant


@router.post("/oauth/device_authorization", summary="Start a device sign-in (RFC 8628)")
async def device_authorization(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """A device code to poll with, and a short code for the user to type."""
    try:
        form = await _read_form(request)
        async with _transaction(runtime) as db_session:
            client = await oauth.authenticate_client(
                db_session=db_session, form=form, authorization=request.headers.get("authorization")
            )
            answer = await oauth.start_device_authorization(
                db_session=db_session, runtime=runtime, client=client, form=form
            )
    except OAuthError as exc:
        return _oauth_error_response(exc)
    return JSONResponse(answer, headers=_NO_STORE)


@router.get("/oauth/device", summary="Device sign-in page")
async def device_page(request: Request, runtime: RuntimeDep) -> Response:
    """Where the user types the code their TV or CLI shows, and signs in."""
    user_code = request.query_params.get("user_code", "")[:16]
    return _login_page(
        request,
        runtime,
        client_name="your device",
        hidden={},
        action="/oauth/device",
        ask_user_code=True,
        user_code=user_code,
    )


@router.post("/oauth/device", summary="Sign in and approve a device")
async def device_submit(request: Request, runtime: RuntimeDep) -> Response:
    """step=login checks the code and the password; step=consent approves or denies."""
    form = await _posted_page_form(
        request, runtime, retry_hint="The form expired. Reload the page and retry."
    )
    if isinstance(form, Response):
        return form
    async with _transaction(runtime) as db_session:
        if form.get("step") == "consent":
            return await _device_consent(request, runtime, db_session, form)
        user_code = form.get("user_code", "")[:16]

        def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
            return _login_page(
                request,
                runtime,
                client_name="your device",
                hidden={},
                action="/oauth/device",
                status_code=status,
                error=error,
                username=form.get("username", "")[:64],
                ask_user_code=True,
                user_code=user_code,
                headers=headers,
            )

        user, error, status, headers = await _sign_in(request, runtime, db_session, form)
        if user is None:
            return again(error or "Sign-in failed.", status, headers)
        pending = await oauth.find_pending_device_authorization(
            db_session=db_session, user_code=user_code
        )
        if pending is None:
            return again("That code is not valid or has expired. Check your device.", 400)
        device, client = pending
        ticket = sign_ticket(
            runtime.form_key, {"kind": "device", "sub": str(user.id), "device": str(device.id)}
        )
        return _consent_page(
            request,
            runtime,
            client_name=client.name,
            username=user.username,
            scope=device.scope,
            ticket=ticket,
            action="/oauth/device",
        )


async def _device_consent(
    request: Request, runtime: AuthRuntime, db_session: AsyncSession, form: dict[str, str]
) -> Response:
    claims = open_ticket(runtime.form_key, form.get("ticket", ""))
    if claims is None or claims.get("kind") != "device":
        return _message_page(
            request,
            runtime,
            status_code=400,
            title="Please start again",
            message="This page expired. Enter the code again.",
        )
    user = await db_session.get(User, uuid.UUID(str(claims["sub"])))
    if user is None or user.disabled:
        return _message_page(
            request,
            runtime,
            status_code=400,
            title="Please start again",
            message="This account cannot sign in.",
        )
    approve = form.get("decision") == "allow"
    decided = await oauth.decide_device_authorization(
        db_session=db_session,
        device_id=uuid.UUID(str(claims["device"])),
        user=user,
        approve=approve,
    )
    if not decided:
        return _message_page(
            request,
            runtime,
            status_code=400,
            title="Code expired",
            message="That code is no longer waiting. Start again on your device.",
        )
    return _message_page(
        request,
        runtime,
        title="Device signed in" if approve else "Request denied",
        message="You can return to your device now."
        if approve
        else "Your device was not signed in.",
    )


# ---------------------------------------------------------------------------------------------
# OpenID Connect userinfo


async def _userinfo(principal: Principal, runtime: AuthRuntime) -> JSONResponse:
    if OPENID not in principal.scopes or principal.user_id is None:
        raise Forbidden(
            "userinfo needs a user's token with the openid scope",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="openid"'},
        )
    async with runtime.session_factory() as db_session:
        user = await db_session.get(User, principal.user_id)
        if user is None or user.disabled:
            raise Forbidden("the account is not active")
        claims = {"sub": str(user.id), **oauth.profile_claims(user, principal.scopes)}
    return JSONResponse(claims, headers=_NO_STORE)


@router.get("/oauth/userinfo", summary="OpenID Connect userinfo")
async def userinfo(principal: Authenticated, runtime: RuntimeDep) -> JSONResponse:
    """Claims about the signed-in user that the token's scopes allow."""
    return await _userinfo(principal, runtime)


@router.post("/oauth/userinfo", summary="OpenID Connect userinfo (POST)")
async def userinfo_post(principal: Authenticated, runtime: RuntimeDep) -> JSONResponse:
    """The same, for clients that POST."""
    return await _userinfo(principal, runtime)

"""FastAPI dependencies: who is calling (`Authenticated`, `CurrentUser`) and `require_scopes`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from encore.auth.runtime import AuthRuntime
from encore.auth.tokens import InvalidToken, Principal
from encore.problems import Forbidden, Unauthorized

_CHALLENGE = 'Bearer realm="encore"'


def auth_runtime(request: Request) -> AuthRuntime:
    """The running app's auth runtime."""
    runtime: AuthRuntime = request.app.state.resources.auth
    return runtime


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    if not authorization or authorization[:7].lower() != "bearer ":
        return None
    token = authorization[7:].strip()
    return token or None


async def current_principal(request: Request) -> Principal:
    """The verified bearer token of the request; 401 problem without a valid one."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized(
            "this endpoint needs an access token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    try:
        return await auth_runtime(request).verifier.verify(token)
    except InvalidToken as exc:
        raise Unauthorized(
            f"the access token is not valid: {exc}",
            headers={
                "WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token", '
                f'error_description="{exc}"'
            },
        ) from None


Authenticated = Annotated[Principal, Depends(current_principal)]


async def current_user(principal: Authenticated) -> Principal:
    """A principal that is a signed-in user (not a client acting for itself)."""
    if not principal.is_user:
        raise Forbidden("this endpoint needs a user's token, not a client-credentials token")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def require_scopes(*scopes: str, user: bool = True) -> Any:
    """A dependency: the caller's token must carry every one of these scopes (403 otherwise)."""
    needed = frozenset(scopes)

    async def check(principal: Authenticated) -> Principal:
        if user and not principal.is_user:
            raise Forbidden("this endpoint needs a user's token, not a client-credentials token")
        missing = needed - principal.scopes
        if missing:
            wanted = " ".join(sorted(needed))
            raise Forbidden(
                f"the access token lacks the scope(s): {' '.join(sorted(missing))}",
                headers={
                    "WWW-Authenticate": f'{_CHALLENGE}, error="insufficient_scope", '
                    f'scope="{wanted}"'
                },
            )
        return principal

    return Depends(check)

"""Server-rendered sign-in pages: templates, CSRF tokens and signed consent tickets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

CSRF_COOKIE = "encore_csrf"
TICKET_LIFETIME_S = 300
_TICKET_AUDIENCE = "encore-consent"

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)

# Pages that take passwords must not be framed (clickjacking), cached, or load anything else.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _csrf_token_for(cookie_value: str, form_key: bytes) -> str:
    return hmac.new(form_key, b"csrf:" + cookie_value.encode(), hashlib.sha256).hexdigest()


def render_page(
    request: Request,
    template: str,
    *,
    form_key: bytes,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page with a CSRF token bound to the browser's CSRF cookie (set if missing)."""
    cookie_value = request.cookies.get(CSRF_COOKIE)
    fresh_cookie = cookie_value is None or len(cookie_value) != 43
    if fresh_cookie:
        cookie_value = secrets.token_urlsafe(32)
    assert cookie_value is not None
    body = _templates.get_template(template).render(
        {"error": None, **context, "csrf_token": _csrf_token_for(cookie_value, form_key)}
    )
    response = HTMLResponse(
        body, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})}
    )
    if fresh_cookie:
        response.set_cookie(
            CSRF_COOKIE,
            cookie_value,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/oauth",
        )
    return response


def csrf_valid(request: Request, form_key: bytes, token: str | None) -> bool:
    """True when the form's CSRF token matches the browser's CSRF cookie."""
    cookie_value = request.cookies.get(CSRF_COOKIE)
    if not cookie_value or not token:
        return False
    return hmac.compare_digest(_csrf_token_for(cookie_value, form_key), token)


def sign_ticket(form_key: bytes, claims: dict[str, Any]) -> str:
    """A short-lived signed ticket carrying what the consent step needs."""
    now = int(time.time())
    return jwt.encode(
        {**claims, "aud": _TICKET_AUDIENCE, "iat": now, "exp": now + TICKET_LIFETIME_S},
        form_key,
        algorithm="HS256",
    )


def open_ticket(form_key: bytes, ticket: str) -> dict[str, Any] | None:
    """The claims of a valid, unexpired ticket, or None."""
    try:
        claims: dict[str, Any] = jwt.decode(
            ticket, form_key, algorithms=["HS256"], audience=_TICKET_AUDIENCE
        )
    except jwt.InvalidTokenError:
        return None
    return claims

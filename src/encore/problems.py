"""RFC 9457 problem details: every error Encore answers is application/problem+json."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://encore.dev/problems/"

logger = structlog.get_logger("encore.problems")


class Problem(Exception):
    """An error with an HTTP status, raised by services and turned into problem+json."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        if slug is not None:
            self.slug = slug
        self.headers = headers or {}
        self.extra = extra or {}


class NotFound(Problem):
    """The named resource does not exist (or is not visible to the caller)."""

    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(Problem):
    """The request conflicts with the current state of the resource."""

    status = 409
    title = "Conflict"
    slug = "conflict"


class Unauthorized(Problem):
    """No valid credentials: the client must (re-)authenticate."""

    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class Forbidden(Problem):
    """Authenticated, but not allowed to do this."""

    status = 403
    title = "Forbidden"
    slug = "forbidden"


class ContentTooLarge(Problem):
    """The request, or what it would store, is bigger than allowed."""

    status = 413
    title = "Content too large"
    slug = "content-too-large"


class TooManyRequests(Problem):
    """The client must wait before trying again."""

    status = 429
    title = "Too many requests"
    slug = "too-many-requests"


class InvalidInput(Problem):
    """The request is well formed JSON but its content cannot be used."""

    status = 422
    title = "Invalid input"
    slug = "validation-error"


def problem_response(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    slug: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """Build a problem+json response."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or phrase.lower().replace(" ", "-")),
        "title": title or phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_location(loc: tuple[Any, ...]) -> str:
    # FastAPI prefixes the part of the request ("path", "query", "body"); keep it, it tells the
    # client where to look.
    return ".".join(str(part) for part in loc)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"field": _field_location(tuple(err.get("loc", ()))), "message": str(err.get("msg", ""))}
        for err in exc.errors()
    ]


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        title=exc.title,
        detail=exc.detail,
        slug=exc.slug,
        instance=request.url.path,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    fields = ", ".join(e["field"] for e in errors)
    return problem_response(
        422,
        title="Invalid input",
        slug="validation-error",
        detail=f"the request has invalid values in: {fields}",
        instance=request.url.path,
        extra={"errors": errors},
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    if exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        exc.status_code,
        detail=detail,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log with the request id; the client learns only that it failed.
    logger.error("unhandled_error", path=request.url.path, exc_info=exc)
    return problem_response(
        500,
        detail="the server failed to complete the request; it has been logged",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error the app raises answer as application/problem+json."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected_error)

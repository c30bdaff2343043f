"""Logging (structlog JSON with request ids), Prometheus metrics and health endpoints."""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from encore.config import Settings

REQUEST_ID_HEADER = "x-request-id"
# A client-supplied id is echoed only when it is short and plain, so it cannot inject into logs.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def _add_request_id(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    request_id = request_id_var.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def configure_logging(settings: Settings) -> None:
    """Send structlog and stdlib logging to stderr as JSON lines (or readable console lines)."""
    level = getattr(logging, settings.log_level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log duplicates our own request log line.
    logging.getLogger("uvicorn.access").disabled = True


class Metrics:
    """The Prometheus collectors of one app instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "encore_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "encore_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )

        # labels() hashes and validates its arguments on every call; the children are reused.
        self._request_counters: dict[tuple[str, str, int], Any] = {}
        self._latency_histograms: dict[tuple[str, str], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        counter = self._request_counters.get((method, route, status))
        if counter is None:
            counter = self.requests.labels(method, route, str(status))
            self._request_counters[(method, route, status)] = counter
        counter.inc()
        histogram = self._latency_histograms.get((method, route))
        if histogram is None:
            histogram = self.latency.labels(method, route)
            self._latency_histograms[(method, route)] = histogram
        histogram.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus text format, with its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label, so scanners cannot blow up the metric cardinality.
    return path if isinstance(path, str) else "<unmatched>"


class RequestIds:
    """Request ids unique across processes: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A fresh request id, e.g. `3f9a0c1b2d4e-000000000042`."""
        # Cheaper than uuid4 on every request, and still unique where logs are merged.
        return f"{self._prefix}-{next(self._counter):012d}"


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, one access log line, and request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.request_ids = RequestIds()
        self.logger = structlog.get_logger("encore.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _ACCEPTABLE_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = self.request_ids.next()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header_value = request_id.encode("latin-1")

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", header_value)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            self.metrics.observe_request(method, route, status, elapsed)
            self.logger.info(
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            request_id_var.reset(token)

"""The NATS side of the bus: one client connection per process part, and streams kept as
configured. Shared by the JetStream backends of the job queue and the event log."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import nats
import structlog
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import APIError, NotFoundError

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from encore.config import Settings

logger = structlog.get_logger("encore.bus")

__all__ = [
    "RECONNECT_WAIT_SECONDS",
    "bus_servers",
    "connect_bus",
    "ensure_consumer",
    "ensure_stream",
    "redact_server_url",
]

RECONNECT_WAIT_SECONDS = 0.5
"""Pause between reconnection attempts; short, because a restarted node is back in seconds."""

CONNECT_TIMEOUT_SECONDS = 2
"""How long one attempt to reach one server may take."""

STREAM_LEADER_WAIT_SECONDS = 10.0
"""How long ensure_stream waits for a new replicated stream to elect its leader."""

_STREAM_NAME_IN_USE = 10058


def bus_servers(settings: Settings) -> list[str]:
    """The NATS server URLs of `settings.bus_url` (a comma-separated list)."""
    if not settings.bus_url:
        raise ValueError("settings.bus_url is not set")
    return [server.strip() for server in settings.bus_url.split(",") if server.strip()]


def redact_server_url(url: str) -> str:
    """The server URL without the user, password or token it may carry, for logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


async def connect_bus(settings: Settings, *, name: str | None = None) -> Client:
    """A client connected to the bus's NATS servers that reconnects forever.

    The first connection waits too until a server answers: bound the call with a timeout
    where waiting is not an option.
    """
    servers = bus_servers(settings)
    shown = [redact_server_url(server) for server in servers]
    label = name or f"encore {socket.gethostname()}:{os.getpid()}"

    # The client's default callbacks print exceptions, whose text can hold a server URL
    # with its credentials: log the type and the redacted servers instead.
    async def on_error(exc: Exception) -> None:
        logger.warning("bus_error", error=type(exc).__name__, servers=shown)

    async def on_disconnected() -> None:
        logger.warning("bus_disconnected", servers=shown)

    async def on_reconnected() -> None:
        logger.info("bus_reconnected", servers=shown)

    client = await nats.connect(
        servers=servers,
        name=label,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_SECONDS,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        # Every subject Encore publishes is its own (event types, job kinds, its inboxes):
        # checking each again on every publish cost ingest two regular expressions an event.
        skip_subject_validation=True,
    )
    logger.info("bus_connected", servers=shown, name=label)
    return client


def _explicit_fields(config: Any) -> dict[str, Any]:
    """The fields of a nats-py config dataclass that differ from the class defaults."""
    explicit: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        if value != default:
            explicit[field.name] = value
    return explicit


def _differences(wanted: Any, current: Any) -> list[str]:
    return sorted(
        name
        for name, value in _explicit_fields(wanted).items()
        if getattr(current, name, None) != value
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it where it differs from `config` (fields set in it).

    Fields left at their defaults in `config` are the server's business (it fills them in);
    a field the server cannot change (retention, storage) makes this raise the server's error.
    """
    assert config.name is not None, "a stream needs a name"
    for _ in range(3):
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except APIError as exc:
                if exc.err_code == _STREAM_NAME_IN_USE:
                    continue  # another process created it a moment ago: compare with theirs
                raise
            logger.info("bus_stream_created", stream=config.name)
            await _wait_for_stream_leader(js, config.name)
            return
        changed = _differences(config, info.config)
        if changed:
            await js.update_stream(config)
            logger.info("bus_stream_updated", stream=config.name, fields=changed)
        return
    raise RuntimeError(f"stream {config.name} kept changing while it was being set up")


async def _wait_for_stream_leader(js: JetStreamContext, name: str) -> None:
    # A replicated stream takes a moment to elect its leader after creation; until then a
    # publish finds no responder. Waiting here spares every first publisher a retry.
    deadline = asyncio.get_running_loop().time() + STREAM_LEADER_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        info = await js.stream_info(name)
        if info.cluster is None or info.cluster.leader:
            return
        await asyncio.sleep(0.05)
    logger.warning("bus_stream_leaderless", stream=name, waited=STREAM_LEADER_WAIT_SECONDS)


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update it where it differs from `config`."""
    name = config.durable_name or config.name
    assert name is not None, "a durable consumer needs a name"
    try:
        info = await js.consumer_info(stream, name)
    except NotFoundError:
        pass
    else:
        if not _differences(config, info.config):
            return
    # Create or update: the server applies changes to the editable fields of an existing one.
    await js.add_consumer(stream, config)

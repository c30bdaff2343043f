"""The event log on NATS JetStream: the `EVENTS` stream and durable pull consumers.

Appending publishes every event with `Nats-Msg-Id` = "<user id>.<event id>", so the stream
drops a retry within its duplicate window, and answers once JetStream has acknowledged every
event (with R3, once a majority of the nodes stored it). Consumers are durable, pull, with
`AckAll`: a batch is acknowledged by acknowledging its last message, after its handler's
database transaction committed. `max_ack_pending` = the batch size keeps one batch in flight
per consumer, so a batch that is not acknowledged (a crash) comes back from its first
message — the property the lake writer's file names rely on. Handlers are idempotent by
event id beyond the duplicate window (`counted_events`), so a redelivery still counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from encore.bus.event_log import (
    AppendResult,
    EventConsumer,
    EventToAppend,
    logged_event_from_body,
)
from encore.bus.nats_connection import connect_bus, ensure_consumer, ensure_stream
from encore.db import utcnow
from encore.problems import Problem

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from encore.config import Settings

logger = structlog.get_logger("encore.bus.events")

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = "events.>"
DUPLICATE_WINDOW = timedelta(minutes=10)
"""Retries of a batch within this window are dropped by the stream itself."""

PUBLISH_TIMEOUT_SECONDS = 10.0
"""How long an append waits for JetStream's acknowledgements before answering 503."""

FETCH_WAIT_SECONDS = 0.5
"""How long one fetch waits for messages when the stream has none for the consumer."""

CONNECT_TIMEOUT_SECONDS = 30.0

REDELIVERY_DELAY_CAP_SECONDS = 60.0
"""The longest a failed batch waits before it is delivered again."""


class EventLogUnavailable(Problem):
    """The event log did not acknowledge the batch in time: nothing is promised, retry."""

    status = 503
    title = "Event log unavailable"
    slug = "event-log-unavailable"


def events_stream_config(settings: Settings) -> StreamConfig:
    """The EVENTS stream as this deployment wants it."""
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=[EVENTS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.bus_stream_replicas,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        max_age=timedelta(days=settings.events_retention_days).total_seconds(),
        discard=DiscardPolicy.OLD,
    )


class _ConsumerState:
    """A consumer's subscription and the messages fetched but not yet applied (lingering)."""

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self.subscription = subscription
        self.pending: list[Msg] = []


class JetStreamEventLog:
    """The event log as a JetStream stream."""

    def __init__(
        self,
        *,
        client: Client,
        js: JetStreamContext,
        session_factory: async_sessionmaker[AsyncSession],
        source: str,
    ) -> None:
        self._client = client
        self._js = js
        self._session_factory = session_factory
        self._source = source
        self._consumers: dict[str, _ConsumerState] = {}
        self._consumer_setup = asyncio.Lock()

    @property
    def source(self) -> str:
        """`js` and the stream's creation time: a recreated stream restarts its sequences, and
        lake files named after them must not replace the files of the earlier stream."""
        return self._source

    @classmethod
    async def connect(
        cls, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
    ) -> JetStreamEventLog:
        """Connect, and create or update the EVENTS stream."""
        client = await asyncio.wait_for(
            connect_bus(settings, name=None), timeout=CONNECT_TIMEOUT_SECONDS
        )
        try:
            js = client.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
            await ensure_stream(js, events_stream_config(settings))
            info = await js.stream_info(EVENTS_STREAM)
        except BaseException:
            await client.close()
            raise
        created = info.created or utcnow()
        return cls(
            client=client,
            js=js,
            session_factory=session_factory,
            source=f"js{int(created.timestamp())}",
        )

    async def append(self, events: Sequence[EventToAppend]) -> AppendResult:
        """Publish the events and wait until JetStream has acknowledged every one."""
        if not events:
            return AppendResult(0, 0)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                acknowledgements = []
                for event in events:
                    acknowledgements.append(
                        await self._js.publish_async(
                            f"events.{event.type}",
                            event.body,
                            wait_stall=PUBLISH_TIMEOUT_SECONDS,
                            headers={"Nats-Msg-Id": f"{event.user_id}.{event.event_id}"},
                        )
                    )
                acks = await asyncio.gather(*acknowledgements)
        except (TimeoutError, NatsError) as error:
            # No acknowledgement (a node lost, no quorum yet, a reconnect): nothing is
            # promised, and the client's retry is deduplicated by the message ids.
            logger.warning("event_append_unacknowledged", events=len(events), error=repr(error))
            raise EventLogUnavailable(
                "the event log did not confirm the batch in time; send it again",
                headers={"Retry-After": "1"},
            ) from None
        duplicates = sum(1 for ack in acks if ack.duplicate)
        return AppendResult(len(events) - duplicates, duplicates)

    async def _consumer(self, consumer: EventConsumer) -> _ConsumerState:
        state = self._consumers.get(consumer.name)
        if state is not None:
            return state
        async with self._consumer_setup:
            state = self._consumers.get(consumer.name)
            if state is None:
                config = ConsumerConfig(
                    durable_name=consumer.name,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.ALL,
                    # Long enough to fill a lingering batch and apply it.
                    ack_wait=max(30.0, consumer.linger_seconds * 2 + 60.0),
                    max_ack_pending=consumer.batch_size,
                    filter_subject=EVENTS_SUBJECTS,
                )
                await ensure_consumer(self._js, EVENTS_STREAM, config)
                subscription = await self._js.pull_subscribe_bind(
                    durable=consumer.name, stream=EVENTS_STREAM
                )
                state = _ConsumerState(subscription)
                self._consumers[consumer.name] = state
        return state

    async def consume_once(self, consumer: EventConsumer) -> int:
        """Fetch up to a batch, apply it in one transaction, then acknowledge it."""
        state = await self._consumer(consumer)
        wanted = consumer.batch_size - len(state.pending)
        if wanted > 0:
            # An empty stream answers a fetch with a timeout: nothing to apply this time.
            with contextlib.suppress(NatsTimeoutError, TimeoutError):
                state.pending += await state.subscription.fetch(wanted, timeout=FETCH_WAIT_SECONDS)
        if not state.pending:
            return 0
        batch = [
            logged_event_from_body(message.metadata.sequence.stream, message.data)
            for message in state.pending
        ]
        if (
            consumer.linger_seconds > 0
            and len(batch) < consumer.batch_size
            and (utcnow() - batch[0].received_at).total_seconds() < consumer.linger_seconds
        ):
            return 0
        messages, state.pending = state.pending, []
        try:
            async with self._session_factory() as session, session.begin():
                await consumer.handler(batch, session)
        except BaseException:
            # Hand the batch back now rather than after ack_wait, first message first, after
            # a back-off that grows with each delivery (a failing batch must not spin).
            deliveries = messages[0].metadata.num_delivered or 1
            delay = min(REDELIVERY_DELAY_CAP_SECONDS, 0.5 * 2 ** (deliveries - 1))
            for message in messages:
                await message.nak(delay=delay)
            raise
        await messages[-1].ack_sync(timeout=PUBLISH_TIMEOUT_SECONDS)
        return len(batch)

    async def ping(self) -> None:
        """A round trip to the NATS server."""
        if not self._client.is_connected:
            raise ConnectionError("not connected to NATS")
        await self._client.flush(timeout=2)

    async def close(self) -> None:
        """Close the connection (unacknowledged messages return to the stream)."""
        for state in self._consumers.values():
            state.pending.clear()
        await self._client.close()

"""The event log on NATS JetStream: the `EVENTS` stream and durable pull consumers.

Appending publishes every event with `Nats-Msg-Id` = "<user id>.<event id>", so the stream
drops a retry within its duplicate window, and answers once JetStream has acknowledged every
event (with R3, once a majority of the nodes stored it). A batch's messages go out together
and their acknowledgements come back on one reply subscription (`BatchPublisher`), as nats.go's
PublishAsync does, rather than through a future per message. Consumers are durable, pull, with
`AckAll`: a batch is acknowledged by acknowledging its last message, after its handler's
database transaction committed. `max_ack_pending` = the batch size keeps one batch in flight
per consumer, so a batch that is not acknowledged (a crash) comes back from its first
message — the property the lake writer's file names rely on. Handlers are idempotent by
event id beyond the duplicate window (`counted_events`), so a redelivery still counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import orjson
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
    EventLogUnavailable,
    EventToAppend,
    logged_event_from_body,
)
from encore.bus.nats_connection import connect_bus, ensure_consumer, ensure_stream
from encore.db import utcnow

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
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


class PublishRefused(NatsError):
    """JetStream answered a message of the batch with an error, or no stream took it."""


class _PendingBatch:
    """The acknowledgements of one published batch, as they arrive."""

    __slots__ = ("answered", "done", "duplicates", "expected")

    def __init__(self, expected: int) -> None:
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.expected = expected
        self.answered: set[int] = set()
        self.duplicates = 0

    def receive(self, index: int, message: Msg) -> None:
        """Take the answer to the batch's `index`-th message."""
        if self.done.done() or index in self.answered or not 0 <= index < self.expected:
            return
        if message.headers and message.headers.get("Status") == _NO_RESPONDERS:
            self.done.set_exception(PublishRefused("no stream takes these subjects"))
            return
        try:
            answer = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or "error" in answer or "seq" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else None
            self.done.set_exception(PublishRefused(f"JetStream refused a message: {error!r}"))
            return
        self.answered.add(index)
        if answer.get("duplicate"):
            self.duplicates += 1
        if len(self.answered) == self.expected:
            self.done.set_result(self.duplicates)


_NO_RESPONDERS = "503"


class BatchPublisher:
    """Publishes a batch of messages to JetStream and waits for every acknowledgement.

    The messages carry reply subjects `<inbox>.<batch>.<index>` under one wildcard
    subscription, so a batch costs one pending entry instead of a future, a semaphore and a
    callback per message (nats-py's `publish_async`); an acknowledgement of a batch nobody
    waits for any more (timed out) is dropped.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._inbox = client.new_inbox()
        self._batch_numbers = itertools.count()
        self._pending: dict[str, _PendingBatch] = {}
        self._subscription: Subscription | None = None
        self._subscribing = asyncio.Lock()

    async def _subscribe(self) -> None:
        # Reply subjects are `<inbox>.<batch>.<index>`: the batch and the index are the tail.
        offset = len(self._inbox) + 1

        async def on_answer(message: Msg) -> None:
            batch_key, _, index = message.subject[offset:].partition(".")
            pending = self._pending.get(batch_key)
            if pending is not None and index.isdigit():
                pending.receive(int(index), message)

        self._subscription = await self._client.subscribe(f"{self._inbox}.>", cb=on_answer)

    async def publish(self, messages: Sequence[tuple[str, bytes, str]]) -> int:
        """Publish (subject, payload, message id) triples; how many the stream already had.

        Raises the client's errors, or PublishRefused, when any message is not stored.
        """
        if self._subscription is None:
            async with self._subscribing:  # the first publishes may come together
                if self._subscription is None:
                    await self._subscribe()
        batch_key = str(next(self._batch_numbers))
        pending = _PendingBatch(len(messages))
        self._pending[batch_key] = pending
        reply_prefix = f"{self._inbox}.{batch_key}."
        publish = self._client.publish
        try:
            for index, (subject, payload, message_id) in enumerate(messages):
                await publish(
                    subject,
                    payload,
                    reply=f"{reply_prefix}{index}",
                    headers={"Nats-Msg-Id": message_id},
                )
            return await pending.done
        finally:
            del self._pending[batch_key]
            if pending.done.done() and not pending.done.cancelled():
                # A refusal that arrived while publishing failed otherwise: seen, not lost.
                pending.done.exception()


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
        self._publisher = BatchPublisher(client)

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
        messages = []
        # An append's events share their account (one request): its text is made once.
        user_id: uuid.UUID | None = None
        user_text = ""
        for event in events:
            if event.user_id is not user_id:
                user_id, user_text = event.user_id, str(event.user_id)
            messages.append((f"events.{event.type}", event.body, f"{user_text}.{event.event_id}"))
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                duplicates = await self._publisher.publish(messages)
        except (TimeoutError, NatsError) as error:
            # No acknowledgement (a node lost, no quorum yet, a reconnect): nothing is
            # promised, and the client's retry is deduplicated by the message ids.
            logger.warning("event_append_unacknowledged", events=len(events), error=repr(error))
            raise EventLogUnavailable(
                "the event log did not confirm the batch in time; send it again",
                headers={"Retry-After": "1"},
            ) from None
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

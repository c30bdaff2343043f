"""The bus's NATS plumbing shared by the job queue and the event log: connecting without
leaking credentials, and streams and consumers kept as configured."""

from __future__ import annotations

from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from encore.bus.nats_connection import (
    bus_servers,
    connect_bus,
    ensure_consumer,
    ensure_stream,
    redact_server_url,
)
from encore.config import load_settings
from tests.fixtures.nats import NatsServer


def test_server_urls_are_split_and_credentials_kept_out_of_logs() -> None:
    settings = load_settings(bus_url="nats://a:4222, nats://user:secret@b:4222")
    assert bus_servers(settings) == ["nats://a:4222", "nats://user:secret@b:4222"]
    assert redact_server_url("nats://user:secret@b:4222") == "nats://***@b:4222"
    assert redact_server_url("tls://token@c:4222") == "tls://***@c:4222"
    assert redact_server_url("nats://a:4222") == "nats://a:4222"


async def test_streams_and_consumers_are_created_then_updated_only_where_they_differ(
    nats_server: NatsServer,
) -> None:
    client = await connect_bus(load_settings(bus_url=nats_server.url), name="encore test")
    try:
        js = client.jetstream()
        config = StreamConfig(
            name="PLUMBING", subjects=["plumbing.>"], retention=RetentionPolicy.WORK_QUEUE
        )
        await ensure_stream(js, config)
        await ensure_stream(js, config)
        created = await js.stream_info("PLUMBING")
        assert created.config.retention == RetentionPolicy.WORK_QUEUE

        config.max_age = 3600.0
        await ensure_stream(js, config)
        assert (await js.stream_info("PLUMBING")).config.max_age == 3600.0

        consumer = ConsumerConfig(
            durable_name="workers",
            name="workers",
            filter_subject="plumbing.*",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
        )
        await ensure_consumer(js, "PLUMBING", consumer)
        consumer.ack_wait = 60.0
        await ensure_consumer(js, "PLUMBING", consumer)
        assert (await js.consumer_info("PLUMBING", "workers")).config.ack_wait == 60.0
    finally:
        await client.close()

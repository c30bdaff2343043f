"""The NATS test fixtures themselves: a server and a cluster that survive kills and restarts."""

from __future__ import annotations

import asyncio

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from tests.fixtures.nats import NatsCluster, NatsServer


async def publish_eventually(js: JetStreamContext, subject: str, data: bytes) -> None:
    """Publish once the stream has a leader (just created, or its leader was killed)."""
    async with asyncio.timeout(20):
        while True:
            try:
                await js.publish(subject, data, timeout=2)
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.1)
            except nats.js.errors.NoStreamResponseError:
                await asyncio.sleep(0.1)


async def test_a_server_keeps_its_streams_across_a_kill_and_restart(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="FIXTURE", subjects=["fixture.>"]))
        await js.publish("fixture.one", b"kept")
    finally:
        await client.close()

    nats_server.kill()
    nats_server.restart()

    client = await nats.connect(nats_server.url)
    try:
        info = await client.jetstream().stream_info("FIXTURE")
        assert info.state.messages == 1
    finally:
        await client.close()


async def test_a_cluster_keeps_a_replicated_stream_writable_with_one_node_down(
    nats_cluster: NatsCluster,
) -> None:
    assert nats_cluster.url == ",".join(nats_cluster.urls)
    assert len(nats_cluster.urls) == 3
    client = await nats.connect(
        nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        js = client.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="FIXTURE", subjects=["fixture.>"], num_replicas=3))
        await publish_eventually(js, "fixture.one", b"before")

        # A follower, not the stream leader: losing the leader costs a several-second election
        # (raft timeouts), which this test of the fixture need not wait for.
        leader = (await js.stream_info("FIXTURE")).cluster
        assert leader is not None
        follower = next(index for index in range(3) if f"encore-n{index}" != leader.leader)
        nats_cluster.kill(follower)
        # A quorum of two is left: writes go on.
        await publish_eventually(js, "fixture.two", b"during")

        nats_cluster.restart(follower)
        info = await js.stream_info("FIXTURE")
        assert info.state.messages == 2
        assert info.config.num_replicas == 3
    finally:
        await client.close()

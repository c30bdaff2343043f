"""An upload becomes a ready track with the job queue on NATS JetStream (ENCORE_BUS_URL set)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from fastapi import FastAPI

from encore.auth.models import Role
from encore.bus import JobState
from encore.bus.jetstream_jobs import JOBS_STREAM, JetStreamJobQueue
from encore.catalog import service as catalog_service
from encore.config import Settings
from encore.media.synthesis import Tone, synthesize_audio
from tests.fixtures.jobs import run_queued_jobs
from tests.fixtures.nats import NatsServer
from tests.fixtures.oauth import asgi_client, create_user, resources_of, user_token


@pytest.fixture
def settings(settings: Settings, nats_server: NatsServer) -> Settings:
    """The usual test settings, with the bus on this test's nats-server."""
    return settings.model_copy(update={"bus_url": nats_server.url})


async def test_an_upload_is_processed_through_the_jetstream_job_queue(
    app: FastAPI, nats_server: NatsServer, tmp_path: Path
) -> None:
    assert isinstance(app.state.job_queue, JetStreamJobQueue)
    user = await create_user(app, "nova", roles=(Role.artist,))
    async with resources_of(app).session_factory() as db_session:
        artist = await catalog_service.get_or_create_artist(
            db_session=db_session, name="Nova Lights"
        )
        await catalog_service.assign_artist_owner(
            db_session=db_session, artist_names=["Nova Lights"], user_id=user.id
        )
        await db_session.commit()
    headers = {"Authorization": f"Bearer {await user_token(app, 'nova', 'upload user-read')}"}
    source = synthesize_audio(tmp_path / "night drive.flac", Tone(seconds=7.0))

    client = await nats.connect(nats_server.url)
    try:
        jetstream = client.jetstream()
        async with asgi_client(app) as http:
            with source.open("rb") as file:
                accepted = await http.post(
                    "/v1/uploads",
                    headers=headers,
                    data={
                        "title": "Night Drive",
                        "artist_id": str(artist.id),
                        "album_title": "Roads",
                    },
                    files={"file": (source.name, file, "audio/flac")},
                )
            assert accepted.status_code == 202, accepted.text
            upload = accepted.json()

            # The app's queue publishes the job once the upload's transaction has committed.
            async with asyncio.timeout(10):
                while (await jetstream.stream_info(JOBS_STREAM)).state.messages != 1:
                    await asyncio.sleep(0.02)

            counts = await run_queued_jobs(app)

            assert counts[JobState.done] == 1 and counts[JobState.dead] == 0
            assert (await jetstream.stream_info(JOBS_STREAM)).state.messages == 0
            done = await http.get(f"/v1/uploads/{upload['id']}", headers=headers)
            assert done.json()["status"] == "ready", done.text
            track = await http.get(f"/v1/tracks/{upload['track_id']}", headers=headers)
            assert track.json()["status"] == "ready"
    finally:
        await client.close()

"""With an S3 store, media requests can be answered by a 302 to a presigned store URL."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from pydantic import SecretStr

from encore.app import create_app
from encore.config import Settings
from tests.fixtures.oauth import asgi_client, resources_of
from tests.fixtures.seaweedfs import SeaweedS3

pytestmark = pytest.mark.seaweedfs


async def test_valid_media_requests_redirect_to_a_presigned_store_url(
    settings: Settings, seaweedfs_s3: SeaweedS3
) -> None:
    s3_settings = settings.model_copy(
        update={
            "storage_url": f"s3://{seaweedfs_s3.bucket}/redirect-{uuid.uuid4().hex[:8]}",
            "s3_endpoint": seaweedfs_s3.endpoint,
            "s3_region": seaweedfs_s3.region,
            "s3_access_key_id": seaweedfs_s3.access_key_id,
            "s3_secret_access_key": SecretStr(seaweedfs_s3.secret_access_key),
            "s3_allow_http": True,
            "media_redirect_to_store": True,
        }
    )
    application = create_app(s3_settings)
    segment = b"fMP4 segment bytes " * 500
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        resources = resources_of(application)
        prefix = f"renditions/{uuid.uuid4()}/{'ab' * 32}"
        await resources.store.put(f"{prefix}/aac_128/segment_00000.m4s", segment)
        signer = resources.media_signer
        expires = int(time.time()) + 600
        url = signer.url(
            prefix=prefix, user_id=uuid.uuid4(), expires=expires, file="aac_128/segment_00000.m4s"
        )
        answer = await http.get(url)
        token = url.split("/")[3]
        forged = await http.get(url.replace(token, token[:-4] + "AAAA"))

    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(seaweedfs_s3.endpoint)
    assert answer.headers["cache-control"].startswith("private")
    async with httpx.AsyncClient() as direct:
        fetched = await direct.get(location)
    assert fetched.status_code == 200
    assert fetched.content == segment
    assert forged.status_code == 403

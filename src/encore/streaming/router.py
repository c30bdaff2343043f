"""Playback HTTP API: `GET /v1/tracks/{id}/playback`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from encore.auth.dependencies import require_scopes
from encore.auth.scopes import STREAMING
from encore.auth.tokens import Principal
from encore.dependencies import ResourcesDep, SessionDep
from encore.streaming import service
from encore.streaming.schemas import HlsLink, NormalizationRead, PlaybackRead, ProgressiveRead

router = APIRouter(prefix="/v1", tags=["streaming"])

Listener = Annotated[Principal, require_scopes(STREAMING)]


@router.get(
    "/tracks/{track_id}/playback",
    response_model=PlaybackRead,
    summary="Signed URLs to play a track",
    responses={409: {"description": "The track is not ready (still processing, or failed)."}},
)
async def playback(
    track_id: uuid.UUID,
    principal: Listener,
    db_session: SessionDep,
    resources: ResourcesDep,
    response: Response,
    quality: Annotated[
        Literal["low", "normal", "high", "auto"],
        Query(description="Which progressive rendition comes first; HLS always has all."),
    ] = "auto",
    save_data: Annotated[str | None, Header(alias="Save-Data")] = None,
) -> PlaybackRead:
    """HLS (whole ladder), progressive files with the default first, loudness, waveform."""
    assert principal.user_id is not None  # require_scopes(user=True)
    answer = await service.playback(
        db_session=db_session,
        cache=resources.catalog_documents,
        signer=resources.media_signer,
        settings=resources.settings,
        track_id=track_id,
        user_id=principal.user_id,
        quality=quality,
        save_data=(save_data or "").strip().lower() == "on",
    )
    # The URLs are personal and expire: no shared cache may keep this answer.
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Vary"] = "Save-Data"
    return PlaybackRead(
        track_id=answer.track_id,
        duration_ms=answer.duration_ms,
        hls=HlsLink(url=answer.hls_url),
        progressive=[
            ProgressiveRead(codec=link.codec, bitrate=link.bitrate, url=link.url)
            for link in answer.progressive
        ],
        normalization=NormalizationRead(
            track_gain_db=answer.track_gain_db, true_peak_dbtp=answer.true_peak_dbtp
        ),
        waveform_url=answer.waveform_url,
        expires_at=answer.expires_at,
    )

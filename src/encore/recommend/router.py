"""Recommendations HTTP API: for you, similar tracks, related artists and radio."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from encore.auth.dependencies import Authenticated, require_scopes
from encore.auth.scopes import STREAMING, USER_READ
from encore.auth.tokens import Principal
from encore.dependencies import ResourcesDep, SessionDep
from encore.recommend import service
from encore.recommend.model_store import RecommendModel
from encore.recommend.schemas import RadioBatch, RecommendedTracks, RelatedArtists

router = APIRouter(prefix="/v1", tags=["recommendations"])

Listener = Annotated[Principal, require_scopes(USER_READ)]
RadioListener = Annotated[Principal, require_scopes(STREAMING)]
Limit = Annotated[int, Query(ge=1, le=100)]


def _model(resources: ResourcesDep) -> RecommendModel | None:
    # Read once per request: a hot swap replaces the holder's model, never this one.
    return resources.recommend_models.current


def _user_id(principal: Principal) -> uuid.UUID:
    assert principal.user_id is not None  # require_scopes refused tokens without a user
    return principal.user_id


@router.get("/me/recommendations", response_model=RecommendedTracks, summary="Tracks for you")
async def get_recommendations(
    principal: Listener, db_session: SessionDep, resources: ResourcesDep, limit: Limit = 20
) -> RecommendedTracks:
    """Tracks for the caller: not played lately, at most 2 per artist, ready to play."""
    return await service.recommend_for_user(
        db_session=db_session,
        model=_model(resources),
        settings=resources.settings,
        user_id=_user_id(principal),
        limit=limit,
    )


@router.get("/tracks/{track_id}/similar", response_model=RecommendedTracks, summary="Similar")
async def get_similar_tracks(
    track_id: uuid.UUID,
    _principal: Authenticated,
    db_session: SessionDep,
    resources: ResourcesDep,
    limit: Limit = 20,
) -> RecommendedTracks:
    """Ready tracks like this one."""
    return await service.similar_tracks(
        db_session=db_session, model=_model(resources), track_id=track_id, limit=limit
    )


@router.get("/artists/{artist_id}/related", response_model=RelatedArtists, summary="Related")
async def get_related_artists(
    artist_id: uuid.UUID,
    _principal: Authenticated,
    db_session: SessionDep,
    resources: ResourcesDep,
    limit: Limit = 20,
) -> RelatedArtists:
    """Artists like this one."""
    return await service.related_artists(
        db_session=db_session, model=_model(resources), artist_id=artist_id, limit=limit
    )


@router.get("/radio", response_model=RadioBatch, summary="Radio: the next tracks of a station")
async def get_radio(
    principal: RadioListener,
    db_session: SessionDep,
    resources: ResourcesDep,
    seed_track: uuid.UUID | None = None,
    seed_artist: uuid.UUID | None = None,
    seed_genre: uuid.UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Limit = 20,
) -> RadioBatch:
    """A new station from one seed, or the next batch of the cursor's station."""
    return await service.radio_batch(
        db_session=db_session,
        model=_model(resources),
        user_id=_user_id(principal),
        limit=limit,
        cursor=cursor,
        seed_track=seed_track,
        seed_artist=seed_artist,
        seed_genre=seed_genre,
    )

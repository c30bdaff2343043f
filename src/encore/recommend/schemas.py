"""Recommendation responses: track lists, related artists and radio batches."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from encore.catalog.schemas import ArtistRead, TrackRead

RecommendationSource = Literal["model", "popularity"]


class RecommendedTracks(BaseModel):
    """Tracks picked for the caller, and what picked them."""

    items: list[TrackRead]
    source: RecommendationSource = Field(
        description="`model` when the trained model ranked them, `popularity` before it exists."
    )
    model_version: str | None = None


class RelatedArtists(BaseModel):
    """Artists like the one asked about."""

    items: list[ArtistRead]
    source: RecommendationSource
    model_version: str | None = None


class RadioBatch(BaseModel):
    """The next tracks of a radio station; send `next_cursor` back for the batch after."""

    station_id: uuid.UUID = Field(
        description="Report plays, skips and likes with context {type: radio, id: station_id}."
    )
    items: list[TrackRead]
    next_cursor: str
    source: RecommendationSource

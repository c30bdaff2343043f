"""Indexes the insights need on the events domain's rollup tables (no tables of their own)."""

from __future__ import annotations

from sqlalchemy import Index

from encore.events.models import DailyArtistListener, DailyTrackListener

# Unique listeners over a window are counted from these indexes alone (index-only scans).
ARTIST_LISTENERS_INDEX = Index(
    "ix_daily_artist_listeners_artist_day_user",
    DailyArtistListener.artist_id,
    DailyArtistListener.day,
    DailyArtistListener.user_id,
)
TRACK_LISTENERS_INDEX = Index(
    "ix_daily_track_listeners_track_day_user",
    DailyTrackListener.track_id,
    DailyTrackListener.day,
    DailyTrackListener.user_id,
)

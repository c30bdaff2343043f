"""Indexes the insights need on the events domain's rollup tables (no tables of their own)."""

from __future__ import annotations

from sqlalchemy import Index

from encore.events.models import DailyArtistListener, DailyTrackListener

# Unique listeners over a window are counted from these indexes alone, read in listener
# order: no sort for the DISTINCT (the day filter is checked within the index).
ARTIST_LISTENERS_INDEX = Index(
    "ix_daily_artist_listeners_artist_user_day",
    DailyArtistListener.artist_id,
    DailyArtistListener.user_id,
    DailyArtistListener.day,
)
TRACK_LISTENERS_INDEX = Index(
    "ix_daily_track_listeners_track_user_day",
    DailyTrackListener.track_id,
    DailyTrackListener.user_id,
    DailyTrackListener.day,
)

"""Library tables: playlists and their items, likes and follows."""

from __future__ import annotations

"""Events tables: the event log, consumer offsets, listening history and daily rollups."""

from __future__ import annotations

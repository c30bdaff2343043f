"""Listening events: ingest, the event log consumers, history, counters, rollups and the lake."""

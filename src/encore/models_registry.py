"""Imports every domain's models so that Base.metadata knows all tables."""

from __future__ import annotations

import importlib

DOMAINS_WITH_MODELS = ("auth", "catalog")


def import_all_models() -> None:
    """Import `encore.<domain>.models` for each domain that owns tables."""
    for domain in DOMAINS_WITH_MODELS:
        importlib.import_module(f"encore.{domain}.models")

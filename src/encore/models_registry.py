"""Imports every domain's models so that Base.metadata knows all tables."""

from __future__ import annotations

import importlib

DOMAINS_WITH_MODELS = (
    "auth",
    "catalog",
    "media",
    "library",
    "search",
    "events",
    "recommend",
)
# Tables of the platform itself (not of a domain), by module name.
PLATFORM_MODEL_MODULES = ("encore.jobs_models", "encore.event_log_models")


def import_all_models() -> None:
    """Import `encore.<domain>.models` for each domain that owns tables, and platform tables."""
    for domain in DOMAINS_WITH_MODELS:
        importlib.import_module(f"encore.{domain}.models")
    for module in PLATFORM_MODEL_MODULES:
        importlib.import_module(module)

"""Alembic environment: runs on the connection Encore hands over, or on ENCORE_DATABASE_URL."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from encore import models_registry
from encore.config import load_settings
from encore.db import Base, UTCDateTime, create_engine

models_registry.import_all_models()
target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import application types: UTCDateTime is a plain timestamptz column.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _compare_type(
    context: Any, inspected: Any, metadata: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    if isinstance(metadata_type, UTCDateTime):
        return not isinstance(inspected_type, sa.DateTime)
    return None


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # Search's FTS5 tables (and their shadow tables) and pg_trgm indexes live only in the
    # migration: SQLAlchemy has no way to declare them, so autogenerate must not drop them.
    if type_ == "table" and name is not None and name.startswith("search_fts_"):
        return False
    return not (
        type_ == "index" and name is not None and name.startswith("ix_search_documents_doc_")
    )


def _run(connection: Connection) -> None:
    context.configure(
        include_object=_include_object,
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=_compare_type,
        render_item=_render_item,
    )
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch operations rebuild a table and rename the copy into place; SQLite's modern
        # ALTER TABLE RENAME re-checks every trigger and fails while the search triggers
        # (which join several catalog tables) name the table in between. Legacy mode skips
        # that check. A rebuilt table loses its own triggers: see the library migration.
        connection.exec_driver_sql("PRAGMA legacy_alter_table=ON")
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA legacy_alter_table=OFF")


async def _run_standalone() -> None:
    engine = create_engine(load_settings())
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run `encore db upgrade`")

handed_over = context.config.attributes.get("connection")
if handed_over is not None:
    _run(handed_over)
else:
    asyncio.run(_run_standalone())

"""Migrations apply, revert and re-apply cleanly on both databases."""

from __future__ import annotations

from sqlalchemy import inspect

from encore.config import Settings
from encore.db import create_engine, database_revision, downgrade_database, upgrade_database


async def test_migrations_round_trip(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        current, head = await database_revision(engine)
        assert current == head is not None

        await downgrade_database(engine, "base")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}

        await upgrade_database(engine)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"artists", "albums", "tracks", "genres", "track_artists"} <= tables
        assert await database_revision(engine) == (head, head)
    finally:
        await engine.dispose()

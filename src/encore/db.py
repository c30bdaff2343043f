"""Database: async engine, sessions, declarative base with UUIDv7 keys, and migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uuid_utils
from sqlalchemy import DateTime, Dialect, MetaData, delete, event, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Mapped, mapped_column
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from encore.config import Settings

# Stable constraint names, so Alembic migrations name things the same on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> uuid.UUID:
    """A new time-ordered UUIDv7 primary key."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored in UTC on every backend.

    SQLite has no timezone type and hands back naive values; this attaches UTC on the way
    out and refuses naive values on the way in, so clients always see an explicit offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalize an aware datetime to UTC before it is stored."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware datetime in UTC")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them without an offset, always in UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to values that come back naive (SQLite)."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012


class UUIDPrimaryKey:
    """Mixin: a UUIDv7 primary key named `id`."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class Timestamped:
    """Mixin: `created_at` set on insert."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def apply_sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Set Encore's pragmas on a new SQLite connection (the engine's, or one of its own)."""
    # WAL lets readers run beside the single writer; foreign keys are off by default in SQLite;
    # the busy timeout makes a second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    """An async engine for the configured database (SQLite WAL or PostgreSQL via asyncpg)."""
    url = make_url(settings.database_url)
    if settings.is_sqlite:
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            echo=settings.database_echo,
            poolclass=NullPool if database in (None, "", ":memory:") else None,
            connect_args={"timeout": 10},
        )
        event.listen(engine.sync_engine, "connect", apply_sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory whose objects stay usable after commit (no lazy reloads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def session_scope(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """Yield a session that commits on success and rolls back on any error."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def migrations_path() -> Path:
    """Folder holding the Alembic scripts (the repo's `migrations/`, or the wheel's copy)."""
    packaged = Path(__file__).parent / "migrations"
    if (packaged / "env.py").exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (all pending ones by default)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


async def downgrade_database(engine: AsyncEngine, revision: str) -> None:
    """Revert Alembic migrations down to `revision` (`base` removes every table)."""
    async with engine.begin() as connection:
        await connection.run_sync(_downgrade, revision)


async def database_revision(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """The (applied, newest available) migration revisions."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current)
    return current, await asyncio.to_thread(_head)


async def ping_database(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def dialect_insert(db_session: AsyncSession) -> Any:
    """The session's dialect's `insert` (PostgreSQL or SQLite), for ON CONFLICT clauses."""
    if db_session.get_bind().dialect.name == "postgresql":
        return postgresql_insert
    return sqlite_insert


async def delete_recorded_before(
    db_session: AsyncSession,
    *,
    keys: tuple[InstrumentedAttribute[Any], ...],
    recorded_at: InstrumentedAttribute[datetime],
    older_than: datetime,
    chunk: int = 10_000,
) -> int:
    """Delete the rows of the model these key columns belong to whose `recorded_at` is before
    `older_than`, `chunk` rows per committed transaction (no long lock on a big table); the
    number deleted."""
    model = keys[0].class_
    total = 0
    while True:
        doomed = select(*keys).where(recorded_at < older_than).limit(chunk).subquery()
        statement = (
            delete(model)
            .where(tuple_(*keys).in_(select(*doomed.c)))
            .execution_options(synchronize_session=False)
        )
        removed = int(getattr(await db_session.execute(statement), "rowcount", 0) or 0)
        await db_session.commit()
        total += removed
        if removed < chunk:
            return total

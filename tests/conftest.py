"""Shared fixtures: every database test runs on SQLite and on PostgreSQL, each isolated."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from encore.app import create_app
from encore.config import Settings, load_settings
from encore.db import create_engine, create_session_factory
from encore.storage import BlobStore, open_blob_store
from tests.fixtures.oauth import asgi_client, service_token

pytest_plugins = ["tests.fixtures.nats", "tests.fixtures.postgres", "tests.fixtures.seaweedfs"]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a migrated database that belongs to this test alone (SQLite, then PostgreSQL)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "encore.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of an Encore that uses this test's database and a blob store in tmp_path."""
    return load_settings(
        database_url=database_url,
        storage_url=f"file://{tmp_path / 'media'}",
        log_level="warning",
        import_workers=2,
        secret_key_file=str(tmp_path / "secret.key"),
        # Tests run jobs when they choose to (tests.fixtures.jobs), not in the background.
        workers=0,
    )


@pytest.fixture
async def db_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on this test's database."""
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


@pytest.fixture
def store(settings: Settings) -> BlobStore:
    """The blob store of this test's settings."""
    return open_blob_store(settings)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The Encore app, started (lifespan run) on this test's database and store."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def anonymous_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app through ASGI, without credentials."""
    async with asgi_client(app) as http:
        yield http


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client holding a client-credentials access token (enough for catalog reads)."""
    async with asgi_client(app) as http:
        http.headers["Authorization"] = f"Bearer {await service_token(app, http)}"
        yield http

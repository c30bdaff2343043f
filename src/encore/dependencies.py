"""FastAPI dependencies shared by every router: settings, database session, blob store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from encore.auth.runtime import AuthRuntime
from encore.bus.event_log import EventLog
from encore.config import Settings
from encore.db import session_scope
from encore.document_cache import DocumentCache
from encore.events.service import EventRateLimiter
from encore.recommend.model_store import ModelHolder
from encore.storage import BlobStore
from encore.streaming.signing import MediaSigner


@dataclass
class AppResources:
    """What the app opens at start and closes at shutdown; kept on `app.state.resources`."""

    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    store: BlobStore
    auth: AuthRuntime
    catalog_documents: DocumentCache
    media_signer: MediaSigner
    event_log: EventLog
    event_rate_limiter: EventRateLimiter
    recommend_models: ModelHolder


def _resources(request: Request) -> AppResources:
    resources: AppResources = request.app.state.resources
    return resources


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def`
# dependencies in a worker thread, a round trip that costs more than the whole cached answer.
async def get_resources(request: Request) -> AppResources:
    """The running app's resources."""
    return _resources(request)


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for one request: committed when the handler succeeds, rolled back otherwise."""
    async for session in session_scope(_resources(request).session_factory):
        yield session


async def get_store(request: Request) -> BlobStore:
    """The blob store."""
    return _resources(request).store


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return _resources(request).settings


ResourcesDep = Annotated[AppResources, Depends(get_resources)]
SessionDep = Annotated[AsyncSession, Depends(get_db_session)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

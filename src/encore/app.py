"""The ASGI application: routers, lifespan (database, store, migrations) and middleware."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from encore.analytics.router import router as analytics_router
from encore.auth.dependencies import bearer_token
from encore.auth.oauth_router import router as oauth_router
from encore.auth.router import router as accounts_router
from encore.auth.runtime import AuthRuntime
from encore.auth.secrets import load_master_key
from encore.auth.tokens import InvalidToken
from encore.bus import WorkerPool
from encore.bus.event_log import EventConsumerPool, open_event_log
from encore.catalog import service as catalog_service
from encore.catalog.router import CACHED_DOCUMENT_ROUTES
from encore.catalog.router import router as catalog_router
from encore.config import Settings, get_settings
from encore.db import create_engine, create_session_factory, ping_database, upgrade_database
from encore.dependencies import AppResources
from encore.document_cache import CachedDocumentMiddleware, DocumentCache
from encore.events.router import router as events_router
from encore.events.service import EventRateLimiter
from encore.events.tasks import event_consumers
from encore.library.router import router as library_router
from encore.media.router import router as media_router
from encore.observability import Metrics, RequestContextMiddleware, configure_logging
from encore.problems import install_problem_handlers, problem_response
from encore.recommend.model_store import ModelHolder
from encore.recommend.router import router as recommend_router
from encore.search.router import router as search_router
from encore.storage import BlobStore, open_blob_store
from encore.streaming import service as streaming_service
from encore.streaming.media_files import (
    CachedMediaFiles,
    MediaFiles,
    MediaFilesMiddleware,
)
from encore.streaming.router import router as streaming_router
from encore.streaming.signing import MediaSigner

logger = structlog.get_logger("encore.app")

API_DESCRIPTION = """
Encore is an open-source music streaming backend. Every error is an RFC 9457
`application/problem+json` document. Lists are keyset-paginated: pass a page's
`next_cursor` back as `cursor`.
"""


def _catalog_documents(scope: Scope) -> DocumentCache | None:
    resources: AppResources | None = getattr(scope["app"].state, "resources", None)
    return resources.catalog_documents if resources is not None else None


def _media_context(scope: Scope) -> tuple[MediaSigner, BlobStore] | None:
    resources: AppResources | None = getattr(scope["app"].state, "resources", None)
    return (resources.media_signer, resources.store) if resources is not None else None


class EncoreApp(FastAPI):
    """FastAPI, with the commonest request of all (a media segment) answered first."""

    cached_media: CachedMediaFiles | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call: from the media cache when it can, else through the app."""
        # Ahead of FastAPI's own layers (error, telemetry, body limit) and the middleware:
        # at segment rates each costs more than answering from the cache (BENCHMARKS.md).
        cached_media = self.cached_media
        if cached_media is not None and await cached_media.answer(scope, send):
            return
        await super().__call__(scope, receive, send)


async def _has_valid_token(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    # Catalog reads accept any valid access token (client credentials included).
    authorization = headers.get(b"authorization")
    token = bearer_token(authorization.decode("latin-1") if authorization else None)
    if token is None:
        return False
    resources: AppResources = scope["app"].state.resources
    try:
        await resources.auth.verifier.verify(token)
    except InvalidToken:
        return False
    return True


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the Encore ASGI app for these settings (the environment's when omitted)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        try:
            if settings.migrate_on_start:
                await upgrade_database(engine)
            session_factory = create_session_factory(engine)
            master_key = load_master_key(settings)
            auth = await AuthRuntime.start(settings, session_factory, master_key)

            async def read_catalog_revision() -> int:
                async with session_factory() as db_session:
                    return await catalog_service.read_catalog_revision(db_session=db_session)

            store = open_blob_store(settings)
            event_log = await open_event_log(settings, session_factory)
            app.state.resources = AppResources(
                settings=settings,
                engine=engine,
                session_factory=session_factory,
                store=store,
                auth=auth,
                catalog_documents=DocumentCache(
                    max_entries=settings.catalog_cache_entries,
                    revalidate_seconds=settings.catalog_cache_revalidate_seconds,
                    read_revision=read_catalog_revision,
                ),
                media_signer=streaming_service.media_signer(settings, master_key),
                event_log=event_log,
                event_rate_limiter=EventRateLimiter(
                    events_per_minute=settings.events_per_user_per_minute
                ),
                recommend_models=ModelHolder(store, ann_min_items=settings.recommend_ann_min_items),
            )
            cached_media.start(app.state.resources.media_signer, store)
            # The newest recommendation model, then a newer one whenever training publishes it.
            await app.state.resources.recommend_models.refresh_at_start()
            app.state.resources.recommend_models.start_polling(
                settings.recommend_model_poll_seconds
            )
            logger.info(
                "started",
                database=engine.url.render_as_string(hide_password=True),
                storage=settings.storage_url,
            )
            # What start-up built (modules, routes, models) lives as long as the process: move
            # it out of the collector's sight, so collections during requests stay short.
            gc.freeze()
            # In-process job workers (transcoding and the like): none when ENCORE_WORKERS=0.
            workers = WorkerPool.from_settings(
                settings=settings, session_factory=session_factory, store=store
            )
            app.state.job_queue = workers.queue
            await workers.start()
            # The event log's consumers run wherever job workers run (none when ENCORE_WORKERS=0).
            consumers = EventConsumerPool(
                event_log,
                event_consumers(settings=settings, store=store, log_source=event_log.source)
                if settings.workers > 0
                else [],
            )
            await consumers.start()
            try:
                yield
            finally:
                cached_media.stop()
                await consumers.stop()
                await app.state.resources.recommend_models.stop()
                # Running jobs may finish; after the grace period they go back to the queue.
                await workers.stop(grace=10)
                await event_log.close()
        finally:
            gc.unfreeze()
            await engine.dispose()

    app = EncoreApp(
        title="Encore",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # Encore exports its own Prometheus metrics and JSON logs; FastAPI's OpenTelemetry
        # bridge would otherwise look up the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.metrics = metrics
    install_problem_handlers(app)
    # Last added runs first: request context (ids, logs, metrics) wraps the short-cuts for
    # media files and cached documents, which both skip the API's routing.
    app.add_middleware(
        MediaFilesMiddleware,
        media=MediaFiles(
            _media_context, redirect_to_store=lambda _scope: settings.media_redirect_to_store
        ),
    )
    app.add_middleware(
        CachedDocumentMiddleware,
        routes=CACHED_DOCUMENT_ROUTES,
        cache_of=_catalog_documents,
        may_read=_has_valid_token,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    cached_media = CachedMediaFiles(metrics=metrics, cache_bytes=settings.media_memory_cache_bytes)
    app.cached_media = cached_media
    # Listening events first: the busiest route of all is then matched first (each router
    # ahead of it costs every request that passes it a scan of its routes).
    app.include_router(events_router)
    app.include_router(oauth_router)
    app.include_router(accounts_router)
    app.include_router(catalog_router)
    app.include_router(media_router)
    app.include_router(streaming_router)
    app.include_router(library_router)
    app.include_router(search_router)
    app.include_router(recommend_router)
    app.include_router(analytics_router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is up and answering."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness")
    async def readyz(request: Request) -> Response:
        """The database, the blob store and (when configured) the bus are reachable."""
        resources: AppResources = request.app.state.resources
        checks: dict[str, str] = {}
        probes = [
            ("database", ping_database(resources.engine)),
            ("storage", resources.store.ping()),
        ]
        if resources.settings.bus_url:
            probes.append(("bus", request.app.state.job_queue.ping()))
            probes.append(("event_log", resources.event_log.ping()))
        for name, probe in probes:
            try:
                await probe
                checks[name] = "ok"
            except Exception as exc:
                logger.warning("readiness_check_failed", check=name, error=type(exc).__name__)
                checks[name] = "unreachable"
        if all(state == "ok" for state in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return problem_response(
            503,
            detail="a dependency is unreachable: "
            + ", ".join(name for name, state in checks.items() if state != "ok"),
            extra={"checks": checks},
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        """Request counts and latency histograms by route template, in Prometheus text format."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return app


def create_app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory encore.app:create_app_from_environment`."""
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)

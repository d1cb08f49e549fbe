"""The HTTP service's factory: `create_app(settings)` wires state, routers, error answers and
middlewares (`gaitid serve` runs it under uvicorn).

Startup (service.startup) loads the embedding model, builds the clip pipeline and opens the gallery
in a worker thread. A missing model never stops the process: the app starts, /healthz answers,
/readyz says what is missing and which command fixes it, and /enroll and /identify answer 503
until then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from service.auth import KeyRing
from service.cameras import CameraRegistry, cameras_dir
from service.clip_cache import ClipCache
from service.errors import add_error_handlers
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.middleware import (
    MB,
    BodyLimitMiddleware,
    RequestIdMiddleware,
    UploadAuthMiddleware,
    max_body_bytes,
)
from service.openapi import install_openapi
from service.routers import (
    admin,
    audit,
    cameras,
    clips,
    enroll,
    galleries,
    health,
    identify,
    keys,
    subjects,
    ui,
)
from service.routers.sightings import router as sightings_router
from service.settings import Settings, get_settings
from service.startup import start_services, stop_services
from service.state import ServiceState


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    state = ServiceState(settings=settings, metrics=metrics, keyring=KeyRing.from_settings(settings.http),
                         clip_limiter=anyio.CapacityLimiter(settings.http.max_concurrent_clips),
                         clip_cache=ClipCache(int(settings.http.clip_cache_mb * MB), settings.http.clip_cache_ttl_s),
                         cameras=CameraRegistry(cameras_dir(settings.pipeline.data_dir)))
    metrics.watch_clip_cache(lambda: state.clip_cache.stats())  # the cache in the state when scraped

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(start_services, state)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(stop_services, state)

    app = FastAPI(
        title="gaitid",
        summary="Identify people by the way they walk.",
        description=(
            "Enroll people from short walking clips, then identify everyone walking in a new clip. "
            "Send your API key in the `X-API-Key` header when the server has keys; a key opens one gallery "
            "with one role (read, enroll or admin). Errors answer `{\"error\": code, \"message\": ..., "
            "\"details\": {...}}`; every answer carries an `X-Request-ID` header."
        ),
        version=health.package_version(),
        lifespan=lifespan,
    )
    app.state.gaitid = state
    for router in (enroll.router, identify.router, clips.router, cameras.router, subjects.router, galleries.router,
                   keys.router, audit.router, admin.router, health.router, ui.router):
        app.include_router(router)
    app.include_router(sightings_router)  # GET /subjects/{id}/sightings: answers 404 without GAITID_RESCORE_STATE
    add_error_handlers(app)
    install_openapi(app, state.keyring)
    # The last added runs first: the request id wraps everything (it answers unhandled errors); metrics
    # see every answer (a 401 or 413 included); the key is checked before the body limit, which counts
    # the body as the route's parser reads it.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes(settings.http.max_upload_mb))
    app.add_middleware(UploadAuthMiddleware, keyring=state.keyring)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app

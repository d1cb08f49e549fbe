"""GET /healthz (the process answers), /readyz (models loaded, gallery open: what is missing and
the command that fixes it), /metrics (Prometheus)."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import MetricsDep, StateDep
from service.schemas import CheckOut, HealthResponse, ReadyResponse
from service.state import ReadinessCheck, ServiceState

router = APIRouter(tags=["health"])


@lru_cache
def package_version() -> str:
    try:
        return version("gaitid")
    except PackageNotFoundError:
        return "unknown"


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """Liveness: the process serves requests. Does not touch models or the gallery."""
    return HealthResponse(version=package_version())


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: 200 when /enroll and /identify can work, else 503. Each check says what it
    found and, when it failed, what fixes it."""
    checks = list(state.checks)
    if state.gallery is not None:  # a gallery that failed to open is already in state.checks
        checks.append(await anyio.to_thread.run_sync(_gallery_check, state))
    body = ReadyResponse(
        ready=all(c.ok for c in checks),
        checks=[CheckOut(name=c.name, ok=c.ok, detail=c.detail, fix=c.fix) for c in checks],
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


def _gallery_check(state: ServiceState) -> ReadinessCheck:
    assert state.gallery is not None
    try:
        namespaces = state.gallery.namespaces()
    except Exception as error:  # noqa: BLE001 -- closed, or the database went away: reported, not raised
        return ReadinessCheck("gallery", False, f"the gallery does not answer: {error}",
                              f"check that {state.settings.gallery.gallery_dir} is readable and writable, then restart")
    return ReadinessCheck("gallery", True, f"open at {state.settings.gallery.gallery_dir} ({len(namespaces)} namespaces)")


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus text format: request counts and latency per route, pipeline stage times,
    embedding batch sizes, gallery size per namespace."""
    body = await anyio.to_thread.run_sync(service_metrics.render)  # reads the gallery's counts (SQLite)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

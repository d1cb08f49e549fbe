"""Typed FastAPI dependencies: the service state, settings, pipeline, gallery, and the caller's
gallery namespace (from the X-API-Key header).

Routers ask for `SettingsDep`, `PipelineDep`, `GalleryDep`, `NamespaceDep`; tests swap any of them
through `app.dependency_overrides[get_pipeline] = ...`.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from gallery import Gallery
from service.auth import API_KEY_HEADER, authenticate
from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.pipeline.pipeline import ClipProcessor
from service.settings import Settings
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.gaitid


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_metrics(state: StateDep) -> ServiceMetrics:
    return state.metrics


MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def get_pipeline(state: StateDep) -> ClipProcessor:
    if state.pipeline is None:
        raise ApiError(503, "not_ready", state.not_ready_message("clip pipeline"), {"see": "/readyz"})
    return state.pipeline


PipelineDep = Annotated[ClipProcessor, Depends(get_pipeline)]


def get_gallery(state: StateDep) -> Gallery:
    if state.gallery is None:
        raise ApiError(503, "not_ready", state.not_ready_message("gallery"), {"see": "/readyz"})
    return state.gallery


GalleryDep = Annotated[Gallery, Depends(get_gallery)]


def get_clip_limiter(state: StateDep) -> anyio.CapacityLimiter:
    return state.clip_limiter


ClipLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_clip_limiter)]


_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False,
    description="Your API key. Each key has its own gallery. Not needed when the server runs without keys.",
)


def get_namespace(state: StateDep, api_key: Annotated[str | None, Security(_api_key_scheme)] = None) -> str:
    return authenticate(state.api_keys, api_key)


NamespaceDep = Annotated[str, Depends(get_namespace)]

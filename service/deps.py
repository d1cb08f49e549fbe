"""Typed FastAPI dependencies: the service state, settings, pipeline, gallery, and the caller's
gallery namespace (from the X-API-Key header).

Routers ask for `SettingsDep`, `PipelineDep`, `GalleryDep`, `NamespaceDep`; tests swap any of them
through `app.dependency_overrides[get_pipeline] = ...`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Protocol

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from gallery import DEFAULT_NAMESPACE, Gallery
from service.metrics import ServiceMetrics
from service.pipeline.pipeline import ClipResult
from service.settings import Settings


@lru_cache
def package_version() -> str:
    try:
        return version("gaitid")
    except PackageNotFoundError:
        return "unknown"


class ApiError(Exception):
    """An error the API answers with a JSON body {"error": code, "message": ..., "details": {...}}."""

    def __init__(self, status_code: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


# -- the pipeline contract the routers rely on ----------------------------------------------------
class ClipPipelineLike(Protocol):
    """`service.pipeline.pipeline.ClipPipeline`: a video (path, bytes or binary file) -> ClipResult
    (aligned sequences, their embeddings, per-stage timings) or a typed PipelineError."""

    def process(self, source: Any) -> ClipResult: ...


# -- state ----------------------------------------------------------------------------------------
@dataclass
class ReadinessCheck:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class ServiceState:
    """Everything the app builds once at startup (see service.app.lifespan)."""

    settings: Settings
    metrics: ServiceMetrics
    clip_limiter: anyio.CapacityLimiter
    api_keys: tuple[bytes, ...] = ()
    pipeline: ClipPipelineLike | None = None
    gallery: Gallery | None = None
    # Startup checks (model files, pipeline construction); gallery health is checked live.
    checks: list[ReadinessCheck] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)  # objects with close(), closed in reverse order

    def not_ready_message(self, component: str) -> str:
        failed = [c for c in self.checks if not c.ok]
        reasons = "; ".join(f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in failed)
        return f"the service is not ready: the {component} is unavailable" + (f" ({reasons})" if reasons else "")


def get_state(request: Request) -> ServiceState:
    return request.app.state.gaitid


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_metrics(state: StateDep) -> ServiceMetrics:
    return state.metrics


MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def get_pipeline(state: StateDep) -> ClipPipelineLike:
    if state.pipeline is None:
        raise ApiError(503, "not_ready", state.not_ready_message("clip pipeline"), {"see": "/readyz"})
    return state.pipeline


PipelineDep = Annotated[ClipPipelineLike, Depends(get_pipeline)]


def get_gallery(state: StateDep) -> Gallery:
    if state.gallery is None:
        raise ApiError(503, "not_ready", state.not_ready_message("gallery"), {"see": "/readyz"})
    return state.gallery


GalleryDep = Annotated[Gallery, Depends(get_gallery)]


def get_clip_limiter(state: StateDep) -> anyio.CapacityLimiter:
    return state.clip_limiter


ClipLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_clip_limiter)]


# -- authentication -------------------------------------------------------------------------------
API_KEY_HEADER = "X-API-Key"
_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False,
    description="Your API key. Each key has its own gallery. Not needed when the server runs without keys.",
)


def parse_api_keys(value: str) -> tuple[bytes, ...]:
    """settings.api_keys ("k1,k2") -> keys as bytes; blanks ignored."""
    return tuple(k.strip().encode() for k in value.split(",") if k.strip())


def namespace_for_key(key: bytes) -> str:
    """The gallery namespace of an API key: a hash, so the key itself is never stored."""
    return hashlib.sha256(key).hexdigest()[:16]


def match_api_key(supplied: bytes, keys: Sequence[bytes]) -> bytes | None:
    """The configured key equal to `supplied`, or None. Every key is compared, each in constant
    time, so the response time says nothing about which key (or how much of one) matched."""
    matched = None
    for key in keys:
        if hmac.compare_digest(supplied, key):
            matched = key
    return matched


def authenticate(keys: Sequence[bytes], supplied: str | None) -> str:
    """The caller's namespace, or ApiError 401. No keys configured = authentication disabled."""
    if not keys:
        return DEFAULT_NAMESPACE  # the embedded single-user default
    challenge = {"WWW-Authenticate": API_KEY_HEADER}
    if not supplied:
        raise ApiError(401, "missing_api_key", f"This server needs an API key: send it in the {API_KEY_HEADER} header.",
                       headers=challenge)
    matched = match_api_key(supplied.encode(), keys)
    if matched is None:
        raise ApiError(401, "invalid_api_key", f"The {API_KEY_HEADER} header does not hold a valid API key.",
                       headers=challenge)
    return namespace_for_key(matched)


def get_namespace(state: StateDep, api_key: Annotated[str | None, Security(_api_key_scheme)] = None) -> str:
    return authenticate(state.api_keys, api_key)


NamespaceDep = Annotated[str, Depends(get_namespace)]

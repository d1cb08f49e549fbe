"""Typed FastAPI dependencies: the service state, settings, pipeline, gallery, and the caller (from
the X-API-Key header: key name, gallery, role) with the role a route needs.

Routers ask for `SettingsDep`, `PipelineDep`, `GalleryDep`, and one of `ReaderDep` (identify, read
subjects), `EnrollerDep` (enroll), `AdminDep` (delete, re-embed, keys, audit) for the caller: a
key whose role is short of it is answered 403. `AuditDep` says who asks and under which request id,
for the audit log. Tests swap any of them through `app.dependency_overrides[get_pipeline] = ...`.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from gallery import AuditContext, Gallery
from gallery.api_keys import Role
from service.auth import API_KEY_HEADER, Caller
from service.cameras import CameraRegistry
from service.clip_cache import ClipCache
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


def get_clip_cache(state: StateDep) -> ClipCache:
    return state.clip_cache


ClipCacheDep = Annotated[ClipCache, Depends(get_clip_cache)]


def get_cameras(state: StateDep) -> CameraRegistry:
    return state.cameras


CamerasDep = Annotated[CameraRegistry, Depends(get_cameras)]


_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False,
    description="Your API key: it opens one gallery with one role (read, enroll or admin). "
                "Not needed when the server runs without keys.",
)


def get_caller(state: StateDep, api_key: Annotated[str | None, Security(_api_key_scheme)] = None) -> Caller:
    return state.keyring.authenticate(api_key)


CallerDep = Annotated[Caller, Depends(get_caller)]


def _require(role: Role):
    def caller_with_role(caller: CallerDep) -> Caller:
        if not caller.allows(role):
            raise ApiError(403, "forbidden", f"This API key ({caller.key_name}) has role {caller.role!r}; this "
                                             f"needs role {role!r}. Ask an admin of your gallery for such a key.",
                           {"role": caller.role, "needed": role})
        return caller

    caller_with_role.__name__ = f"require_{role}"
    return caller_with_role


require_read, require_enroll, require_admin = _require("read"), _require("enroll"), _require("admin")
ReaderDep = Annotated[Caller, Depends(require_read)]
EnrollerDep = Annotated[Caller, Depends(require_enroll)]
AdminDep = Annotated[Caller, Depends(require_admin)]


def get_audit_context(request: Request, caller: CallerDep) -> AuditContext:
    """Who asks (the key's name) and the request id, as the audit log records them."""
    return AuditContext(caller.actor, getattr(request.state, "request_id", None))


AuditDep = Annotated[AuditContext, Depends(get_audit_context)]


def pipeline_model_id(pipeline: ClipProcessor) -> str | None:
    """The id of the model whose embeddings the pipeline makes, when it says (ClipPipeline through its
    embedder; a test double through `model_id`): lets routes refuse a model mismatch before the video runs."""
    model_id = getattr(pipeline, "model_id", None) or getattr(getattr(pipeline, "embedder", None), "model_id", None)
    return model_id if isinstance(model_id, str) else None

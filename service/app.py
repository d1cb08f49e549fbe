"""The HTTP service. `create_app(settings)` is the factory (`gaitid serve` runs it under uvicorn).

Startup loads the embedding model, builds the clip pipeline and opens the gallery in a worker
thread. A missing model never stops the process: the app starts, /healthz answers, /readyz says
what is missing and which command fixes it, and /enroll and /identify answer 503 until then.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gallery import Gallery, GalleryError
from service.batching import EmbeddingBatcher
from service.deps import (
    API_KEY_HEADER,
    ApiError,
    ReadinessCheck,
    ServiceState,
    authenticate,
    package_version,
    parse_api_keys,
)
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.pipeline.embed import GaitEmbedder, read_metadata
from service.pipeline.errors import ClipTooLongError, InvalidVideoError, PipelineError
from service.routers import enroll, health, identify, subjects
from service.settings import Settings, get_settings

log = logging.getLogger("gaitid.service")

# Multipart framing and the form fields beside the video: allowed on top of max_upload_mb.
FORM_OVERHEAD_BYTES = 1024 * 1024

EMBEDDING_MODEL_FIX = (
    "set GAITID_EMBEDDING_MODEL to an exported model (the reference one ships in the repository's models/), "
    "or train and export one: `gaitid train model/configs/deepgaitv2_sil_casiab_cpu.yaml --out runs/sil` "
    "then `gaitid export runs/sil/last.pt {path}`"
)
YOLO_INSTALL = (
    "`gaitid models fetch` (needs internet) or, offline, `gaitid models import DIR` with yolov8n-seg.pt in DIR"
)
SEGMENTER_FIX = YOLO_INSTALL + "; or set GAITID_SEGMENTER=bgsub for a fixed camera"
DEPTH_FIX = "`gaitid models fetch` (needs internet) or, offline, `gaitid models import DIR`"

# HTTP status per pipeline error. The pipeline's own `http_status` is the fallback; the API answers
# 415 for "not a video" (the upload's media type is what is wrong).
_PIPELINE_STATUS: dict[type[PipelineError], int] = {InvalidVideoError: 415, ClipTooLongError: 413}
_GALLERY_STATUS = {
    "invalid_input": 422, "subject_not_found": 404, "sequence_not_found": 404, "subject_exists": 409,
    "model_mismatch": 409, "gallery_closed": 503,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    state = ServiceState(
        settings=settings, metrics=metrics, clip_limiter=anyio.CapacityLimiter(settings.max_concurrent_clips),
        api_keys=parse_api_keys(settings.api_keys),
    )

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
            "Send your API key in the `X-API-Key` header when the server has keys; each key has its own "
            "gallery. Errors answer `{\"error\": code, \"message\": ..., \"details\": {...}}`."
        ),
        version=package_version(),
        lifespan=lifespan,
    )
    app.state.gaitid = state
    for router in (enroll.router, identify.router, subjects.router, health.router):
        app.include_router(router)
    _add_error_handlers(app)
    max_body = int(settings.max_upload_mb * 1024 * 1024) + FORM_OVERHEAD_BYTES
    # The last added runs first: metrics see every answer (a 401 or 413 included); the key is checked
    # before the body limit, which counts the body as the route's parser reads it.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body)
    app.add_middleware(UploadAuthMiddleware, keys=state.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


# -- startup and shutdown -------------------------------------------------------------------------
def start_services(state: ServiceState) -> None:
    """Load what the settings ask for; record a readiness check per component instead of failing."""
    embedder = _load_embedder(state)
    if embedder is not None:
        _build_pipeline(state, embedder)
    _open_gallery(state)


def stop_services(state: ServiceState) -> None:
    for closer in reversed(state.closers):
        try:
            closer.close()
        except Exception:
            log.exception("error while closing %r", closer)
    state.closers.clear()


def _load_embedder(state: ServiceState) -> GaitEmbedder | EmbeddingBatcher | None:
    settings = state.settings
    path = settings.model_path(settings.embedding_model)
    fix = EMBEDDING_MODEL_FIX.format(path=path)
    if not path.exists():
        state.checks.append(ReadinessCheck("embedding_model", False, f"{path} does not exist", fix))
        return None
    try:
        metadata = read_metadata(path)
        embedder = GaitEmbedder(path, providers=settings.providers, threads=settings.threads)
    except Exception as error:  # noqa: BLE001 -- unreadable file, no gaitid metadata, provider missing: all reported
        state.checks.append(ReadinessCheck("embedding_model", False, f"{path} cannot be loaded: {error}", fix))
        return None
    state.checks.append(ReadinessCheck(
        "embedding_model", True,
        f"{path.name}: {metadata.architecture} {metadata.variant}, inputs {metadata.inputs}, model id "
        f"{embedder.model_id}, providers {embedder.session.get_providers()}",
    ))
    if not settings.embed_batching:
        return embedder
    batcher = EmbeddingBatcher(embedder, max_batch=settings.embed_batch_max,
                               max_wait_ms=settings.embed_batch_wait_ms, observer=state.metrics.observe_batch)
    state.closers.append(batcher)
    return batcher


def _build_pipeline(state: ServiceState, embedder: GaitEmbedder | EmbeddingBatcher) -> None:
    from service.pipeline.pipeline import (
        build_pipeline,  # imports OpenCV, supervision: after the cheap checks
    )

    settings = state.settings
    yolo = settings.model_path(settings.yolo_model)
    depth = settings.model_path(settings.depth_model)
    if settings.segmenter == "yolo" and not yolo.exists():
        state.checks.append(ReadinessCheck("segmenter", False, f"GAITID_SEGMENTER=yolo but {yolo} does not exist",
                                           SEGMENTER_FIX))
        return
    if embedder.needs_depth and not depth.exists():
        state.checks.append(ReadinessCheck(
            "depth_model", False, f"the embedding model needs depth maps but {depth} does not exist", DEPTH_FIX))
        return
    background = settings.background_clip
    if background is not None and not background.exists():
        state.checks.append(ReadinessCheck(
            "background_clip", False, f"GAITID_BACKGROUND_CLIP={background} does not exist",
            "point GAITID_BACKGROUND_CLIP at an empty-scene clip of the camera, or unset it"))
        return
    try:
        state.pipeline = build_pipeline(settings, embedder, background=background)
    except PipelineError as error:
        state.checks.append(ReadinessCheck("pipeline", False, error.message))
        return
    except Exception as error:
        log.exception("building the clip pipeline failed")
        state.checks.append(ReadinessCheck("pipeline", False, f"building the clip pipeline failed: {error}"))
        return
    if yolo.exists() and settings.segmenter != "bgsub":
        state.checks.append(ReadinessCheck("segmenter", True, f"YOLO segmentation ({yolo.name})"))
    else:
        why = "GAITID_SEGMENTER=bgsub" if settings.segmenter == "bgsub" else f"no YOLO model at {yolo}"
        state.checks.append(ReadinessCheck(
            "segmenter", True,
            f"background subtraction ({why}): works for a fixed camera only"
            + (f", background from {background}" if background else "")
            + (f"; for moving cameras install YOLO-seg: {YOLO_INSTALL}" if settings.segmenter == "auto" else ""),
        ))
    if embedder.needs_depth:
        state.checks.append(ReadinessCheck("depth_model", True, f"Depth Anything ({depth.name})"))


def _open_gallery(state: ServiceState) -> None:
    settings = state.settings
    try:
        gallery = Gallery(settings.gallery_dir, threshold=settings.unknown_threshold)
    except Exception as error:
        log.exception("opening the gallery failed")
        state.checks.append(ReadinessCheck(
            "gallery", False, f"cannot open the gallery at {settings.gallery_dir}: {error}",
            f"make {settings.data_dir} writable by the service user (GAITID_DATA_DIR), then restart"))
        return
    state.gallery = gallery
    state.closers.insert(0, gallery)  # closed last: the batcher and pipeline stop first
    state.metrics.watch_gallery(lambda: _gallery_sizes(gallery))


def _gallery_sizes(gallery: Gallery):
    for namespace in gallery.namespaces():
        status = gallery.status(namespace)
        yield namespace, status.subjects, status.sequences


# -- errors ---------------------------------------------------------------------------------------
def _error(status: int, code: str, message: str, details: dict | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "details": details or {}}, status_code=status,
                        headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(PipelineError)
    async def pipeline_error(_: Request, exc: PipelineError) -> JSONResponse:
        status = next((s for cls, s in _PIPELINE_STATUS.items() if isinstance(exc, cls)), exc.http_status)
        return _error(status, exc.code, exc.message, _jsonable(exc.details))

    @app.exception_handler(GalleryError)
    async def gallery_error(_: Request, exc: GalleryError) -> JSONResponse:
        return _error(_GALLERY_STATUS.get(exc.code, 500), exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(part) for part in e.get("loc", ()) if part not in ("body", "query", "path")),
             "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'request'}: {p['problem']}" for p in problems)
        return _error(422, "invalid_request", f"The request is invalid: {summary}.", {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}
        return _error(exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail),
                      headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "Something went wrong on the server; the server log has the details.")


def _jsonable(details: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
            for k, v in details.items()}


# -- uploads: authenticate before reading, stop at the size limit ---------------------------------
class UploadAuthMiddleware:
    """Rejects a POST without a valid API key before its body is read.

    FastAPI parses a multipart body before it resolves dependencies, so without this an
    unauthenticated client could make the server spool uploads to disk. The `NamespaceDep`
    dependency still decides the namespace (and documents the header in OpenAPI).
    """

    def __init__(self, app: ASGIApp, keys: tuple[bytes, ...]):
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope.get("method") == "POST":
            supplied = _header(scope, API_KEY_HEADER.lower().encode())
            try:
                authenticate(self.keys, None if supplied is None else supplied.decode("latin-1"))
            except ApiError as error:
                response = _error(error.status_code, error.code, error.message, headers=error.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- upload size ----------------------------------------------------------------------------------
class UploadTooLargeError(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than this server accepts ({limit / 2**20:.0f} MB). "
                              "Send a shorter clip or one at a lower resolution.")


class BodyLimitMiddleware:
    """Stops a request body at `max_body_bytes` while it streams in.

    A declared Content-Length over the limit is answered 413 before anything is read. Otherwise
    the body is counted as it arrives; passing the limit raises inside the multipart parser, so an
    upload is never spooled to disk past the limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            error = UploadTooLargeError(self.max_body_bytes)
            response = _error(413, "upload_too_large", str(error.detail),
                              {"size_bytes": declared, "limit_bytes": self.max_body_bytes},
                              headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise UploadTooLargeError(self.max_body_bytes)
            return message

        await self.app(scope, counted_receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None

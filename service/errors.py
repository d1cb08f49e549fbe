"""How errors become HTTP answers: the one map from error type to status, and the JSON body
`{"error": code, "message": ..., "details": {...}}` every error answer has.

The parts raise their own typed errors (the pipeline's, the gallery's) and know nothing of HTTP;
routes raise `ApiError` for what only the HTTP layer can judge (a field, a key, an upload).

A tenant never reads another tenant's internal ids: gallery errors are worded here without the
namespace they name (`public_message`). Errors nobody expected are answered 500 by
service.middleware.RequestIdMiddleware, which logs each once with the request id the answer carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gallery import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    ApiKeyNotRemovableError,
    GalleryClosedError,
    GalleryError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidSubjectIdError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from service.cameras import CameraError
from service.clip_cache import ClipExpiredError
from service.pipeline.errors import (
    ClipTooLongError,
    InvalidVideoError,
    ModelNotFoundError,
    NoPersonError,
    PipelineError,
    TooFewFramesError,
)


class ApiError(Exception):
    """An answer only the HTTP layer decides (a bad field, a missing key, an upload over the limit)."""

    def __init__(self, status_code: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


# The HTTP status of each error type; the most specific class listed for an error wins.
STATUS: dict[type[Exception], int] = {
    PipelineError: 422,
    InvalidVideoError: 415,  # the upload's media type is what is wrong
    ClipTooLongError: 413,
    NoPersonError: 422,
    TooFewFramesError: 422,
    ModelNotFoundError: 503,
    GalleryError: 500,
    InvalidInputError: 422,
    InvalidSubjectIdError: 422,
    InvalidMetadataError: 422,
    SubjectNotFoundError: 404,
    SequenceNotFoundError: 404,
    SubjectExistsError: 409,
    ModelMismatchError: 409,
    GalleryClosedError: 503,
    ApiKeyExistsError: 409,
    ApiKeyNotFoundError: 404,
    ApiKeyNotRemovableError: 409,
    ClipExpiredError: 404,
    CameraError: 404,  # and its subclasses CameraNotFoundError, BackgroundNotFoundError
}

# Codes of the HTTP errors Starlette and FastAPI raise themselves.
HTTP_CODES = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}


def status_of(error: Exception) -> int:
    """The status STATUS gives the error's most specific listed class; 500 for anything else."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def public_message(error: GalleryError) -> str:
    """The error's message as a tenant may read it: "your gallery", never a namespace name."""
    if isinstance(error, SubjectNotFoundError):
        return f"Subject {error.subject_id!r} is not enrolled in your gallery."
    if isinstance(error, SubjectExistsError):
        return f"Subject {error.subject_id!r} is already enrolled in your gallery (if_exists=error)."
    if isinstance(error, SequenceNotFoundError):
        return f"Sequence {error.sequence_id} does not exist in your gallery."
    if isinstance(error, ModelMismatchError):
        return (f"Your gallery holds embeddings of model {error.gallery_model_id!r}, not {error.model_id!r}: "
                "an admin re-embeds it (POST /reembed, or `gaitid reembed`), or the server uses the gallery's model.")
    if isinstance(error, ApiKeyNotFoundError):
        return f"No API key named {error.name!r} opens your gallery."
    return str(error)


def error_response(status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "details": dict(details or {})}, status_code=status,
                        headers=dict(headers) if headers else None)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(PipelineError)
    @app.exception_handler(ClipExpiredError)
    @app.exception_handler(CameraError)
    async def pipeline_error(_: Request, exc: PipelineError | ClipExpiredError | CameraError) -> JSONResponse:
        return error_response(status_of(exc), exc.code, exc.message, _jsonable(exc.details))

    @app.exception_handler(GalleryError)
    async def gallery_error(_: Request, exc: GalleryError) -> JSONResponse:
        return error_response(status_of(exc), exc.code, public_message(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(part) for part in e.get("loc", ()) if part not in ("body", "query", "path")),
             "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'request'}: {p['problem']}" for p in problems)
        return error_response(422, "invalid_request", f"The request is invalid: {summary}.", {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = str(exc.detail)
        if exc.status_code == 400:
            message = f"The request body cannot be parsed ({exc.detail}): send multipart/form-data or JSON as documented."
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
            for k, v in details.items()}

"""How errors become HTTP answers: the one map from error type to status, and the JSON body
`{"error": code, "message": ..., "details": {...}}` every error answer has.

The parts raise their own typed errors (the pipeline's, the gallery's) and know nothing of HTTP;
routes raise `ApiError` for what only the HTTP layer can judge (a field, a key, an upload).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gallery import (
    GalleryClosedError,
    GalleryError,
    InvalidInputError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from service.pipeline.errors import (
    ClipTooLongError,
    InvalidVideoError,
    ModelNotFoundError,
    NoPersonError,
    PipelineError,
    TooFewFramesError,
)

log = logging.getLogger("gaitid.service")


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
    SubjectNotFoundError: 404,
    SequenceNotFoundError: 404,
    SubjectExistsError: 409,
    ModelMismatchError: 409,
    GalleryClosedError: 503,
}


def status_of(error: Exception) -> int:
    """The status STATUS gives the error's most specific listed class; 500 for anything else."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "details": dict(details or {})}, status_code=status,
                        headers=dict(headers) if headers else None)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(PipelineError)
    async def pipeline_error(_: Request, exc: PipelineError) -> JSONResponse:
        return error_response(status_of(exc), exc.code, exc.message, _jsonable(exc.details))

    @app.exception_handler(GalleryError)
    async def gallery_error(_: Request, exc: GalleryError) -> JSONResponse:
        return error_response(status_of(exc), exc.code, str(exc))

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
        codes = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error",
                              "Something went wrong on the server; the server log has the details.")


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
            for k, v in details.items()}

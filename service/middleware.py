"""Guards on uploads that must act before FastAPI reads a request body: the API key is checked
first, then the body is stopped at the size limit while it streams in."""

from __future__ import annotations

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import API_KEY_HEADER, authenticate
from service.errors import ApiError, error_response

# Multipart framing and the form fields beside the video: allowed on top of max_upload_mb.
FORM_OVERHEAD_BYTES = 1024 * 1024
MB = 1024 * 1024


def max_body_bytes(max_upload_mb: float) -> int:
    """The largest request body that can carry a video of `max_upload_mb`."""
    return int(max_upload_mb * MB) + FORM_OVERHEAD_BYTES


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
                response = error_response(error.status_code, error.code, error.message, headers=error.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class UploadTooLargeError(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than this server accepts ({limit / MB:.0f} MB). "
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
            response = error_response(413, "upload_too_large", str(error.detail),
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

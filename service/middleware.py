"""ASGI middlewares, outermost first: every request gets an id (RequestIdMiddleware, which also
answers and logs once any error nobody handled); an upload is refused before its body is read when
the API key is wrong (UploadAuthMiddleware), then stopped at the size limit while it streams in
(BodyLimitMiddleware)."""

from __future__ import annotations

import logging
import uuid

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import API_KEY_HEADER, KeyRing
from service.errors import ApiError, error_response

log = logging.getLogger("gaitid.service")

REQUEST_ID_HEADER = "X-Request-ID"

# Multipart framing and the form fields beside the video: allowed on top of max_upload_mb.
FORM_OVERHEAD_BYTES = 1024 * 1024
MB = 1024 * 1024


def max_body_bytes(max_upload_mb: float) -> int:
    """The largest request body that can carry a video of `max_upload_mb`."""
    return int(max_upload_mb * MB) + FORM_OVERHEAD_BYTES


class RequestIdMiddleware:
    """Gives every request an id (made here, never taken from the client, so that audit entries can
    trust it), sends it back in the X-Request-ID header, and turns any exception nobody handled into
    a 500 answer carrying the id in its header and `details.request_id`, logged once with the id.

    It must be the outermost of the app's middlewares: Starlette's own error middleware, outside it,
    would log the exception a second time and re-raise it to the server, which logs it a third.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:  # the one place that answers what nothing else handled
            log.error("unhandled error, request %s %s %s", request_id, scope.get("method", ""),
                      scope.get("path", ""), exc_info=error)
            if started:  # the answer is under way: nothing more can be said to this client
                return
            response = error_response(
                500, "internal_error",
                f"Something went wrong on the server. Quote request id {request_id} when you report it.",
                {"request_id": request_id}, headers={REQUEST_ID_HEADER: request_id})
            await response(scope, receive, send)


def request_id_of(scope: Scope) -> str | None:
    """The id RequestIdMiddleware gave the request."""
    return scope.get("state", {}).get("request_id")


class UploadAuthMiddleware:
    """Rejects a POST without a valid API key before its body is read.

    FastAPI parses a multipart body before it resolves dependencies, so without this an
    unauthenticated client could make the server spool uploads to disk. The route's caller
    dependency (service.deps) still decides the gallery and checks the role (and documents the
    header in OpenAPI).
    """

    def __init__(self, app: ASGIApp, keyring: KeyRing):
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and self.keyring.enabled:
            supplied = _header(scope, API_KEY_HEADER.lower().encode())
            try:
                self.keyring.authenticate(None if supplied is None else supplied.decode("latin-1"))
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

"""service/middleware.py: uploads are refused before their body is read (no valid key) and stopped
at the size limit while they stream in."""

from __future__ import annotations

import json

import anyio

from service.app import create_app
from service.middleware import FORM_OVERHEAD_BYTES
from tests.service.conftest import error_of, gallery_sequences, make_settings, serve


def test_upload_over_limit_with_content_length_is_413(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake, max_upload_mb=0.5) as client:
        big = b"\0" * (FORM_OVERHEAD_BYTES + 600_000)
        response = client.post("/enroll", data={"subject_id": "a"}, files={"video": ("big.avi", big)})
        assert response.status_code == 413 and error_of(response) == "upload_too_large"
        assert response.json()["details"]["limit_bytes"] == 524288 + FORM_OVERHEAD_BYTES
        assert fake.calls == 0 and gallery_sequences(client) == 0


def test_streamed_upload_is_stopped_at_the_limit(tmp_path, tiny_model):
    """A chunked upload (no Content-Length) is cut off once it passes the limit: driven through the
    app as raw ASGI, so we can count how much of the body the server actually read."""
    boundary = "gaitid-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"big.avi\"\r\n"
            "Content-Type: video/x-msvideo\r\n\r\n").encode()
    chunk, chunks = b"\0" * 65536, 256  # 16 MiB offered
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        if read == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        if read <= chunks + 1:
            return {"type": "http.request", "body": chunk, "more_body": True}
        return {"type": "http.request", "body": f"\r\n--{boundary}--\r\n".encode(), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    app = create_app(make_settings(tmp_path, tiny_model, max_upload_mb=0.5))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/identify", "raw_path": b"/identify", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app}
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert start["status"] == 413 and body["error"] == "upload_too_large"
    limit_chunks = (524288 + FORM_OVERHEAD_BYTES) // len(chunk)
    assert read <= limit_chunks + 3, f"read {read} chunks; the limit is {limit_chunks}"


def test_unauthenticated_upload_is_refused_before_it_is_read(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake, api_keys="key-a", max_upload_mb=0.01) as client:
        response = client.post("/identify", files={"video": ("big.avi", b"\0" * 3_000_000)},
                               headers={"X-API-Key": "nope"})
    assert response.status_code == 401  # not 413: the body was never parsed

"""service/middleware.py RequestIdMiddleware: every answer carries an X-Request-ID; an error nobody
handled is answered 500 with that id in the header and the body, and logged exactly once with it."""

from __future__ import annotations

import logging

from tests.service.conftest import clip, error_of, serve


class ExplodingPipeline:
    model_id = None
    calls = 0

    def process(self, source, overrides=None):
        self.calls += 1
        raise RuntimeError("a bug deep in the pipeline")


def test_every_answer_has_a_fresh_request_id(client):
    seen = set()
    for method, path in (("get", "/healthz"), ("get", "/subjects"), ("get", "/nowhere"), ("get", "/subjects/x")):
        response = client.request(method, path)
        request_id = response.headers["X-Request-ID"]
        assert len(request_id) == 32 and request_id not in seen
        seen.add(request_id)
    # A client cannot choose it (audit entries rely on it being the server's).
    assert client.get("/healthz", headers={"X-Request-ID": "forged"}).headers["X-Request-ID"] != "forged"


def test_an_unhandled_error_is_500_with_the_id_and_logged_once(tmp_path, tiny_model, caplog):
    pipeline = ExplodingPipeline()
    with caplog.at_level(logging.DEBUG), serve(tmp_path, tiny_model, pipeline) as client:
        response = client.post("/identify", files={"video": clip("a")})
    assert response.status_code == 500 and error_of(response) == "internal_error"
    request_id = response.headers["X-Request-ID"]
    assert response.json()["details"] == {"request_id": request_id} and request_id in response.json()["message"]
    assert "a bug deep" not in response.text  # no internals in the answer
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert request_id in logged[0].getMessage() and "RuntimeError" in logged[0].exc_text

"""service/errors.py: the one map from error type to HTTP status, and the JSON error body."""

from __future__ import annotations

import pytest

from gallery import (
    GalleryClosedError,
    GalleryError,
    InvalidInputError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from service.errors import STATUS, status_of
from service.pipeline import errors as pipeline_errors
from service.pipeline.errors import (
    ClipTooLongError,
    InvalidVideoError,
    ModelNotFoundError,
    NoPersonError,
    PipelineError,
    TooFewFramesError,
)
from tests.service.conftest import clip, error_of, gallery_sequences


@pytest.mark.parametrize(("error", "status"), [
    (InvalidVideoError("not a video"), 415),
    (ClipTooLongError("too long"), 413),
    (NoPersonError("nobody"), 422),
    (TooFewFramesError("short"), 422),
    (ModelNotFoundError("missing"), 503),
    (PipelineError("other"), 422),
    (SubjectNotFoundError("a", "default"), 404),
    (SubjectExistsError("a", "default"), 409),
    (GalleryClosedError(), 503),
    (ValueError("a bug"), 500),
])
def test_each_error_type_has_one_status(error, status):
    assert status_of(error) == status


def test_every_typed_error_of_the_parts_is_mapped():
    pipeline = [c for c in vars(pipeline_errors).values() if isinstance(c, type) and issubclass(c, PipelineError)]
    gallery = [GalleryError, InvalidInputError, SubjectNotFoundError, SequenceNotFoundError, SubjectExistsError,
               ModelMismatchError, GalleryClosedError]
    assert set(pipeline + gallery) <= set(STATUS)
    # The parts know nothing of HTTP: the status lives only in the map.
    assert not any(hasattr(c, "http_status") for c in pipeline + gallery)


def test_unknown_route_is_json_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and error_of(response) == "not_found"


@pytest.mark.parametrize("error", ["no_person", "too_few_frames"])
def test_pipeline_errors_are_422_and_change_nothing(client, error):
    client.post("/enroll", data={"subject_id": "keep"}, files={"video": clip("keep")})
    for route in ("/enroll", "/identify"):
        response = client.post(route, data={"subject_id": "new"}, files={"video": clip(error=error)})
        assert response.status_code == 422 and error_of(response) == error
    assert [s["subject_id"] for s in client.get("/subjects").json()["subjects"]] == ["keep"]
    assert gallery_sequences(client) == 1


def test_model_mismatch_is_409_with_the_fix(client, fake):
    client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a")})
    fake.model_id = "fake-model-2"
    for route in ("/identify", "/enroll"):
        response = client.post(route, data={"subject_id": "b"}, files={"video": clip("a")})
        assert response.status_code == 409 and error_of(response) == "model_mismatch"
        assert "re-embed" in response.json()["message"]
    assert gallery_sequences(client) == 1

"""POST /identify: top-k subjects and the open-set decision for every person track (fake pipeline)."""

from __future__ import annotations

import pytest

from tests.service.conftest import clip, error_of, serve


def test_identify_names_enrolled_people_and_leaves_strangers_unknown(client):
    client.post("/enroll", data={"subject_id": "alice", "display_name": "Alice A."}, files={"video": clip("alice")})
    assert client.post("/enroll", data={"subject_id": "bob"}, files={"video": clip("bob")}).status_code == 201
    answer = client.post("/identify", files={"video": clip("alice", "carol")})
    assert answer.status_code == 200, answer.text
    tracks = answer.json()["tracks"]
    assert len(tracks) == 2
    alice, carol = tracks
    assert alice["subject_id"] == "alice" and not alice["unknown"] and alice["display_name"] == "Alice A."
    assert alice["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert alice["candidates"][0]["subject_id"] == "alice" and len(alice["candidates"]) == 2
    assert carol["unknown"] and carol["subject_id"] is None  # random vectors in 32-D: far below the threshold
    assert alice["track"]["frame_indices"][:2] == [10, 11] and len(alice["track"]["boxes"]) == 20
    assert {"decode", "segment", "search", "queue", "request"} <= set(answer.json()["timings_ms"])


def test_identify_top_k_and_threshold_fields(client):
    for name in ("a", "b", "c"):
        client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
    answer = client.post("/identify", data={"top_k": "2", "threshold": "1.0"}, files={"video": clip("b")}).json()
    assert answer["top_k"] == 2 and answer["threshold"] == 1.0
    track = answer["tracks"][0]
    assert len(track["candidates"]) == 2 and track["candidates"][0]["subject_id"] == "b"
    # similarity 1.0 (float32) may land a hair under a threshold of exactly 1.0: either way it is consistent
    assert track["unknown"] == (track["similarity"] < 1.0)
    assert client.post("/identify", data={"top_k": "0"}, files={"video": clip("b")}).status_code == 422


def test_identify_defaults_come_from_the_gallery_settings(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake, top_k=1, unknown_threshold=0.25) as client:
        for name in ("a", "b"):
            client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
        answer = client.post("/identify", files={"video": clip("a")}).json()
    assert answer["top_k"] == 1 and answer["threshold"] == 0.25 and len(answer["tracks"][0]["candidates"]) == 1


def calibrated_copy(model, tmp_path, threshold: float):
    """The tiny model with an open_set_threshold in its contract metadata, as `gaitid calibrate
    --write-threshold` leaves it."""
    import onnx

    from gaitid.contract import read_metadata, write_metadata

    metadata = read_metadata(model)
    metadata.open_set_threshold = threshold
    proto = onnx.load(str(model))
    write_metadata(proto, metadata)
    path = tmp_path / "calibrated.onnx"
    onnx.save(proto, str(path))
    return path


def test_default_threshold_is_the_models_calibrated_one_unless_set(tmp_path, tiny_model, fake):
    model = calibrated_copy(tiny_model, tmp_path, 0.375)
    with serve(tmp_path / "a", model, fake) as client:
        client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a")})
        assert client.post("/identify", files={"video": clip("a")}).json()["threshold"] == 0.375
        ready = {c["name"]: c for c in client.get("/readyz").json()["checks"]}
        assert "0.375" in ready["threshold"]["detail"] and "calibration" in ready["threshold"]["detail"]
    with serve(tmp_path / "b", model, fake, unknown_threshold=0.125) as client:  # the setting wins
        client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a")})
        assert client.post("/identify", files={"video": clip("a")}).json()["threshold"] == 0.125
    with serve(tmp_path / "c", tiny_model, fake) as client:  # never calibrated: a stated guess
        from service.settings import UNCALIBRATED_THRESHOLD

        client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a")})
        assert client.post("/identify", files={"video": clip("a")}).json()["threshold"] == UNCALIBRATED_THRESHOLD
        detail = {c["name"]: c for c in client.get("/readyz").json()["checks"]}["threshold"]["detail"]
        assert "--write-threshold" in detail


def test_identify_on_empty_gallery_answers_unknown(client):
    answer = client.post("/identify", files={"video": clip("x")}).json()
    assert answer["tracks"][0]["unknown"] and answer["tracks"][0]["candidates"] == []
    assert answer["tracks"][0]["similarity"] is None


def test_missing_video_part_is_invalid_request(client):
    response = client.post("/identify", data={"top_k": "3"})
    assert response.status_code == 422 and error_of(response) == "invalid_request"
    assert "video" in response.json()["message"]

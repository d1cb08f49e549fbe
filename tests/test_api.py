"""The HTTP API, route by route: enroll, identify, subjects, health, metrics; errors, limits, auth.

Most tests run the real app (real gallery, real settings) with either
- a fake clip pipeline (dependency override) whose "video" is a JSON description of the tracks it
  should report: fast, and lets a test pick any number of tracks or any pipeline error; or
- the real pipeline (background subtraction + a tiny ONNX embedding model these tests build) on
  synthetic walking clips made with PyAV, and on the CASIA-B clips in ../shared/data when present.
The tiny model is random: tests assert structure and plumbing, never that it recognises anyone.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import av
import httpx
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from gallery import Gallery
from service.app import FORM_OVERHEAD_BYTES, create_app
from service.batching import EmbeddingBatcher
from service.deps import get_pipeline, match_api_key, namespace_for_key
from service.pipeline.errors import NoPersonError, TooFewFramesError
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence
from service.settings import Settings

from .conftest import REPO, VIDEOS

CASIA_VIDEOS = VIDEOS / "casia-b"
EMBED_C, EMBED_P = 8, 4


# -- a tiny real ONNX embedding model with the gaitid metadata contract ------------------------------
def build_tiny_embedding_model(path: Path, seed: int = 0) -> Path:
    """(N, T, 64, 44) silhouettes -> mean over time -> fixed random projection -> (N, C, P)."""
    weights = np.random.default_rng(seed).standard_normal((64 * 44, EMBED_C * EMBED_P)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["sils"], ["mean"], axes=[1], keepdims=0),
            helper.make_node("Reshape", ["mean", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["projected"]),
            helper.make_node("Reshape", ["projected", "out_shape"], ["embedding"]),
        ],
        "tiny_gait",
        [helper.make_tensor_value_info("sils", TensorProto.FLOAT, ["batch", "frames", 64, 44])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED_C, EMBED_P])],
        [
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([0, EMBED_C, EMBED_P], np.int64), "out_shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {"architecture": "tiny-test", "variant": "silhouette", "inputs": ["sils"],
                "embedding_channels": EMBED_C, "embedding_parts": EMBED_P}
    helper.set_model_props(model, {"gaitid": json.dumps(metadata)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_embedding_model(tmp_path_factory.mktemp("models") / "tiny-gait.onnx")


# -- synthetic walking clips -------------------------------------------------------------------------
def walking_clip(frames: int = 40, people: int = 1, fps: int = 25, size: tuple[int, int] = (320, 240)) -> bytes:
    """An AVI of `people` coloured figures with swinging legs walking right over a noisy still
    background (people=0: the empty scene). Background subtraction finds one track per figure."""
    width, height = size
    colours = [(230, 60, 40), (40, 200, 60), (240, 240, 90)]
    background = np.random.default_rng(0).integers(90, 110, (height, width, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = background.copy()
            for p in range(people):
                x = int(10 + p * (width // people) + 60 * t / max(frames - 1, 1))
                image[40:140, x:x + 30] = colours[p]
                swing = int(8 * np.sin(t / 3 + p))
                image[140:190, max(0, x + 3 + swing):x + 13 + swing] = (20, 20, 160)
                image[140:190, max(0, x + 17 - swing):x + 27 - swing] = (20, 20, 160)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def one_walker() -> bytes:
    return walking_clip(people=1)


# -- a fake pipeline: the "video" is JSON naming the tracks to report --------------------------------
class FakePipeline:
    """process(file) reads {"tracks": [{"seed": "alice", "frames": 20}, ...], "error": null}.

    Each track's embedding is a fixed function of its seed, so the same seed is the same person.
    `gate`, when set, makes process() wait for it (to hold a request inside the pipeline).
    """

    def __init__(self, model_id: str = "fake-model-1"):
        self.model_id = model_id
        self.gate: threading.Event | None = None
        self.delay_s = 0.0
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def process(self, source) -> ClipResult:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                assert self.gate.wait(10), "test gate never opened"
            time.sleep(self.delay_s)
            return self._result(json.loads(source.read()))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _result(self, spec: dict) -> ClipResult:
        errors = {"no_person": NoPersonError("Nobody was found walking in the clip."),
                  "too_few_frames": TooFewFramesError("A person was followed for only 3 frames.", frames=3)}
        if spec.get("error"):
            raise errors[spec["error"]]
        sequences, embeddings = [], {}
        for number, track in enumerate(spec["tracks"], start=1):
            frames = int(track.get("frames", 20))
            start = 10 * number
            sequences.append(AlignedSequence(
                track_id=number, silhouettes=np.full((frames, 64, 44), 255, np.uint8), depth=None,
                frame_indices=np.arange(start, start + frames, dtype=np.int64),
                boxes=np.tile(np.array([[10.0 * number, 20.0, 10.0 * number + 30, 120.0]], np.float32), (frames, 1)),
                timings={"align": 0.001, "embed": 0.002},
            ))
            seed = int.from_bytes(str(track["seed"]).encode()[:8].ljust(8, b"\0"), "little")
            embeddings[number] = np.random.default_rng(seed).standard_normal((EMBED_C, EMBED_P)).astype(np.float32)
        return ClipResult(sequences=sequences, embeddings=embeddings,
                          timings={"decode": 0.01, "segment": 0.02, "track": 0.003, "align": 0.001, "embed": 0.002,
                                   "total": 0.04},
                          frame_count=60, fps=25.0, size=(320, 240), source_size=(320, 240), rotation=0,
                          model_id=self.model_id)


def clip(*seeds: str, frames: int = 20, error: str | None = None) -> tuple[str, bytes, str]:
    body = json.dumps({"tracks": [{"seed": s, "frames": frames} for s in seeds], "error": error}).encode()
    return ("walk.avi", body, "video/x-msvideo")


def make_settings(data_dir: Path, tiny_model: Path, **overrides) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, embedding_model=tiny_model, providers="cpu", **overrides)


@contextmanager
def serve(data_dir: Path, tiny_model: Path, pipeline: FakePipeline | None = None, **overrides) -> Iterator[TestClient]:
    app = create_app(make_settings(data_dir, tiny_model, **overrides))
    if pipeline is not None:
        app.dependency_overrides[get_pipeline] = lambda: pipeline
    with TestClient(app) as client:
        yield client


def gallery_sequences(client: TestClient, namespace: str = "default") -> int:
    return client.app.state.gaitid.gallery.status(namespace).sequences


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error", "message", "details"}, body
    assert body["message"], "every error says what went wrong"
    return body["error"]


@pytest.fixture
def fake() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def client(tmp_path, tiny_model, fake) -> Iterator[TestClient]:
    with serve(tmp_path / "data", tiny_model, fake) as test_client:
        yield test_client


# == health, readiness, docs, metrics ===============================================================
def test_healthz_and_openapi(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    for path in ("/enroll", "/identify", "/subjects", "/subjects/{subject_id}", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert client.get("/docs").status_code == 200


def test_readyz_ready_with_model_and_bgsub_fallback(tmp_path, tiny_model):
    with serve(tmp_path, tiny_model) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert set(checks) == {"embedding_model", "segmenter", "gallery"}
    assert all(c["ok"] for c in checks.values())
    assert "background subtraction" in checks["segmenter"]["detail"]
    assert "gaitid models fetch" in checks["segmenter"]["detail"]  # how to get the better segmenter


def test_readyz_names_missing_embedding_model_and_fix(tmp_path):
    missing = tmp_path / "nope.onnx"
    with serve(tmp_path, missing) as client:
        ready = client.get("/readyz")
        identify = client.post("/identify", files={"video": ("a.avi", b"x" * 100)})
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    assert ready.status_code == 503
    failed = [c for c in ready.json()["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["embedding_model"]
    assert str(missing) in failed[0]["detail"] and "gaitid export" in failed[0]["fix"]
    assert identify.status_code == 503 and error_of(identify) == "not_ready"


def test_readyz_names_missing_yolo_model_when_asked_for(tmp_path, tiny_model):
    with serve(tmp_path, tiny_model, segmenter="yolo") as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    failed = {c["name"]: c for c in ready.json()["checks"] if not c["ok"]}
    assert set(failed) == {"segmenter"}
    assert "yolov8n-seg.onnx" in failed["segmenter"]["detail"] and "gaitid models fetch" in failed["segmenter"]["fix"]


def test_readyz_reports_embedding_model_without_metadata(tmp_path):
    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(build_tiny_embedding_model(tmp_path / "tiny.onnx")))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    with serve(tmp_path, bare) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    failed = [c for c in ready.json()["checks"] if not c["ok"]]
    assert failed[0]["name"] == "embedding_model" and "metadata" in failed[0]["detail"]


def test_metrics_count_routes_stages_and_gallery(client):
    client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")})
    client.get("/subjects/alice")
    client.get("/subjects/nobody")
    text = client.get("/metrics").text
    assert 'gaitid_http_requests_total{method="POST",route="/enroll",status="201"} 1.0' in text
    # Route templates, not raw paths: one series for every subject id.
    assert 'route="/subjects/{subject_id:path}",status="200"} 1.0' in text
    assert 'route="/subjects/{subject_id:path}",status="404"} 1.0' in text
    assert 'gaitid_pipeline_stage_seconds_count{stage="segment"} 1.0' in text
    assert 'gaitid_gallery_subjects{namespace="default"} 1.0' in text
    assert "gaitid_http_request_duration_seconds_bucket" in text


# == enroll / identify / subjects with the fake pipeline =============================================
def test_enroll_identify_list_get_delete(client, fake):
    enrolled = client.post("/enroll", data={"subject_id": "alice", "display_name": "Alice A.",
                                            "metadata": '{"team": "blue"}'}, files={"video": clip("alice")})
    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.json()
    assert body["subject_id"] == "alice" and body["display_name"] == "Alice A." and body["created"] is True
    assert body["track"]["track_id"] == 1 and body["candidate_tracks"] == 1 and body["model_id"] == fake.model_id
    assert body["sequence_count"] == 1 and body["track"]["frames"] == 20
    assert client.post("/enroll", data={"subject_id": "bob"}, files={"video": clip("bob")}).status_code == 201

    answer = client.post("/identify", files={"video": clip("alice", "carol")})
    assert answer.status_code == 200, answer.text
    tracks = answer.json()["tracks"]
    assert len(tracks) == 2
    alice, carol = tracks
    assert alice["subject_id"] == "alice" and not alice["unknown"] and alice["display_name"] == "Alice A."
    assert alice["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert alice["candidates"][0]["subject_id"] == "alice" and len(alice["candidates"]) == 2
    assert carol["unknown"] and carol["subject_id"] is None  # random vectors in 32-D: far below 0.5
    assert alice["track"]["frame_indices"][:2] == [10, 11] and len(alice["track"]["boxes"]) == 20
    assert {"decode", "segment", "search", "queue", "request"} <= set(answer.json()["timings_ms"])

    listing = client.get("/subjects").json()
    assert listing["total"] == 2 and [s["subject_id"] for s in listing["subjects"]] == ["alice", "bob"]
    detail = client.get("/subjects/alice").json()
    assert detail["metadata"] == {"team": "blue"} and len(detail["sequences"]) == 1
    assert detail["sequences"][0]["metadata"]["track_id"] == 1

    deleted = client.delete("/subjects/alice")
    assert deleted.status_code == 200 and deleted.json() == {"subject_id": "alice", "deleted_sequences": 1}
    assert client.get("/subjects/alice").status_code == 404
    assert client.delete("/subjects/alice").status_code == 404
    after = client.post("/identify", files={"video": clip("alice")}).json()["tracks"][0]
    assert after["subject_id"] != "alice" and all(c["subject_id"] != "alice" for c in after["candidates"])


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


def test_identify_on_empty_gallery_answers_unknown(client):
    answer = client.post("/identify", files={"video": clip("x")}).json()
    assert answer["tracks"][0]["unknown"] and answer["tracks"][0]["candidates"] == []
    assert answer["tracks"][0]["similarity"] is None


def test_enroll_append_replace_and_error(client):
    assert client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a1")}).json()["sequence_count"] == 1
    appended = client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a2")}).json()
    assert appended["created"] is False and appended["sequence_count"] == 2
    replaced = client.post("/enroll", data={"subject_id": "a", "if_exists": "replace"}, files={"video": clip("a3")})
    assert replaced.json()["sequence_count"] == 1 and len(replaced.json()["replaced_sequence_ids"]) == 2
    refused = client.post("/enroll", data={"subject_id": "a", "if_exists": "error"}, files={"video": clip("a4")})
    assert refused.status_code == 409 and error_of(refused) == "subject_exists"
    assert gallery_sequences(client) == 1


def test_enroll_several_tracks_needs_a_choice(client):
    response = client.post("/enroll", data={"subject_id": "pair"}, files={"video": clip("p", "q", "r")})
    assert response.status_code == 409 and error_of(response) == "multiple_tracks"
    tracks = response.json()["details"]["tracks"]
    assert [t["track_id"] for t in tracks] == [1, 2, 3]
    assert set(tracks[0]) == {"track_id", "frames", "first_frame", "last_frame", "median_box"}
    assert gallery_sequences(client) == 0  # nothing enrolled

    unknown = client.post("/enroll", data={"subject_id": "pair", "track_id": "9"}, files={"video": clip("p", "q")})
    assert unknown.status_code == 422 and error_of(unknown) == "track_not_found"
    assert gallery_sequences(client) == 0

    chosen = client.post("/enroll", data={"subject_id": "pair", "track_id": "2"}, files={"video": clip("p", "q")})
    assert chosen.status_code == 201 and chosen.json()["track"]["track_id"] == 2
    # The enrolled track is q's: identifying q finds the subject, p does not.
    tracks = client.post("/identify", files={"video": clip("q", "p")}).json()["tracks"]
    assert tracks[0]["subject_id"] == "pair" and tracks[1]["subject_id"] is None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"subject_id": "ok", "metadata": "{not json"}, "invalid_metadata"),
        ({"subject_id": "ok", "metadata": "[1, 2]"}, "invalid_metadata"),
        ({"subject_id": " padded "}, "invalid_subject_id"),
        ({"subject_id": "x" * 129}, "invalid_request"),
        ({}, "invalid_request"),
        ({"subject_id": "ok", "if_exists": "merge"}, "invalid_request"),
    ],
)
def test_enroll_rejects_bad_fields_before_running_the_pipeline(client, fake, data, code):
    response = client.post("/enroll", data=data, files={"video": clip("a")})
    assert response.status_code == 422 and error_of(response) == code
    assert fake.calls == 0 and gallery_sequences(client) == 0


def test_missing_video_part_is_invalid_request(client):
    response = client.post("/identify", data={"top_k": "3"})
    assert response.status_code == 422 and error_of(response) == "invalid_request"
    assert "video" in response.json()["message"]


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


def test_subject_ids_with_slashes_and_unicode(client):
    for subject in ("team/alice", "Zoë"):
        assert client.post("/enroll", data={"subject_id": subject}, files={"video": clip(subject)}).status_code == 201
    assert client.get("/subjects/team/alice").json()["subject_id"] == "team/alice"
    assert client.get("/subjects/Zo%C3%AB").json()["subject_id"] == "Zoë"
    assert client.delete("/subjects/team%2Falice").status_code == 200
    assert [s["subject_id"] for s in client.get("/subjects").json()["subjects"]] == ["Zoë"]


def test_subject_list_pages(client):
    for name in ("c", "a", "b"):
        client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
    page = client.get("/subjects", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and [s["subject_id"] for s in page["subjects"]] == ["b"]
    assert client.get("/subjects", params={"limit": 0}).status_code == 422


def test_unknown_route_is_json_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and error_of(response) == "not_found"


# == upload limits ====================================================================================
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


def test_video_part_just_over_limit_is_413(tmp_path, tiny_model, fake):
    """Under the body limit (limit + form overhead) but over the video limit itself."""
    with serve(tmp_path, tiny_model, fake, max_upload_mb=0.05) as client:
        response = client.post("/identify", files={"video": ("v.avi", b"\0" * 60_000)})
    assert response.status_code == 413 and error_of(response) == "upload_too_large"
    assert response.json()["details"]["size_bytes"] == 60_000 and fake.calls == 0


def test_empty_upload_is_415(client, fake):
    response = client.post("/identify", files={"video": ("empty.avi", b"")})
    assert response.status_code == 415 and error_of(response) == "invalid_video" and fake.calls == 0


# == authentication and namespaces ====================================================================
def test_api_keys_guard_every_gallery_route(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake, api_keys="key-a, key-b") as client:
        for method, path in (("get", "/subjects"), ("get", "/subjects/x"), ("delete", "/subjects/x")):
            missing = client.request(method, path)
            assert missing.status_code == 401 and error_of(missing) == "missing_api_key"
            assert missing.headers["www-authenticate"] == "X-API-Key"
            wrong = client.request(method, path, headers={"X-API-Key": "key-c"})
            assert wrong.status_code == 401 and error_of(wrong) == "invalid_api_key"
        for path in ("/enroll", "/identify"):
            wrong = client.post(path, data={"subject_id": "a"}, files={"video": clip("a")},
                                headers={"X-API-Key": "key-a "})
            assert wrong.status_code == 401 and error_of(wrong) == "invalid_api_key"
        assert fake.calls == 0
        # Health, readiness and metrics stay open (probes and scrapers carry no key).
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_unauthenticated_upload_is_refused_before_it_is_read(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake, api_keys="key-a", max_upload_mb=0.01) as client:
        response = client.post("/identify", files={"video": ("big.avi", b"\0" * 3_000_000)},
                               headers={"X-API-Key": "nope"})
    assert response.status_code == 401  # not 413: the body was never parsed


def test_each_key_has_its_own_gallery(tmp_path, tiny_model, fake):
    a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    with serve(tmp_path, tiny_model, fake, api_keys="key-a,key-b") as client:
        assert client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")},
                           headers=a).status_code == 201
        assert client.get("/subjects", headers=a).json()["total"] == 1
        assert client.get("/subjects", headers=b).json()["total"] == 0
        assert client.get("/subjects/alice", headers=b).status_code == 404
        assert client.delete("/subjects/alice", headers=b).status_code == 404
        seen_by_b = client.post("/identify", files={"video": clip("alice")}, headers=b).json()["tracks"][0]
        assert seen_by_b["unknown"] and seen_by_b["candidates"] == []
        # b may use the same subject id for another person without touching a's
        client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("other")}, headers=b)
        seen_by_a = client.post("/identify", files={"video": clip("alice")}, headers=a).json()["tracks"][0]
        assert seen_by_a["subject_id"] == "alice" and seen_by_a["similarity"] == pytest.approx(1.0, abs=1e-5)
        namespaces = set(client.app.state.gaitid.gallery.namespaces())
    assert namespaces == {namespace_for_key(b"key-a"), namespace_for_key(b"key-b")}
    assert "key-a" not in "".join(namespaces)  # the key itself is never stored


def test_key_matching_checks_every_key():
    keys = (b"alpha", b"beta", b"gamma")
    assert match_api_key(b"beta", keys) == b"beta"
    assert match_api_key(b"bet", keys) is None and match_api_key(b"", keys) is None
    assert namespace_for_key(b"alpha") == namespace_for_key(b"alpha") != namespace_for_key(b"beta")
    assert len(namespace_for_key(b"alpha")) == 16


# == concurrency: the event loop stays free, clip concurrency is bounded ================================
def test_pipeline_work_does_not_block_the_event_loop(client, fake):
    fake.gate = threading.Event()
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(
        client.post("/identify", files={"video": clip("a")}).status_code))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while fake.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.in_flight == 1, "the identify request never reached the pipeline"
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        assert client.get("/subjects").status_code == 200
        assert time.perf_counter() - started < 1.0  # answered while the pipeline is still busy
        assert fake.in_flight == 1
    finally:
        fake.gate.set()
        worker.join(10)
    assert results == [200]


def test_concurrent_clips_are_bounded(tmp_path, tiny_model, fake):
    fake.delay_s = 0.2
    with serve(tmp_path, tiny_model, fake, max_concurrent_clips=1) as client:
        threads = [threading.Thread(target=client.post, args=("/identify",), kwargs={"files": {"video": clip("a")}})
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert fake.calls == 3 and fake.max_in_flight == 1


# == cross-request batching ==============================================================================
class RecordingEmbedder:
    """Stands in for GaitEmbedder: embedding = mean silhouette value per sequence, records calls."""

    model_id = "recording"
    metadata = None
    needs_depth = False

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def embed_batch(self, silhouettes, depth=None):
        assert len({len(s) for s in silhouettes}) == 1, "a batch mixed sequence lengths"
        with self._lock:
            self.batches.append([len(s) for s in silhouettes])
        time.sleep(self.delay_s)
        return np.stack([np.full((2, 3), float(s.mean()), np.float32) for s in silhouettes])


def test_batcher_groups_concurrent_equal_length_requests():
    inner = RecordingEmbedder(delay_s=0.01)
    batcher = EmbeddingBatcher(inner, max_batch=8, max_wait_ms=200)
    outputs: dict[int, np.ndarray] = {}

    def call(value: int) -> None:
        outputs[value] = batcher.embed(np.full((30, 64, 44), value, np.uint8))

    threads = [threading.Thread(target=call, args=(v,)) for v in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    batcher.close()
    assert sorted(outputs) == list(range(6))
    for value, embedding in outputs.items():  # each caller gets its own sequence's answer
        assert embedding.shape == (2, 3) and np.all(embedding == value)
    assert sum(len(b) for b in inner.batches) == 6
    assert len(inner.batches) < 6  # at least one network call served several requests


def test_batcher_never_mixes_lengths_and_passes_errors_on():
    inner = RecordingEmbedder()
    batcher = EmbeddingBatcher(inner, max_batch=8, max_wait_ms=100)
    lengths = [20, 30, 20, 30, 25]
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i, n=n: results.__setitem__(i, batcher.embed(
        np.full((n, 64, 44), i, np.uint8)))) for i, n in enumerate(lengths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(np.all(results[i] == i) for i in range(len(lengths)))

    def failing(silhouettes, depth=None):
        raise RuntimeError("network failed")

    inner.embed_batch = failing
    with pytest.raises(RuntimeError, match="network failed"):
        batcher.embed(np.zeros((20, 64, 44), np.uint8))
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.embed(np.zeros((20, 64, 44), np.uint8))


def test_service_with_batching_gives_the_same_answers(tmp_path, tiny_model, one_walker):
    answers = []
    for batching in (False, True):
        with serve(tmp_path / f"b{batching}", tiny_model, embed_batching=batching, embed_batch_wait_ms=1) as client:
            client.post("/enroll", data={"subject_id": "w"}, files={"video": ("w.avi", one_walker)})
            answers.append(client.post("/identify", files={"video": ("w.avi", one_walker)}).json())
            if batching:
                assert "gaitid_embedding_batch_size_count" in client.get("/metrics").text
    assert answers[0]["tracks"][0]["candidates"] == answers[1]["tracks"][0]["candidates"]


# == the real pipeline on synthetic clips (no shared data needed) ========================================
def test_real_pipeline_enroll_and_identify_a_synthetic_walker(tmp_path, tiny_model, one_walker):
    with serve(tmp_path, tiny_model) as client:
        enrolled = client.post("/enroll", data={"subject_id": "walker"}, files={"video": ("w.avi", one_walker)})
        assert enrolled.status_code == 201, enrolled.text
        answer = client.post("/identify", files={"video": ("w.avi", one_walker)})
    assert answer.status_code == 200
    body = answer.json()
    assert body["video"]["size"] == [320, 240] and body["video"]["frames"] == 40
    track = body["tracks"][0]
    # Same clip, deterministic pipeline and model: the enrolled sequence itself is found.
    assert track["candidates"][0]["sequence_id"] == enrolled.json()["sequence_id"]
    assert track["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert {"decode", "segment", "track", "align", "embed", "search"} <= set(body["timings_ms"])


def test_real_pipeline_two_walkers_need_a_track_choice(tmp_path, tiny_model):
    two = walking_clip(people=2)
    with serve(tmp_path, tiny_model) as client:
        response = client.post("/enroll", data={"subject_id": "x"}, files={"video": ("two.avi", two)})
        assert response.status_code == 409, response.text
        tracks = response.json()["details"]["tracks"]
        assert len(tracks) == 2
        chosen = client.post("/enroll", data={"subject_id": "x", "track_id": str(tracks[1]["track_id"])},
                             files={"video": ("two.avi", two)})
        assert chosen.status_code == 201 and chosen.json()["track"]["track_id"] == tracks[1]["track_id"]
        identified = client.post("/identify", files={"video": ("two.avi", two)}).json()["tracks"]
    assert len(identified) == 2  # every person gets an answer


@pytest.mark.parametrize(
    ("video", "settings", "status", "code"),
    [
        (b"this is a text file, not a video" * 10, {}, 415, "invalid_video"),
        ("static", {}, 422, "no_person"),
        ("short", {}, 422, "too_few_frames"),
        ("long", {"max_duration_s": 2.0}, 413, "clip_too_long"),
    ],
)
def test_real_pipeline_errors(tmp_path, tiny_model, video, settings, status, code):
    videos = {"static": lambda: walking_clip(people=0), "short": lambda: walking_clip(frames=8),
              "long": lambda: walking_clip(frames=40, fps=10)}
    payload = videos[video]() if isinstance(video, str) else video
    with serve(tmp_path, tiny_model, **settings) as client:
        for route in ("/enroll", "/identify"):
            response = client.post(route, data={"subject_id": "s"}, files={"video": ("v.avi", payload)})
            assert response.status_code == status, response.text
            assert error_of(response) == code
        assert gallery_sequences(client) == 0


# == persistence: restart, and a crash in the middle of an enrollment =====================================
def test_gallery_survives_a_restart(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake) as client:
        for name in ("a", "b"):
            client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
    with serve(tmp_path, tiny_model, fake) as client:
        assert client.get("/subjects").json()["total"] == 2
        assert client.post("/identify", files={"video": clip("b")}).json()["tracks"][0]["subject_id"] == "b"


_CRASHING_ENROLL = """
import os, signal, sys
from fastapi.testclient import TestClient
import gallery.store
from service.app import create_app
from service.settings import Settings

point, data_dir, model, video = sys.argv[1:5]
gallery.store.FAULT_HOOK = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == point else None
settings = Settings(_env_file=None, data_dir=data_dir, embedding_model=model, providers="cpu")
with TestClient(create_app(settings)) as client, open(video, "rb") as fh:
    response = client.post("/enroll", data={"subject_id": "victim"}, files={"video": ("walk.avi", fh)})
print("not killed:", response.status_code, response.text)
"""


@pytest.mark.parametrize(("point", "victim_kept"), [("enroll:written", False), ("enroll:committed", True)])
def test_killed_during_enrollment_leaves_a_consistent_gallery(tmp_path, tiny_model, one_walker, point, victim_kept):
    """SIGKILL the serving process inside an enrollment: before its COMMIT the enrollment is gone,
    after it the enrollment is whole (the index is rebuilt from the database on start)."""
    data_dir = tmp_path / "data"
    video = tmp_path / "walk.avi"
    video.write_bytes(one_walker)
    keeper_clip = walking_clip(people=1, frames=36)
    with serve(data_dir, tiny_model) as client:
        assert client.post("/enroll", data={"subject_id": "keeper"},
                           files={"video": ("k.avi", keeper_clip)}).status_code == 201
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", _CRASHING_ENROLL, point, str(data_dir), str(tiny_model), str(video)],
                           cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stdout + child.stderr

    with serve(data_dir, tiny_model) as client:
        subjects = [s["subject_id"] for s in client.get("/subjects").json()["subjects"]]
        assert subjects == (["keeper", "victim"] if victim_kept else ["keeper"])
        victim = client.post("/identify", files={"video": ("w.avi", one_walker)}).json()["tracks"][0]
        keeper = client.post("/identify", files={"video": ("k.avi", keeper_clip)}).json()["tracks"][0]
    assert keeper["candidates"][0]["subject_id"] == "keeper"
    assert keeper["candidates"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    if victim_kept:
        assert victim["candidates"][0]["subject_id"] == "victim"
        assert victim["candidates"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    else:
        assert all(c["subject_id"] != "victim" for c in victim["candidates"])
    with Gallery(data_dir / "gallery") as gallery:
        status = gallery.status()
        assert status.sequences == len(subjects) and status.index.vectors == len(subjects)


# == the run command: `gaitid serve` (uvicorn factory) ====================================================
def test_gaitid_serve_starts_the_service(tmp_path, tiny_model):
    """What `make serve` runs, as a real server process on a free port: ready on CPU with bgsub."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAITID_")}
    env.update({"GAITID_DATA_DIR": str(tmp_path / "data"), "GAITID_EMBEDDING_MODEL": str(tiny_model),
                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None, server.stdout.read().decode() if server.poll() is not None else "no answer"
        assert ready.status_code == 200, ready.text
        assert {c["name"] for c in ready.json()["checks"]} == {"embedding_model", "segmenter", "gallery"}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["status"] == "ok"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    assert (tmp_path / "data" / "gallery" / "gallery.db").exists()  # the embedded SQLite gallery


# == end to end on real CASIA-B footage ===================================================================
@pytest.mark.data
def test_end_to_end_on_casia_b_clips(tmp_path, tiny_model, videos_dir):
    """Enroll 002 and 003 from their clips, identify each clip, restart, identify again.

    The model is random: this checks the answers' structure and that everything is kept across a
    restart, not that anyone is recognised (the trained model's tests do that)."""
    casia = videos_dir / "casia-b"
    clips = {s: (casia / f"{s}-nm-01-090.avi").read_bytes() for s in ("002", "003")}
    settings = {"background_clip": casia / "001-bkgrd-090.avi"}
    first: dict[str, dict] = {}
    with serve(tmp_path, tiny_model, **settings) as client:
        for subject, video in clips.items():
            enrolled = client.post("/enroll", data={"subject_id": subject, "metadata": '{"source": "casia-b"}'},
                                   files={"video": (f"{subject}.avi", video)})
            assert enrolled.status_code == 201, enrolled.text
        for subject, video in clips.items():
            answer = client.post("/identify", files={"video": (f"{subject}.avi", video)})
            assert answer.status_code == 200, answer.text
            first[subject] = answer.json()
    for subject, answer in first.items():
        assert answer["video"]["size"] == [320, 240] and answer["video"]["fps"] == pytest.approx(25.0)
        assert answer["tracks"], "the walker was found"
        for track in answer["tracks"]:
            indices = track["track"]["frame_indices"]
            assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] < 200
            assert len(track["track"]["boxes"]) == len(indices) >= 15
            for x1, y1, x2, y2 in track["track"]["boxes"]:
                assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
            assert 1 <= len(track["candidates"]) <= 2
            assert {c["subject_id"] for c in track["candidates"]} <= {"002", "003"}
            assert track["unknown"] == (track["similarity"] < answer["threshold"])
        assert {"decode", "segment", "track", "align", "embed", "search", "request"} <= set(answer["timings_ms"])
    with serve(tmp_path, tiny_model, **settings) as client:  # a restart over the same data dir
        listing = client.get("/subjects").json()
        assert [s["subject_id"] for s in listing["subjects"]] == ["002", "003"]
        assert client.get("/subjects/002").json()["metadata"] == {"source": "casia-b"}
        again = client.post("/identify", files={"video": ("002.avi", clips["002"])}).json()
    assert again["tracks"][0]["candidates"] == first["002"]["tracks"][0]["candidates"]

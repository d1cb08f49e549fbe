"""GET /healthz, /readyz (what is loaded, what is missing and its fix), /metrics, and the OpenAPI docs."""

from __future__ import annotations

import json

import onnx

from gaitid.contract import METADATA_KEY
from tests.conftest import build_tiny_embedding_model
from tests.service.conftest import clip, error_of, serve


def test_healthz_and_openapi(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    for path in ("/enroll", "/identify", "/subjects", "/subjects/{subject_id}", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    # Without keys the server needs none, and says so (tests/service/test_openapi.py: with keys).
    assert "securitySchemes" not in schema["components"]
    assert client.get("/docs").status_code == 200


def test_readyz_ready_with_model_and_bgsub_fallback(tmp_path, tiny_model):
    with serve(tmp_path, tiny_model) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert set(checks) == {"embedding_model", "segmenter", "threshold", "gallery", "api_keys", "subject_ids"}
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


def test_readyz_names_missing_depth_model_for_a_depth_embedder(tmp_path, tiny_model_factory):
    with serve(tmp_path, tiny_model_factory(("sils", "depths"))) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    failed = {c["name"]: c for c in ready.json()["checks"] if not c["ok"]}
    assert set(failed) == {"depth_model"}
    assert "depth-anything-v2-small.onnx" in failed["depth_model"]["detail"]
    assert "gaitid models" in failed["depth_model"]["fix"]


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


def test_readyz_asks_to_upgrade_a_contract_v1_model(tmp_path):
    """A model exported before the uint8 contract is refused with the command that upgrades it."""
    old = tmp_path / "old.onnx"
    model = onnx.load(str(build_tiny_embedding_model(tmp_path / "tiny.onnx")))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    metadata.pop("contract_version")
    entry.value = json.dumps(metadata)
    onnx.save(model, str(old))
    with serve(tmp_path, old) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    failed = [c for c in ready.json()["checks"] if not c["ok"]]
    assert failed[0]["name"] == "embedding_model" and "gaitid models upgrade" in failed[0]["detail"]


def test_metrics_count_routes_stages_and_gallery(client):
    client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")})
    client.get("/subjects/alice")
    client.get("/subjects/nobody")
    text = client.get("/metrics").text
    assert 'gaitid_http_requests_total{method="POST",route="/enroll",status="201"} 1.0' in text
    # Route templates, not raw paths: one series for every subject id.
    assert 'route="/subjects/{subject_id}",status="200"} 1.0' in text
    assert 'route="/subjects/{subject_id}",status="404"} 1.0' in text
    assert 'gaitid_pipeline_stage_seconds_count{stage="segment"} 1.0' in text
    assert 'gaitid_gallery_subjects{namespace="default"} 1.0' in text
    assert "gaitid_http_request_duration_seconds_bucket" in text

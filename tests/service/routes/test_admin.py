"""/admin/subject?subject_id=... and /admin/subject-id-problems: subjects stored by older versions under
ids no URL path carries stay readable and deletable by an admin (audited); start-up lists them in the
log. /gallery and /gallery/reembed: the caller's gallery and its re-embedding with the server's model."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np

from gallery import Gallery, SequenceInput
from tests.conftest import TINY_CHANNELS, TINY_PARTS
from tests.service.conftest import clip, error_of, serve

LEGACY_IDS = ["a/b/c", "..", "a\x00b", "%2e%2e"]


def plant_legacy_subjects(data_dir, model_id: str) -> None:
    """Subjects as an older version let them in: enrolled under valid ids, renamed in SQL."""
    rng = np.random.default_rng(0)
    with Gallery(data_dir / "gallery") as gallery:
        for number, _ in enumerate(LEGACY_IDS):
            gallery.enroll(f"tmp{number}", [SequenceInput(np.full((5, 64, 44), 255, np.uint8),
                                                          rng.standard_normal((TINY_CHANNELS, TINY_PARTS)))],
                           model_id=model_id)
    with sqlite3.connect(data_dir / "gallery" / "gallery.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        for number, legacy in enumerate(LEGACY_IDS):
            for table in ("subjects", "sequences"):
                conn.execute(f"UPDATE {table} SET subject_id = ? WHERE subject_id = ?", (legacy, f"tmp{number}"))


def test_legacy_ids_are_logged_at_start_and_reachable_by_admins(tmp_path, tiny_model, fake, caplog):
    data = tmp_path / "data"
    plant_legacy_subjects(data, fake.model_id)
    with caplog.at_level(logging.WARNING, logger="gaitid.service"), serve(data, tiny_model, fake) as client:
        ready = {c["name"]: c for c in client.get("/readyz").json()["checks"]}
        problems = client.get("/admin/subject-id-problems").json()["problems"]
        assert sorted(p["subject_id"] for p in problems) == sorted(LEGACY_IDS)
        assert all(p["problem"] for p in problems)
        for legacy in LEGACY_IDS:
            found = client.get("/admin/subject", params={"subject_id": legacy})
            assert found.status_code == 200 and found.json()["subject_id"] == legacy
        deleted = client.delete("/admin/subject", params={"subject_id": "a/b/c"})
        assert deleted.json() == {"subject_id": "a/b/c", "deleted_sequences": 1, "redacted_rescore_results": None}
        assert client.get("/admin/subject", params={"subject_id": "a/b/c"}).status_code == 404
        erasure = client.get("/audit", params={"subject_id": "a/b/c"}).json()["entries"][-1]
        assert erasure["action"] == "subject.deleted" and erasure["request_id"] == deleted.headers["X-Request-ID"]
        assert len(client.get("/admin/subject-id-problems").json()["problems"]) == len(LEGACY_IDS) - 1
    assert "4 stored subject ids" in ready["subject_ids"]["detail"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "4 stored subject ids break the subject-id rule" in logged and "/admin/subject?subject_id=" in logged
    for legacy in LEGACY_IDS:
        assert repr(legacy) in logged


def test_gallery_status_and_reembed_over_http(tmp_path, tiny_model, tiny_model_factory, fake):
    data = tmp_path / "data"
    with serve(data, tiny_model, fake) as client:
        for name in ("alice", "bob"):
            client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
        status = client.get("/gallery").json()
        assert (status["gallery"], status["subjects"], status["sequences"], status["model_id"]) == \
               ("default", 2, 2, fake.model_id)
        assert status["needs_reembed"] is True  # the fake pipeline's model is not the server's tiny model
        server_model = status["server_model_id"]
        report = client.post("/gallery/reembed")
        assert report.status_code == 200, report.text
        assert (report.json()["old_model_id"], report.json()["new_model_id"], report.json()["embedded"]) == \
               (fake.model_id, server_model, 2)
        assert client.get("/gallery").json()["model_id"] == server_model
        entry = client.get("/audit", params={"action": "gallery.reembedded"}).json()["entries"]
        assert len(entry) == 1 and entry[0]["request_id"] == report.headers["X-Request-ID"]
        assert entry[0]["details"] == {"old_model_id": fake.model_id, "new_model_id": server_model, "sequences": 2}
        # The fake pipeline still makes the old model's embeddings: refused before it runs.
        calls = fake.calls
        refused = client.post("/identify", files={"video": clip("alice")})
        assert refused.status_code == 409 and error_of(refused) == "model_mismatch" and fake.calls == calls


def test_audit_log_filters_and_pages_over_http(client):
    for name in ("a", "b", "c"):
        client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
    client.delete("/subjects/b")
    everything = client.get("/audit").json()
    assert everything["total"] == 4 and [e["entry_id"] for e in everything["entries"]] == sorted(
        e["entry_id"] for e in everything["entries"])
    page = client.get("/audit", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 4 and [e["subject_id"] for e in page["entries"]] == ["b", "c"]
    assert client.get("/audit", params={"action": "subject.deleted"}).json()["entries"][0]["subject_id"] == "b"
    assert client.get("/audit", params={"subject_id": "a"}).json()["total"] == 1
    assert client.get("/audit", params={"since": "2999-01-01T00:00:00Z"}).json()["total"] == 0
    assert client.get("/audit", params={"until": "2999-01-01T00:00:00"}).json()["total"] == 4
    for bad in ({"action": "subject.hacked"}, {"offset": 2**63}, {"limit": 0}, {"since": "yesterday"},
                {"until": "-2700"}, {"since": "1700000000"}):  # a number is not the documented date-time
        response = client.get("/audit", params=bad)
        assert response.status_code == 422, (bad, response.text)
    for extreme in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        assert client.get("/audit", params={"since": extreme, "until": extreme}).status_code == 200

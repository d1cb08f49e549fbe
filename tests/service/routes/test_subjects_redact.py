"""DELETE /subjects/{id} and DELETE /admin/subject with GAITID_RESCORE_STATE: the erased subject is
taken out of the re-scoring results (service.rescore.redact), the answer and the audit entry say how
many records, sightings of them answer 404, and a redaction that fails erases nothing (503)."""

from __future__ import annotations

import pytest

from service.rescore import RescoreState, read_results
from service.rescore.results import GalleryScorer, build_records, write_results
from tests.service.conftest import FakePipeline, clip, error_of, serve
from tests.service.routes.test_sightings import write_state


def write_results_of(client, job, fmt: str = "jsonl"):
    """The results `gaitid rescore` writes for the job's state, scored against the service's gallery."""
    gallery = client.app.state.gaitid.gallery
    out = job / f"results.{fmt}"
    paths = [f"/v/{sha}" for sha in ("a1", "a2", "a3", "b1")]  # as write_state processed them
    with RescoreState(job / "results.jsonl.state.sqlite") as state:
        scorer = GalleryScorer(gallery, namespace="default", top_k=5, threshold=0.9)
        write_results(out, build_records(paths, state, FakePipeline().model_id, scorer, {}), fmt)
        state.note_results(out, fmt)
    return out


def naming(path, subject_id: str) -> int:
    return sum(r["subject_id"] == subject_id or any(c["subject_id"] == subject_id for c in r["candidates"])
               for r in read_results(path))


@pytest.fixture
def job_client(tmp_path, tiny_model):
    fake = FakePipeline()
    job = tmp_path / "job"
    write_state(job / "results.jsonl.state.sqlite", fake.model_id)
    with serve(tmp_path / "data", tiny_model, fake, unknown_threshold=0.9, rescore_state=job) as client:
        for who in ("alice", "bob"):
            assert client.post("/enroll", data={"subject_id": who}, files={"video": clip(who)}).status_code == 201
        yield client, job


def test_erasure_redacts_the_results_and_says_how_many(job_client):
    client, job = job_client
    results = write_results_of(client, job)
    before = naming(results, "alice")
    assert before == 4  # her 3 videos, and bob's lists her as a candidate
    assert client.get("/subjects/alice/sightings").status_code == 200
    answer = client.delete("/subjects/alice")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"subject_id": "alice", "deleted_sequences": 1, "redacted_rescore_results": before}
    assert naming(results, "alice") == 0 and naming(results, "bob") > 0
    (entry,) = client.get("/audit", params={"subject_id": "alice", "action": "subject.deleted"}).json()["entries"]
    assert entry["details"]["rescore_redacted"] == {"records": before, "decisions": 3, "candidates": before,
                                                    "files": 1, "reports": 0}
    assert entry["details"]["erased_sequence_ids"]  # the erasure's own details are kept
    gone = client.get("/subjects/alice/sightings")  # her walks are gone: not found, not a server error
    assert gone.status_code == 404 and error_of(gone) == "subject_not_found"
    assert client.get("/subjects/bob/sightings").status_code == 200


def test_the_admin_erasure_redacts_too(job_client):
    client, job = job_client
    results = write_results_of(client, job, "csv")
    answer = client.delete("/admin/subject", params={"subject_id": "bob"})
    assert answer.status_code == 200 and answer.json()["redacted_rescore_results"] > 0
    assert naming(results, "bob") == 0 and naming(results, "alice") > 0


def test_a_failed_redaction_erases_nothing(job_client, monkeypatch):
    from service.rescore import results as results_module

    client, job = job_client
    results = write_results_of(client, job)
    old = results.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results_module.os, "replace", crash)
    answer = client.delete("/subjects/alice")
    assert answer.status_code == 503 and error_of(answer) == "redaction_failed"
    assert results.read_bytes() == old and client.get("/subjects/alice").status_code == 200  # still enrolled
    monkeypatch.undo()
    assert client.delete("/subjects/alice").json()["redacted_rescore_results"] == naming_count(old)


def naming_count(raw: bytes) -> int:
    import json

    return sum(r["subject_id"] == "alice" or any(c["subject_id"] == "alice" for c in r["candidates"])
               for r in map(json.loads, raw.decode().splitlines()))

"""GET /subjects/{id}/sightings and the archive's track thumbnails over HTTP, on a synthetic re-scoring
state (no video decoded) and subjects enrolled through the fake pipeline: filters, threshold, limit,
time order, errors, and the answer without an archive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from service.rescore import RescoreState
from service.rescore.archive import FileStat
from service.rescore.extract import FileOutcome, TrackOutcome
from service.rescore.sources import SourceFacts
from tests.conftest import TINY_CHANNELS, TINY_PARTS
from tests.service.conftest import FakePipeline, clip, error_of, serve

T0 = datetime(2024, 1, 2, 10, 0, 0)


def seed_embedding(seed: str) -> np.ndarray:
    """The fake pipeline's embedding of a walker (tests/service/conftest.py FakePipeline)."""
    number = int.from_bytes(seed.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng(number).standard_normal((TINY_CHANNELS, TINY_PARTS)).astype(np.float32)


def write_state(path, model_id: str) -> None:
    """alice at camA 10:00, camB 09:00 (earlier), camA 12:00 UTC; bob at camB 10:30; alice's 10:00 video
    also listed without a time."""
    noise = np.random.default_rng(3)
    walkers = {"a1": "alice", "a2": "alice", "a3": "alice", "b1": "bob"}
    with RescoreState(path) as state:
        for sha, who in walkers.items():
            embedding = seed_embedding(who) + 0.05 * noise.standard_normal((TINY_CHANNELS, TINY_PARTS))
            track = TrackOutcome(1, np.arange(25, 75, dtype=np.int64), np.tile(np.float32([[5, 10, 40, 110]]), (50, 1)),
                                 embedding.astype(np.float32), f"strip-{sha}".encode())
            state.save(FileOutcome(path=f"/v/{sha}", model_id=model_id, status="done", sha256=sha * 32,
                                   stat=FileStat(1, 1), tracks=[track], fps=25.0, frame_count=100, size=(320, 240)))
        state.replace_sources([
            SourceFacts("/archive/camA/10.avi", "a1" * 32, "camA", T0, "path"),
            SourceFacts("/archive/camB/09.avi", "a2" * 32, "camB", T0 - timedelta(hours=1), "path"),
            SourceFacts("/archive/phone/12.mp4", "a3" * 32, "camA", datetime(2024, 1, 2, 12, tzinfo=UTC), "container"),
            SourceFacts("/archive/camB/1030.avi", "b1" * 32, "camB", T0 + timedelta(minutes=30), "path"),
            SourceFacts("/archive/copy.avi", "a1" * 32, None, None, None),
        ])


@pytest.fixture
def archive_client(tmp_path, tiny_model):
    fake = FakePipeline()
    write_state(tmp_path / "job" / "results.jsonl.state.sqlite", fake.model_id)
    with serve(tmp_path / "data", tiny_model, fake, unknown_threshold=0.9, rescore_state=tmp_path / "job") as client:
        for who in ("alice", "bob"):
            assert client.post("/enroll", data={"subject_id": who}, files={"video": clip(who)}).status_code == 201
        yield client


def videos(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [s["video"] for s in response.json()["sightings"]]


def test_sightings_in_time_order_with_where_and_when(archive_client):
    answer = archive_client.get("/subjects/alice/sightings")
    assert videos(answer) == ["/archive/camB/09.avi", "/archive/camA/10.avi", "/archive/phone/12.mp4",
                              "/archive/copy.avi"]
    body = answer.json()
    assert (body["subject_id"], body["threshold"], body["limit"], body["archive_tracks"]) == ("alice", 0.9, 100, 5)
    first = body["sightings"][0]
    assert first["start_time"] == "2024-01-02T09:00:01.000" and first["end_time"] == "2024-01-02T09:00:02.960"
    assert (first["camera"], first["time_source"], first["first_frame"], first["last_frame"], first["frames"]) == (
        "camB", "path", 25, 74, 50)
    assert first["box"] == [5.0, 10.0, 40.0, 110.0] and 0.9 <= first["similarity"] <= 1.0
    assert body["sightings"][2]["start_time"] == "2024-01-02T12:00:01.000+00:00"
    assert body["sightings"][3]["start_time"] is None
    thumbnail = archive_client.get(first["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.content == b"strip-a2"
    assert videos(archive_client.get("/subjects/bob/sightings")) == ["/archive/camB/1030.avi"]


def test_filters_threshold_and_limit_over_http(archive_client):
    get = archive_client.get
    assert videos(get("/subjects/alice/sightings", params={"camera": "camA"})) == [
        "/archive/camA/10.avi", "/archive/phone/12.mp4"]
    assert videos(get("/subjects/alice/sightings?camera=camA&camera=camB")) == [
        "/archive/camB/09.avi", "/archive/camA/10.avi", "/archive/phone/12.mp4"]
    assert videos(get("/subjects/alice/sightings", params={"since": "2024-01-02T09:30:00",
                                                           "until": "2024-01-02T11:00:00Z"})) == ["/archive/camA/10.avi"]
    assert videos(get("/subjects/alice/sightings", params={"threshold": 1.0})) == []
    limited = get("/subjects/alice/sightings", params={"limit": 2}).json()["sightings"]
    everything = get("/subjects/alice/sightings").json()["sightings"]
    best_two = sorted(everything, key=lambda s: -s["similarity"])[:2]
    assert {(s["video"], s["first_frame"]) for s in limited} == {(s["video"], s["first_frame"]) for s in best_two}
    assert [s["start_time"] or "~" for s in limited] == sorted(s["start_time"] or "~" for s in limited)


def test_errors(archive_client):
    get = archive_client.get
    assert error_of(get("/subjects/carol/sightings")) == "subject_not_found"
    assert get("/subjects/alice/sightings", params={"limit": 0}).status_code == 422
    assert get("/subjects/alice/sightings", params={"since": "yesterday"}).status_code == 422
    empty = get("/subjects/alice/sightings", params={"since": "2024-01-03", "until": "2024-01-02"})
    assert empty.status_code == 422 and error_of(empty) == "invalid_option"
    missing = get(f"/archive/tracks/{'a1' * 32}/9/thumbnail")
    assert missing.status_code == 404 and error_of(missing) == "track_not_found"


def test_another_models_archive_is_a_conflict(tmp_path, tiny_model):
    write_state(tmp_path / "r.state.sqlite", "another-model")
    with serve(tmp_path / "data", tiny_model, FakePipeline(), rescore_state=tmp_path / "r.state.sqlite") as client:
        client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")})
        answer = client.get("/subjects/alice/sightings")
    assert answer.status_code == 409 and error_of(answer) == "model_mismatch"


def test_without_an_archive_the_routes_say_how_to_enable_them(tmp_path, tiny_model):
    with serve(tmp_path / "data", tiny_model, FakePipeline()) as client:
        client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")})
        answer = client.get("/subjects/alice/sightings")
        assert answer.status_code == 404 and error_of(answer) == "no_archive"
        assert "GAITID_RESCORE_STATE" in answer.json()["message"]
    with serve(tmp_path / "data", tiny_model, FakePipeline(), rescore_state=tmp_path / "nothing-here") as client:
        answer = client.get("/subjects/alice/sightings")
        assert answer.status_code == 503 and error_of(answer) == "archive_unavailable"

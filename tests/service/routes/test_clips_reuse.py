"""Answers a person can check, over HTTP (fake pipeline): each track's thumbnail_url (served while the clip is
kept, then 404 clip_expired), quality block and margin, the clip_id; and choosing a track after a 409, or
sending the same bytes again, without running the pipeline again (service.clip_cache); the cache's hits, misses,
evictions, expirations and bytes on /metrics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.clip_cache import ClipCache
from tests.service.conftest import clip, error_of, gallery_sequences, serve
from tests.service.keyfile import key, write_keys_file


def thumbnail_image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "a decodable image"
    return image


def test_identify_answers_thumbnails_quality_margin_and_clip_id(client):
    for name in ("alice", "bob"):
        assert client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)}).status_code == 201
    answer = client.post("/identify", files={"video": clip("alice", "carol", frames=30)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["clip_id"]) == 32 and body["video"]["sampled_from"] is None
    alice = body["tracks"][0]
    first, second = alice["candidates"][:2]
    assert alice["margin"] == pytest.approx(first["similarity"] - second["similarity"], abs=1e-5)
    assert alice["margin"] > 0.3  # alice's own vector against a random one
    quality = alice["track"]["quality"]
    assert quality["frames_used"] == 30 and quality["frames_cut_at_border"] == 0
    assert quality["person_height_px"] == 100.0 and quality["mask_coverage"] == 1.0  # the fake's full boxes
    assert quality["walk_seconds"] == pytest.approx(30 / 25) and quality["warnings"] == []  # long and tall enough
    for track in body["tracks"]:
        url = track["track"]["thumbnail_url"]
        assert url == f"/clips/{body['clip_id']}/tracks/{track['track']['track_id']}/thumbnail.webp"
        image = thumbnail_image(client.get(url))
        assert image.shape[0] == 64 and image.shape[1] == 44 * 8  # the fake has no frames: 8 silhouettes
    missing = client.get(f"/clips/{body['clip_id']}/tracks/9/thumbnail.webp")
    assert missing.status_code == 404 and error_of(missing) == "track_not_found"


def test_quality_warns_in_plain_words_about_a_short_walk(client):
    track = client.post("/identify", files={"video": clip("dana", frames=16)}).json()["tracks"][0]
    warnings = track["track"]["quality"]["warnings"]
    assert any(w.startswith("Short walk: 16 frames over 0.6 s") for w in warnings), warnings
    long_walk = client.post("/identify", files={"video": clip("dana", frames=60)}).json()["tracks"][0]
    assert long_walk["track"]["quality"]["warnings"] == []


def test_margin_is_null_with_fewer_than_two_candidates(client):
    client.post("/enroll", data={"subject_id": "solo"}, files={"video": clip("solo")})
    track = client.post("/identify", files={"video": clip("solo", frames=21)}).json()["tracks"][0]
    assert len(track["candidates"]) == 1 and track["margin"] is None


def test_choosing_a_track_after_a_409_reuses_the_processed_clip(client, fake):
    refused = client.post("/enroll", data={"subject_id": "pair"}, files={"video": clip("p", "q")})
    assert refused.status_code == 409 and error_of(refused) == "multiple_tracks"
    details = refused.json()["details"]
    clip_id = details["clip_id"]
    for track in details["tracks"]:
        assert track["thumbnail_url"].startswith(f"/clips/{clip_id}/") and "warnings" in track["quality"]
        thumbnail_image(client.get(track["thumbnail_url"]))
    assert fake.calls == 1

    chosen = client.post("/enroll", data={"subject_id": "pair", "clip_id": clip_id, "track_id": "2"})
    assert chosen.status_code == 201, chosen.text
    body = chosen.json()
    assert fake.calls == 1, "no second pipeline run"
    assert body["clip_id"] == clip_id and body["track"]["track_id"] == 2 and body["candidate_tracks"] == 2
    assert "cache" in body["timings_ms"] and "decode" not in body["timings_ms"]
    assert client.get("/subjects/pair").json()["sequences"][0]["metadata"]["source"] == "walk.avi"
    # The enrolled track is q's: identifying q finds the subject, p does not.
    tracks = client.post("/identify", files={"video": clip("q", "p")}).json()["tracks"]
    assert tracks[0]["subject_id"] == "pair" and tracks[1]["subject_id"] is None

    wrong = client.post("/enroll", data={"subject_id": "pair2", "clip_id": clip_id, "track_id": "7"})
    assert wrong.status_code == 422 and error_of(wrong) == "track_not_found"
    still_two = client.post("/enroll", data={"subject_id": "pair2", "clip_id": clip_id})
    assert still_two.status_code == 409 and still_two.json()["details"]["clip_id"] == clip_id


def test_a_repeat_upload_of_the_same_bytes_runs_no_pipeline(client, fake):
    first = client.post("/enroll", data={"subject_id": "pair", "track_id": "1"}, files={"video": clip("p", "q")})
    again = client.post("/enroll", data={"subject_id": "other", "track_id": "2"}, files={"video": clip("p", "q")})
    identify = client.post("/identify", files={"video": clip("p", "q")})
    assert first.status_code == again.status_code == 201 and identify.status_code == 200
    assert fake.calls == 1
    assert first.json()["clip_id"] == again.json()["clip_id"] == identify.json()["clip_id"]
    assert [t["subject_id"] for t in identify.json()["tracks"]] == ["pair", "other"]
    client.post("/identify", files={"video": clip("p", "q", frames=21)})  # other bytes: processed
    assert fake.calls == 2


def test_an_expired_clip_answers_404_clip_expired(client, fake):
    now = [0.0]
    state = client.app.state.gaitid
    state.clip_cache = ClipCache(2**20, ttl_s=60.0, timer=lambda: now[0])
    refused = client.post("/enroll", data={"subject_id": "pair"}, files={"video": clip("p", "q")})
    clip_id, url = refused.json()["details"]["clip_id"], refused.json()["details"]["tracks"][0]["thumbnail_url"]
    thumbnail_image(client.get(url))
    now[0] = 61.0
    gone = client.get(url)
    assert gone.status_code == 404 and error_of(gone) == "clip_expired"
    late = client.post("/enroll", data={"subject_id": "pair", "clip_id": clip_id, "track_id": "1"})
    assert late.status_code == 404 and error_of(late) == "clip_expired"
    assert gallery_sequences(client) == 0


def clip_cache_metrics(client) -> dict[str, float]:
    """The clip cache's series on /metrics, by name and look-up: {"gaitid_clip_cache_hits_total/upload": 1.0, ...}."""
    return {sample.name + "".join(f"/{v}" for v in sample.labels.values()): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            if family.name.startswith("gaitid_clip_cache") for sample in family.samples}


def test_metrics_count_the_clip_caches_hits_misses_and_bytes(client, fake):
    first = client.post("/identify", files={"video": clip("p", "q")})
    after_first = clip_cache_metrics(client)
    assert after_first["gaitid_clip_cache_misses_total/upload"] == 1 and after_first[
        "gaitid_clip_cache_hits_total/upload"] == 0
    assert after_first["gaitid_clip_cache_clips"] == 1 and after_first["gaitid_clip_cache_bytes"] > 2 * 20 * 64 * 44

    again = client.post("/identify", files={"video": clip("p", "q")})
    assert again.json()["clip_id"] == first.json()["clip_id"] and fake.calls == 1
    client.get(first.json()["tracks"][0]["track"]["thumbnail_url"])
    client.get(f"/clips/{'0' * 32}/tracks/1/thumbnail.webp")  # never kept: 404 clip_expired
    counted = clip_cache_metrics(client)
    assert (counted["gaitid_clip_cache_hits_total/upload"], counted["gaitid_clip_cache_misses_total/upload"]) == (1, 1)
    assert (counted["gaitid_clip_cache_hits_total/clip_id"], counted["gaitid_clip_cache_misses_total/clip_id"]) == (1, 1)
    assert counted["gaitid_clip_cache_bytes"] == after_first["gaitid_clip_cache_bytes"]
    assert counted["gaitid_clip_cache_evictions_total"] == counted["gaitid_clip_cache_expirations_total"] == 0
    assert counted["gaitid_clip_cache_max_bytes"] == 256 * 2**20  # GAITID_CLIP_CACHE_MB's default


def test_metrics_count_expired_and_evicted_clips(client, fake):
    now = [0.0]
    state = client.app.state.gaitid
    state.clip_cache = ClipCache(2**20, ttl_s=60.0, timer=lambda: now[0])  # /metrics reads the cache in the state
    client.post("/identify", files={"video": clip("p")})
    one = clip_cache_metrics(client)["gaitid_clip_cache_bytes"]  # what one such clip holds
    state.clip_cache = ClipCache(int(1.5 * one), ttl_s=60.0, timer=lambda: now[0])  # room for one clip
    client.post("/identify", files={"video": clip("p")})
    client.post("/identify", files={"video": clip("q")})  # p's clip makes room for q's
    evicted = clip_cache_metrics(client)
    assert evicted["gaitid_clip_cache_evictions_total"] == 1 and evicted["gaitid_clip_cache_clips"] == 1
    now[0] = 61.0
    expired = clip_cache_metrics(client)
    assert expired["gaitid_clip_cache_expirations_total"] == 1
    assert expired["gaitid_clip_cache_clips"] == expired["gaitid_clip_cache_bytes"] == 0


@pytest.mark.parametrize("with_video", [True, False])
def test_enroll_needs_exactly_one_of_video_and_clip_id(client, fake, with_video):
    files = {"video": clip("a")} if with_video else None
    data = {"subject_id": "a"} | ({"clip_id": "0" * 32} if with_video else {})
    response = client.post("/enroll", data=data, files=files)
    assert response.status_code == 422 and error_of(response) == "invalid_request" and fake.calls == 0


def test_a_malformed_clip_id_is_invalid(client):
    response = client.post("/enroll", data={"subject_id": "a", "clip_id": "../../etc"})
    assert response.status_code == 422 and error_of(response) == "invalid_request"
    assert client.get("/clips/xyz/tracks/1/thumbnail.webp").status_code == 422


def test_a_clip_is_visible_only_to_the_gallery_that_uploaded_it(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("a", "acme", "enroll", "secret-a" * 4),
                           ("b", "globex", "enroll", "secret-b" * 4))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        refused = client.post("/enroll", data={"subject_id": "x"}, files={"video": clip("p", "q")},
                              headers=key("secret-a" * 4))
        clip_id, url = refused.json()["details"]["clip_id"], refused.json()["details"]["tracks"][0]["thumbnail_url"]
        assert client.get(url, headers=key("secret-a" * 4)).status_code == 200
        assert client.get(url).status_code == 401
        other = client.get(url, headers=key("secret-b" * 4))
        assert other.status_code == 404 and error_of(other) == "clip_expired"
        stolen = client.post("/enroll", data={"subject_id": "x", "clip_id": clip_id, "track_id": "1"},
                             headers=key("secret-b" * 4))
        assert stolen.status_code == 404 and error_of(stolen) == "clip_expired"
        # Holding the bytes is enough: globex uploads them and gets the kept clip.
        own = client.post("/enroll", data={"subject_id": "x", "track_id": "1"}, files={"video": clip("p", "q")},
                          headers=key("secret-b" * 4))
        assert own.status_code == 201 and fake.calls == 1

"""Choosing a track after a 409 on a real clip with two people (demo4.mp4, the real pipeline): the
second request enrolls from the kept clip, without decoding again, well under a second."""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import serve


@pytest.mark.data
@pytest.mark.slow
def test_choosing_a_track_of_a_real_two_person_clip_is_fast(tmp_path, tiny_model, videos_dir):
    demo4 = (videos_dir / "phone" / "demo4.mp4").read_bytes()
    with serve(tmp_path, tiny_model, max_frames=120) as client:
        started = time.perf_counter()
        refused = client.post("/enroll", data={"subject_id": "person-b"}, files={"video": ("demo4.mp4", demo4)})
        processing = time.perf_counter() - started
        assert refused.status_code == 409, refused.text
        details = refused.json()["details"]
        assert len(details["tracks"]) >= 2
        for track in details["tracks"]:
            thumbnail = client.get(track["thumbnail_url"])
            assert thumbnail.status_code == 200 and thumbnail.content[8:12] == b"WEBP"
            assert len(thumbnail.content) < 40_000  # small: ~15 KB
        started = time.perf_counter()
        chosen = client.post("/enroll", data={"subject_id": "person-b", "clip_id": details["clip_id"],
                                              "track_id": str(details["tracks"][1]["track_id"])})
        choosing = time.perf_counter() - started
    assert chosen.status_code == 201, chosen.text
    assert "decode" not in chosen.json()["timings_ms"]
    print(f"409 after {processing:.2f} s; choosing the track took {choosing * 1000:.0f} ms")
    assert choosing < 1.0 and choosing < processing / 5

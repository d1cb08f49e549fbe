"""The upload path shared by /enroll and /identify (routers/clips.py): the video part's own size
limit, empty uploads, and the pipeline running off the event loop, a bounded number at a time."""

from __future__ import annotations

import threading
import time

from tests.service.conftest import clip, error_of, serve


def test_video_part_just_over_limit_is_413(tmp_path, tiny_model, fake):
    """Under the body limit (limit + form overhead) but over the video limit itself."""
    with serve(tmp_path, tiny_model, fake, max_upload_mb=0.05) as client:
        response = client.post("/identify", files={"video": ("v.avi", b"\0" * 60_000)})
    assert response.status_code == 413 and error_of(response) == "upload_too_large"
    assert response.json()["details"]["size_bytes"] == 60_000 and fake.calls == 0


def test_empty_upload_is_415(client, fake):
    response = client.post("/identify", files={"video": ("empty.avi", b"")})
    assert response.status_code == 415 and error_of(response) == "invalid_video" and fake.calls == 0


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

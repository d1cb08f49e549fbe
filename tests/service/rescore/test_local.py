"""The local runner's producers: with two workers two files are decoded and segmented at the same
time (so re-scoring uses both cores), with one worker never."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.pipeline.errors import NoPersonError
from service.rescore import Extractor, FileJob, LocalRunner


class MeetingPipeline:
    """A clip processor that waits until `parties` files are being processed at once (or gives up
    after `timeout` seconds), then finds nobody in the clip; it records the most files seen at once."""

    def __init__(self, parties: int, timeout: float):
        self.barrier = threading.Barrier(parties, timeout=timeout)
        self.lock = threading.Lock()
        self.inside = self.most_inside = 0

    def process(self, source, overrides=None):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.barrier.wait()
        finally:
            with self.lock:
                self.inside -= 1
        raise NoPersonError("Nobody was found walking in the clip.")


class NoEmbedder:
    model_id = "none"

    def embed(self, sequences):
        raise AssertionError("nothing to embed: every clip is empty")


@pytest.fixture
def videos(tmp_path) -> list[Path]:
    paths = []
    for number in range(4):
        path = tmp_path / f"clip{number}.mp4"
        path.write_bytes(f"video {number}".encode())  # distinct contents: distinct hashes
        paths.append(path)
    return paths


def run(videos: list[Path], pipeline: MeetingPipeline, workers: int) -> list:
    outcomes = []
    LocalRunner(Extractor(pipeline, NoEmbedder()), workers=workers).run(
        [FileJob(str(p)) for p in videos], set(), outcomes.append)
    return outcomes


def test_two_workers_process_two_files_at_once(videos):
    pipeline = MeetingPipeline(parties=2, timeout=30)
    outcomes = run(videos, pipeline, workers=2)
    assert pipeline.most_inside == 2
    assert [(o.status, o.error_code) for o in outcomes] == [("done", "no_person")] * len(videos)


def test_one_worker_processes_one_file_at_a_time(videos):
    pipeline = MeetingPipeline(parties=2, timeout=0.2)  # nobody to meet: each wait times out
    outcomes = run(videos, pipeline, workers=1)
    assert pipeline.most_inside == 1
    assert {o.status for o in outcomes} == {"failed"}  # the broken barrier is an unexpected error

"""Fixtures of the re-scoring tests (service/rescore).

The archive is made of the CASIA-B clips in ../shared/data (symlinked under camera/date/time names)
plus a corrupt file; the embedding network is the tiny contract model of tests/conftest.py. Its
embeddings of different walkers are all similar, so the tests use a 0.9999 threshold: only the
very walk that was enrolled matches. Nothing here says anything about recognition accuracy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery, SequenceInput
from service.pipeline.config import PipelineSettings
from service.pipeline.errors import PipelineError
from service.rescore import Extractor, ExtractorSpec, LocalRunner, RescoreOptions, read_results, run_rescore
from tests.conftest import VIDEOS, require_shared

THRESHOLD = 0.9999
CASIA = VIDEOS / "casia-b"
BACKGROUND = CASIA / "001-bkgrd-090.avi"
# archive path -> CASIA-B clip
ARCHIVE_CLIPS = {
    "camA/2024-01-02/10-00-00.avi": "002-nm-01-090.avi",
    "camA/2024-01-02/10-05-30.avi": "003-nm-01-090.avi",
    "camB/2024-01-03/09-30-15.avi": "004-nm-01-090.avi",
    "cam7_20240104_083000.avi": "001-bkgrd-090.avi",  # the empty scene: nobody walking
}
CORRUPT = "camB/2024-01-03/09-45-00.mp4"
TRACK_FIELDS = ("video", "camera", "recorded_at", "sha256", "track_id", "first_frame", "last_frame", "frames",
                "frame_indices", "boxes", "error_code")


class SimulatedCrash(BaseException):
    """Stands in for a kill or Ctrl-C in the middle of a run (not an Exception: it stops the job)."""


class CountingPipeline:
    """Wraps the clip pipeline: counts decodes, and can crash the run after `crash_after` calls."""

    def __init__(self, inner, crash_after: int | None = None):
        self.inner = inner
        self.crash_after = crash_after
        self.calls = 0
        self.finished: list[str] = []  # sources whose processing ended (tracks or a PipelineError)
        self._lock = threading.Lock()

    def process(self, source, overrides=None):
        with self._lock:
            self.calls += 1
            if self.crash_after is not None and self.calls > self.crash_after:
                raise SimulatedCrash(f"crash while decoding {source}")
        try:
            result = self.inner.process(source, overrides)
        except PipelineError:
            self._finish(source)
            raise
        self._finish(source)
        return result

    def _finish(self, source) -> None:
        with self._lock:
            self.finished.append(str(source))


def counting(extractor: Extractor, crash_after: int | None = None) -> tuple[Extractor, CountingPipeline]:
    pipeline = CountingPipeline(extractor.pipeline, crash_after)
    return Extractor(pipeline, extractor.embedder), pipeline


def make_settings(root: Path, model: Path, **overrides) -> PipelineSettings:
    return PipelineSettings(_env_file=None, data_dir=root / "gaitid", segmenter="bgsub", embedding_model=model,
                            providers="cpu", threads=1, **overrides)


def enroll(gallery: Gallery, extractor: Extractor, subject_id: str, clip: str) -> None:
    """Enrollment as the service does it: the clip pipeline, the embedder, the gallery API."""
    (sequence,) = extractor.pipeline.process(CASIA / clip).sequences
    (embedding,) = extractor.embedder.embed([sequence.model_input()])
    gallery.enroll(subject_id, [SequenceInput.from_aligned(sequence, embedding, {"source": clip})],
                   model_id=extractor.model_id, display_name=f"Subject {subject_id}")


def relative(records: list[dict], root: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(Path(record["video"]).relative_to(root).as_posix(), []).append(record)
    return grouped


def track_view(records: list[dict]) -> list[tuple]:
    import json

    return [tuple(json.dumps(r[k]) for k in TRACK_FIELDS) for r in records]


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    require_shared(CASIA)
    root = tmp_path_factory.mktemp("archive")
    for name, clip in ARCHIVE_CLIPS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(CASIA / clip)
    (root / CORRUPT).write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / ".hidden.avi").write_bytes(b"not listed")
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="session")
def spec(tmp_path_factory, tiny_model, archive) -> ExtractorSpec:
    return ExtractorSpec(make_settings(tmp_path_factory.mktemp("settings"), tiny_model, background_clip=BACKGROUND))


@pytest.fixture(scope="session")
def extractor(spec) -> Extractor:
    return spec.build()


@dataclass
class FirstRun:
    archive: Path
    out: Path
    gallery: Gallery
    records: list[dict]
    decodes: int


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, archive, extractor) -> FirstRun:
    root = tmp_path_factory.mktemp("first")
    gallery = Gallery(root / "gallery", threshold=THRESHOLD)
    enroll(gallery, extractor, "002", "002-nm-01-090.avi")
    counted, pipeline = counting(extractor)
    out = root / "results.jsonl"
    run_rescore(archive, RescoreOptions(out=out, progress=False), LocalRunner(counted, workers=2), gallery)
    yield FirstRun(archive, out, gallery, read_results(out), pipeline.calls)
    gallery.close()

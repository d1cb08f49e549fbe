"""Fixtures of the service tests: the real app (real gallery, real settings) with either
- a fake clip pipeline (dependency override) whose "video" is a JSON description of the tracks it
  should report: fast, and lets a test pick any number of tracks or any pipeline error; or
- the real pipeline (background subtraction + the tiny ONNX embedding model of tests/conftest.py)
  on synthetic walking clips made with PyAV.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.deps import get_pipeline
from service.pipeline.errors import NoPersonError, TooFewFramesError
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence
from service.settings import Settings, load_settings
from tests.conftest import TINY_CHANNELS, TINY_PARTS


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

    def process(self, source, overrides=None) -> ClipResult:
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
            embeddings[number] = np.random.default_rng(seed).standard_normal(
                (TINY_CHANNELS, TINY_PARTS)).astype(np.float32)
        return ClipResult(sequences=sequences, embeddings=embeddings,
                          timings={"decode": 0.01, "segment": 0.02, "track": 0.003, "align": 0.001, "embed": 0.002,
                                   "total": 0.04},
                          frame_count=60, fps=25.0, size=(320, 240), source_size=(320, 240), rotation=0,
                          model_id=self.model_id)


def clip(*seeds: str, frames: int = 20, error: str | None = None) -> tuple[str, bytes, str]:
    body = json.dumps({"tracks": [{"seed": s, "frames": frames} for s in seeds], "error": error}).encode()
    return ("walk.avi", body, "video/x-msvideo")


def make_settings(data_dir: Path, model: Path, **overrides) -> Settings:
    return load_settings(env_file=None, data_dir=data_dir, embedding_model=model, providers="cpu", **overrides)


@contextmanager
def serve(data_dir: Path, model: Path, pipeline: FakePipeline | None = None, **overrides) -> Iterator[TestClient]:
    app = create_app(make_settings(data_dir, model, **overrides))
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

"""service/batching.py: cross-request batching of the embedding network."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gaitid.contract import EmbeddingModelMetadata, ModelInput, SequenceEmbedder
from service.batching import BatcherClosedError, EmbeddingBatcher
from tests.service.conftest import serve


class RecordingEmbedder:
    """A SequenceEmbedder whose embedding is the sequence's mean silhouette value; records its calls."""

    model_id = "recording"
    metadata = EmbeddingModelMetadata(variant="silhouette", inputs=["sils"], embedding_channels=2,
                                      embedding_parts=3)

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def embed(self, sequences):
        assert len({s.frames for s in sequences}) == 1, "a batch mixed sequence lengths"
        with self._lock:
            self.batches.append([s.frames for s in sequences])
        time.sleep(self.delay_s)
        return np.stack([np.full((2, 3), float(s.sils.mean()), np.float32) for s in sequences])


def sequence(value: int, frames: int = 30) -> ModelInput:
    return ModelInput(np.full((frames, 64, 44), value, np.uint8))


def test_the_batcher_is_a_sequence_embedder():
    batcher = EmbeddingBatcher(RecordingEmbedder())
    try:
        assert isinstance(batcher, SequenceEmbedder)
        assert batcher.model_id == "recording" and batcher.metadata.embedding_shape == (2, 3)
        assert batcher.embed([]).shape == (0, 2, 3)
    finally:
        batcher.close()


def test_batcher_groups_concurrent_equal_length_requests():
    inner = RecordingEmbedder(delay_s=0.01)
    batcher = EmbeddingBatcher(inner, max_batch=8, max_wait_ms=200)
    outputs: dict[int, np.ndarray] = {}

    def call(value: int) -> None:
        outputs[value] = batcher.embed([sequence(value)])[0]

    threads = [threading.Thread(target=call, args=(v,)) for v in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    batcher.close()
    assert sorted(outputs) == list(range(6))
    for value, embedding in outputs.items():  # each caller gets its own sequence's answer
        assert embedding.shape == (2, 3) and np.all(embedding == value)
    assert sum(len(b) for b in inner.batches) == 6
    assert len(inner.batches) < 6  # at least one network call served several requests


def test_batcher_never_mixes_lengths_and_passes_errors_on():
    inner = RecordingEmbedder()
    batcher = EmbeddingBatcher(inner, max_batch=8, max_wait_ms=100)
    lengths = [20, 30, 20, 30, 25]
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i, n=n: results.__setitem__(i, batcher.embed([sequence(i, n)])[0]))
               for i, n in enumerate(lengths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(np.all(results[i] == i) for i in range(len(lengths)))
    # One caller's sequences of several lengths come back in order.
    mixed = batcher.embed([sequence(7, 20), sequence(8, 30), sequence(9, 20)])
    assert [float(e[0, 0]) for e in mixed] == [7.0, 8.0, 9.0]

    def failing(sequences):
        raise RuntimeError("network failed")

    inner.embed = failing
    with pytest.raises(RuntimeError, match="network failed"):
        batcher.embed([sequence(0, 20)])
    batcher.close()
    with pytest.raises(BatcherClosedError, match="closed"):
        batcher.embed([sequence(0, 20)])


def test_service_with_batching_gives_the_same_answers(tmp_path, tiny_model, one_walker):
    answers = []
    for batching in (False, True):
        with serve(tmp_path / f"b{batching}", tiny_model, embed_batching=batching, embed_batch_wait_ms=1) as client:
            client.post("/enroll", data={"subject_id": "w"}, files={"video": ("w.avi", one_walker)})
            answers.append(client.post("/identify", files={"video": ("w.avi", one_walker)}).json())
            if batching:
                assert "gaitid_embedding_batch_size_count" in client.get("/metrics").text
    assert answers[0]["tracks"][0]["candidates"] == answers[1]["tracks"][0]["candidates"]

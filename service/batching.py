"""Cross-request dynamic batching for the embedding network.

Each request runs its clip pipeline in a worker thread; the last step of that pipeline embeds the
clip's aligned sequences. `EmbeddingBatcher` stands in for the `OnnxEmbedder` there (both are a
`gaitid.contract.SequenceEmbedder`): a call blocks the calling worker thread while the batcher
collects the embedding requests of other concurrent requests for up to `max_wait_ms`, then runs
them through the network together.

Only sequences of the same length share a batch. The network pools over time, so padding a short
sequence to a long one would change its embedding; we never pad. Sequences of different lengths in
one collection window run as separate (smaller) batches, one after the other.

Whether this raises throughput depends on the hardware: on a GPU one batch of 8 costs about as
much as one sequence; on a CPU a batch costs nearly the sum of its parts and the window only adds
latency. `bench/load.py` measures both; batching is off by default (`GAITID_EMBED_BATCHING`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gaitid.contract import EmbeddingModelMetadata, ModelInput, SequenceEmbedder, batches_by_length

log = logging.getLogger(__name__)


@dataclass
class _Request:
    sequence: ModelInput
    future: Future = field(default_factory=Future)


_STOP = object()

BatchObserver = Callable[[int, float], None]  # (sequences in the batch, seconds the network took)


class BatcherClosedError(RuntimeError):
    pass


class EmbeddingBatcher:
    """A `SequenceEmbedder` that batches the calls of several threads into one network call.

    `runners` threads each take one collection window at a time, so up to `runners` batches run
    through the network at once (useful on a CPU with more cores than one session uses).
    """

    def __init__(
        self,
        embedder: SequenceEmbedder,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        runners: int = 1,
        observer: BatchObserver | None = None,
    ):
        if max_batch < 1 or runners < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and runners must be >= 1 and max_wait_ms >= 0")
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.observer = observer
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._runners = [
            threading.Thread(target=self._run_forever, name=f"embed-batcher-{i}", daemon=True)
            for i in range(runners)
        ]
        for thread in self._runners:
            thread.start()

    @property
    def metadata(self) -> EmbeddingModelMetadata:
        return self.embedder.metadata

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def embed(self, sequences: Sequence[ModelInput]) -> np.ndarray:
        """Blocks until every sequence is embedded (with whatever other threads sent meanwhile)."""
        requests = [_Request(sequence) for sequence in sequences]
        with self._close_lock:
            if self._closed:
                raise BatcherClosedError("the embedding batcher is closed (the service is shutting down)")
            for request in requests:
                self._queue.put(request)
        if not requests:
            return np.empty((0, *self.metadata.embedding_shape), np.float32)
        return np.stack([request.future.result() for request in requests])

    def close(self, timeout: float = 5.0) -> None:
        """Stop the runners after the queued requests are served."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._runners:
                self._queue.put(_STOP)
        for thread in self._runners:
            thread.join(timeout)

    # -- runner threads ---------------------------------------------------------------------------
    def _run_forever(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            window, stop_seen = self._collect(first)
            # Only sequences of one length share a network call (see the module docstring).
            for group in batches_by_length([r.sequence for r in window]):
                self._run_group([window[i] for i in group])
            if stop_seen:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """The first request plus whatever arrives within the window, up to max_batch."""
        window = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(window) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return window, True
            window.append(item)
        return window, False

    def _run_group(self, group: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            embeddings = self.embedder.embed([r.sequence for r in group])
        except BaseException as error:  # noqa: BLE001 -- every failure goes to the callers; the runner lives on
            for request in group:
                request.future.set_exception(error)
            return
        if self.observer is not None:
            try:
                self.observer(len(group), time.perf_counter() - started)
            except Exception:  # metrics must never break embedding
                log.exception("embedding batch observer failed")
        for request, embedding in zip(group, embeddings):
            request.future.set_result(embedding)

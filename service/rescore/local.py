"""Re-scoring on one machine: producer threads decode and segment while the consumer embeds.

    producers (`workers` threads): hash -> decode -> segment -> track -> depth -> align -> strips
         │  bounded: at most `workers + queue_size` files in flight
         ▼
    consumer (the calling thread): embed -> sink (state commit, progress bar)

Threads, not processes: FFmpeg (PyAV decodes and scales without the GIL), OpenCV and ONNX Runtime
release the GIL, which is held for about an eighth of a file's work (py-spy --gil on the shared clips:
13% of the samples, half of them ByteTrack's Python);
the models are loaded once and shared (ONNX Runtime sessions and the background-subtraction
segmenter are thread-safe), and a prepared file hands only its small aligned sequences to the
consumer. The bound keeps memory flat however large the archive.

Stopping (Ctrl-C, or any BaseException from a producer or the sink): queued files are cancelled,
the files being decoded are allowed to finish, every file that finished is still embedded and
committed, then the exception goes on. Nothing that was done is lost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Container, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from service.rescore.extract import ContentClaims, Extractor, FileJob, FileOutcome, Prepared

log = logging.getLogger("gaitid.rescore")

Sink = Callable[[FileOutcome], None]


def default_workers() -> int:
    """Producers: one per core. The consumer's embedding is a small share of a file's work (a tenth
    or less with the shipped model), so it runs between the producers' slices rather than keeping a
    core of its own: on two cores, two files are decoded and segmented at once."""
    return max(1, os.cpu_count() or 1)


class LocalRunner:
    """Runs an `Extractor` over files with a producer pool and one consumer."""

    def __init__(self, extractor: Extractor, workers: int | None = None, queue_size: int | None = None):
        self.extractor = extractor
        self.workers = max(1, int(workers or default_workers()))
        # Prepared files waiting for the embedder; enough that a slow file does not starve it.
        self.queue_size = max(1, int(queue_size if queue_size is not None else self.workers))

    @property
    def model_id(self) -> str:
        return self.extractor.model_id

    def run(self, jobs: Sequence[FileJob], done: Container[str], sink: Sink) -> None:
        claims = ContentClaims()
        window = self.workers + self.queue_size
        remaining = iter(jobs)
        pending: set[Future[Prepared]] = set()
        finished: list[Future[Prepared]] = []
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rescore-decode")
        try:
            while True:
                while len(pending) < window and (job := next(remaining, None)) is not None:
                    pending.add(pool.submit(self.extractor.prepare, job, done, claims))
                if not pending:
                    break
                ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                finished.extend(ready)
                while finished:
                    prepared = finished[0].result()  # re-raises a producer's BaseException
                    finished.pop(0)
                    sink(self.extractor.finish(prepared))
        except BaseException:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            self._save_finished(finished + [f for f in pending if not f.cancelled()], sink)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _save_finished(self, futures: list[Future[Prepared]], sink: Sink) -> None:
        """On the way out: commit the files that were fully decoded, so no finished work is lost."""
        for future in futures:
            if future.cancelled() or future.exception() is not None:
                continue
            try:
                sink(self.extractor.finish(future.result()))
            except BaseException:  # stopping anyway: the first error is the one to report
                log.warning("could not save a finished file while stopping", exc_info=True)
                return

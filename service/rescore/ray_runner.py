"""Re-scoring on a Ray cluster with Ray Data: the same extraction, spread over actors.

    ray.data.from_items([{path, known_sha256, overrides}, ...])  (overrides: the camera's, pickled)
      -> map_batches(RayExtractor, batch_size=1, ActorPoolStrategy(size=actors), num_gpus=...)
             each actor builds the pipeline and the embedder once (ExtractorSpec.build) and returns
             one pickled FileOutcome per file (tracks with embeddings, boxes, strips)
      -> streamed back to the driver (iter_rows), which commits each file to the state as it
         arrives and scores everything against the gallery at the end (the gallery stays on the
         driver: it is small, and workers need no access to it).

The videos must be readable at the same path from every node (shared storage). Files whose
cached hash is already done never leave the driver; an actor also skips content the driver
knows is done (a renamed or copied file). Copies first seen in this run are deduplicated within
an actor only.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Container, Sequence
from typing import Any

import numpy as np

from service.rescore.errors import RescoreError
from service.rescore.extract import ContentClaims, ExtractorSpec, FileJob
from service.rescore.local import Sink

log = logging.getLogger("gaitid.rescore")


class RayExtractor:
    """The stateful map_batches class: one per actor, models loaded once in __init__."""

    def __init__(self, spec: ExtractorSpec, done: frozenset[str]):
        self.extractor = spec.build()
        self.done = done
        self.claims = ContentClaims()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        outcomes = []
        for path, known, overrides in zip(batch["path"], batch["known_sha256"], batch["overrides"]):
            job = FileJob(str(path), str(known) or None, pickle.loads(overrides))
            outcome = self.extractor.extract(job, self.done, self.claims)
            outcomes.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        return {"path": [str(p) for p in batch["path"]], "outcome": outcomes}


class RayRunner:
    """Runs the extraction on Ray Data. Connects to `address` (None: the running instance, else a
    new local one) unless Ray is already initialised in this process."""

    def __init__(self, spec: ExtractorSpec, model_id: str, *, actors: int = 2, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, address: str | None = None):
        self.spec = spec
        self.model_id = model_id
        self.actors = max(1, int(actors))
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.address = address

    def run(self, jobs: Sequence[FileJob], done: Container[str], sink: Sink) -> None:
        if not jobs:
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the job's own bar counts files
            for outcome in self._stream(ray, jobs, frozenset(done)):
                if outcome.model_id != self.model_id:
                    raise RescoreError(f"a Ray worker embedded with model {outcome.model_id}, the driver expected "
                                       f"{self.model_id}: the embedding model file differs between nodes")
                sink(outcome)
        except ray.exceptions.RayError as exc:
            # An actor that cannot start (model missing on a node) or a lost node: what finished is saved.
            raise RescoreError(f"the Ray job failed ({type(exc).__name__}: {_summary(exc)}); finished videos "
                               "are saved, run the same command again to go on") from exc
        finally:
            if started_here:
                ray.shutdown()

    def _stream(self, ray: Any, jobs: Sequence[FileJob], done: frozenset[str]):
        items = job_rows(jobs)
        dataset = ray.data.from_items(items, override_num_blocks=min(len(items), 10_000))
        extracted = dataset.map_batches(
            RayExtractor,
            batch_size=1,  # a file is minutes of work at most and already batches its frames
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            fn_constructor_kwargs={"spec": self.spec, "done": done},
        )
        for row in extracted.iter_rows():
            yield pickle.loads(row["outcome"])


def job_rows(jobs: Sequence[FileJob]) -> list[dict[str, Any]]:
    """The dataset's rows: plain columns Ray Data can hold (the camera's overrides pickled)."""
    return [{"path": j.path, "known_sha256": j.known_sha256 or "", "overrides": pickle.dumps(j.overrides)}
            for j in jobs]


def _summary(error: BaseException) -> str:
    """Ray's error text is a traceback with terminal colours: keep its first and last lines (the cause)."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    if len(lines) > 1 and lines[-1] != lines[0]:
        return f"{lines[0]} ... {lines[-1]}"
    return lines[0] if lines else ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")

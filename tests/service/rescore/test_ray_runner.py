"""service/rescore/ray_runner.py: Ray Data gives the same records as the local runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.rescore import LocalRunner, RayRunner, RescoreOptions, read_results, run_rescore
from tests.service.rescore.conftest import ARCHIVE_CLIPS, counting


@pytest.mark.data
def test_ray_data_gives_the_same_records_as_local(first_run, extractor, spec, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runner = RayRunner(spec, spec.model_id(), actors=2, num_cpus=1)
        summary = run_rescore(first_run.archive, RescoreOptions(out=tmp_path / "ray.jsonl", progress=False), runner,
                              first_run.gallery)
    finally:
        ray.shutdown()
    assert summary.processed == len(ARCHIVE_CLIPS) + 1 and summary.failed == 0
    counted, pipeline = counting(extractor)
    run_rescore(first_run.archive, RescoreOptions(out=tmp_path / "local.jsonl", state=Path(f"{first_run.out}.state.sqlite"),
                                                  progress=False), LocalRunner(counted, 1), first_run.gallery)
    assert pipeline.calls == 0
    ray_records, local_records = read_results(tmp_path / "ray.jsonl"), read_results(tmp_path / "local.jsonl")
    assert ray_records == local_records


def test_a_cameras_overrides_reach_the_actor():
    from service.pipeline.types import ClipOverrides
    from service.rescore.extract import FileJob
    from service.rescore.ray_runner import RayExtractor, job_rows

    class Recording:
        def __init__(self):
            self.jobs = []

        def extract(self, job, done, claims):
            self.jobs.append(job)
            return {"path": job.path}

    jobs = [FileJob("/a/1.avi", "ab" * 32, ClipOverrides(rotation=90, roi=(0.1, 0.1, 0.9, 0.9))), FileJob("/a/2.avi")]
    rows = job_rows(jobs)
    actor = RayExtractor.__new__(RayExtractor)  # without building a pipeline
    actor.extractor, actor.done, actor.claims = Recording(), frozenset(), None
    batch = {key: np.array([row[key] for row in rows], dtype=object) for key in rows[0]}
    answer = actor(batch)
    assert actor.extractor.jobs == jobs and answer["path"] == ["/a/1.avi", "/a/2.avi"]

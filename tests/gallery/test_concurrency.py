"""Concurrency: enrollments, deletions and searches from many threads leave one consistent gallery."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import embedding, sequence


def test_concurrent_enrollments_and_searches(open_gallery: OpenGallery, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    with open_gallery(tmp_path / "g") as g:
        seed = np.random.default_rng(1000)  # not a worker's seed: the seed subject must not be a worker's twin
        g.enroll("seed", [sequence(seed, embedding(seed))], model_id="m")

        def enroller(worker: int) -> None:
            rng = np.random.default_rng(worker)
            try:
                for i in range(8):
                    e = embedding(rng)
                    g.enroll(f"w{worker}-{i}", [sequence(rng, e, frames=1), sequence(rng, e * 2, frames=1)],
                             model_id="m")
                    assert g.search(e, model_id="m")[0].subject_id == f"w{worker}-{i}"
                    if i % 3 == 2:
                        g.delete_subject(f"w{worker}-{i - 1}")
            except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
                errors.append(exc)

        def searcher() -> None:
            rng = np.random.default_rng(100)
            try:
                while not stop.is_set():
                    for answer in g.search(np.stack([embedding(rng) for _ in range(4)]), model_id="m", top_k=3):
                        assert len({c.subject_id for c in answer.candidates}) == len(answer.candidates)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=enroller, args=(w,)) for w in range(4)]
        readers = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads + readers:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()
        for t in readers:
            t.join(timeout=30)
        assert not errors, errors
        status = g.status()
        assert status.subjects == 1 + 4 * (8 - 2) and status.sequences == 1 + 2 * 4 * (8 - 2)
        assert status.index.vectors == status.sequences
        ids, _, _ = g.export_embeddings()
        assert sorted(g.store.active_sequence_map(g.store.connection(), "default", "m")[0].tolist()) == sorted(ids.tolist())


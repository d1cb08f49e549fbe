"""The FAISS index (gallery.index): the GPU-style replica path and the checked, atomic file format."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from gallery import Gallery
from gallery.index import VectorIndex
from tests.gallery.synthetic import embedding, sequence


def test_gpu_style_replica_gives_the_same_answers(tmp_path: Path, rng: np.random.Generator) -> None:
    """The GPU path (flat replica + id array, re-uploaded after removals) run with a CPU flat index."""
    with Gallery(tmp_path / "a") as plain, Gallery(tmp_path / "b", replica_factory=faiss.IndexFlatIP) as replica:
        embs = [embedding(rng) for _ in range(12)]
        for g in (plain, replica):
            for i, e in enumerate(embs):
                g.enroll(f"s{i}", [sequence(rng, e, frames=1)], model_id="m")
        queries = np.stack([e + embedding(rng, noise=0.5) for e in embs[:5]])
        for step in range(2):
            a = plain.search(queries, model_id="m", top_k=4)
            b = replica.search(queries, model_id="m", top_k=4)
            for x, y in zip(a, b):
                assert [c.subject_id for c in x.candidates] == [c.subject_id for c in y.candidates]
                np.testing.assert_allclose([c.score for c in x.candidates], [c.score for c in y.candidates], atol=1e-6)
            fresh = embedding(rng)
            for g in (plain, replica):  # a removal (replica re-upload) and additions (appended)
                g.delete_subject("s1")
                g.enroll("s12", [sequence(rng, embs[0], frames=1)], model_id="m")
                g.enroll("s1" if step == 0 else "s13", [sequence(rng, fresh, frames=1)], model_id="m")


def test_vector_index_save_is_atomic_and_checked(tmp_path: Path, rng: np.random.Generator) -> None:
    index = VectorIndex(8)
    index.add(np.array([5, 9], np.int64), rng.standard_normal((2, 8)).astype(np.float32))
    path = tmp_path / "x.faiss"
    index.save(path, {"generation": 3})
    loaded, header = VectorIndex.load(path)
    assert header["generation"] == 3 and sorted(loaded.ids().tolist()) == [5, 9]
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temporary left behind



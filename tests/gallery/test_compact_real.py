"""The compact index on REAL embeddings (CASIA-B walks through the shipped model, recombined into a
20,000-sequence gallery as bench/gallery_data.py does): top-10 subjects and decisions of exhaustive search."""

from __future__ import annotations

import numpy as np
import pytest

from bench.gallery_data import CELLS, CONDITIONS, PER_IDENTITY, VIEWS, WINDOWS, ChimeraGallery, RealWalks
from gaitid.contract import ModelInput, search_vectors
from gallery.compact_index import CompactIndex, CompactSpec
from tests.conftest import REPO

MODEL = REPO / "models" / "deepgaitv2-sil-casiab.onnx"
SUBJECTS = [f"{i:03d}" for i in range(1, 9)]
FRAMES = 16  # one short window per walk keeps the embedding under ~20 s on one core
THRESHOLD = 0.7788  # the shipped model's calibrated threshold


@pytest.fixture(scope="module")
def real_walks(casia_root) -> RealWalks:
    from model.dataset import load_sequence, trim_to_network_width
    from service.pipeline.embed import OnnxEmbedder

    embedder = OnnxEmbedder(MODEL, providers="cpu", threads=1, max_batch_frames=16 * FRAMES)  # bounded memory
    table = np.full((len(SUBJECTS), CELLS), -1, np.int32)
    inputs = []
    for s, subject in enumerate(SUBJECTS):
        for c, condition in enumerate(CONDITIONS):
            for v, view in enumerate(VIEWS):
                folder = casia_root / subject / condition / view
                if not any(folder.glob("*.pkl")):
                    continue  # CASIA-B lacks a few walks
                sils = trim_to_network_width(load_sequence(folder))
                start = max(0, (len(sils) - FRAMES) // 2)
                table[s, (c * len(VIEWS) + v) * WINDOWS] = len(inputs)
                inputs.append(ModelInput(np.ascontiguousarray(sils[start:start + FRAMES])))
    vectors = search_vectors(embedder.embed(inputs))
    return RealWalks(vectors, table, SUBJECTS, embedder.model_id, parts=16)


def top_subjects(ids: np.ndarray, k: int = 10) -> list[int]:
    subjects: list[int] = []
    for sequence_id in ids.tolist():
        if sequence_id >= 0 and sequence_id // PER_IDENTITY not in subjects:
            subjects.append(sequence_id // PER_IDENTITY)
    return subjects[:k]


@pytest.mark.data
@pytest.mark.slow
def test_top10_subjects_and_decisions_equal_exhaustive_on_real_embeddings(real_walks: RealWalks) -> None:
    size = 20_000
    chimeras = ChimeraGallery(real_walks, seed=3)
    gallery = chimeras.sequences(0, size)
    rng = np.random.default_rng(5)
    identities = size // PER_IDENTITY
    queries = chimeras.fresh_walks(np.concatenate([rng.choice(identities, 80, replace=False),
                                                   identities + np.arange(20)]))  # 20 strangers

    exact = queries @ gallery.T
    truth = np.argsort(-exact, axis=1)[:, :10 * PER_IDENTITY]

    index = CompactIndex(gallery.shape[1], CompactSpec(train_size=8192),
                         full_vectors=lambda ids: (ids, gallery[ids]))
    for start in range(0, size, 5000):
        index.add(np.arange(start, start + 5000, dtype=np.int64), gallery[start:start + 5000])
    assert index.trained and index.memory_bytes() / size < 512
    scores, found = index.search(queries, 10 * PER_IDENTITY)

    same_top10 = [top_subjects(f) == top_subjects(t) for f, t in zip(found, truth)]
    assert np.mean(same_top10) >= 0.99
    exact_best = exact.max(axis=1)
    decision = [top_subjects(f)[0] if s[0] >= THRESHOLD else None for f, s in zip(found, scores)]
    expected = [top_subjects(t)[0] if b >= THRESHOLD else None for t, b in zip(truth, exact_best)]
    assert decision == expected
    assert {d is None for d in expected} == {True, False}  # both decisions occur
    np.testing.assert_allclose(scores[:, 0], exact_best, atol=1e-5)  # re-ranked scores are exact

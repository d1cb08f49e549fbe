"""Evaluation metrics: per-part distances (euclidean, and cosine through the contract's similarity),
checked against a plain loop, and the two metrics' agreement where theory says they must agree."""

from __future__ import annotations

import numpy as np
import pytest

from gaitid.contract import similarities
from model.evaluation import EvaluationError, evaluate_embeddings, pairwise_distance
from tests.model.conftest import CASIA_VIEWS, casia_labels, clustered

# ------------------------------------------------------------------------------------------------
# Distances
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distance_matches_a_per_part_loop(metric):
    rng = np.random.default_rng(0)
    probe, gallery = rng.normal(size=(7, 5, 3)), rng.normal(size=(4, 5, 3))
    gallery[1, :, 2] = 0.0  # an all-zero part: cosine must treat it as similarity 0, not NaN
    want = np.zeros((7, 4))
    for i in range(7):
        for j in range(4):
            for p in range(3):
                a, b = probe[i, :, p], gallery[j, :, p]
                if metric == "euclidean":
                    want[i, j] += np.linalg.norm(a - b) / 3
                else:
                    denom = max(np.linalg.norm(a), 1e-12) * max(np.linalg.norm(b), 1e-12)
                    want[i, j] += (1 - a @ b / denom) / 3
    # chunk_bytes small enough that every probe row is its own chunk: the chunking is exercised too
    for chunk_bytes in (1, 1 << 26):
        got = pairwise_distance(probe.astype(np.float32), gallery.astype(np.float32), metric, chunk_bytes)
        assert got.shape == (7, 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # float64 inputs: euclidean keeps float64; cosine is the contract's similarity, float32 like the gallery's
    precise = pairwise_distance(probe, gallery, metric)
    tolerance = 1e-12 if metric == "euclidean" else 1e-6
    assert precise.dtype == (np.float64 if metric == "euclidean" else np.float32)
    np.testing.assert_allclose(precise, want, rtol=tolerance, atol=tolerance)


def test_cosine_distance_is_one_minus_the_contract_similarity():
    """Evaluation ranks by exactly the number the gallery searches with."""
    rng = np.random.default_rng(9)
    probe, gallery = rng.normal(size=(6, 32, 16)), rng.normal(size=(9, 32, 16))
    np.testing.assert_array_equal(pairwise_distance(probe, gallery, "cosine"), 1.0 - similarities(probe, gallery))
    with pytest.raises(EvaluationError, match="NaN"):
        pairwise_distance(np.full((1, 4, 2), np.nan), gallery[:, :4, :2], "cosine")


def test_euclidean_and_cosine_agree_on_unit_vectors_with_one_part():
    # For unit vectors |a - b|^2 = 2 - 2 cos(a, b): with a single part both metrics rank identically.
    rng = np.random.default_rng(1)
    labels = casia_labels(["001", "002", "003"], CASIA_VIEWS[:4])
    x, _ = clustered(labels, rng, channels=8, parts=1, noise=0.6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    euc, cos = pairwise_distance(x, x, "euclidean"), pairwise_distance(x, x, "cosine")
    np.testing.assert_allclose(euc**2, 2 * cos, atol=1e-5)

    result = evaluate_embeddings(x, labels, "casia-b", "both")
    for name in ("NM", "BG", "CL"):
        a, b = result["euclidean"].condition(name), result["cosine"].condition(name)
        np.testing.assert_array_equal(a.accuracy[1], b.accuracy[1])
    # the noise is large enough that this is not a trivially perfect case
    assert result["euclidean"].condition("CL").mean() < 100


def test_distance_rejects_mismatched_layouts():
    with pytest.raises(EvaluationError, match="differs"):
        pairwise_distance(np.zeros((2, 4, 3)), np.zeros((2, 4, 2)))
    with pytest.raises(EvaluationError, match="unknown metric"):
        pairwise_distance(np.zeros((2, 4, 3)), np.zeros((2, 4, 3)), "manhattan")

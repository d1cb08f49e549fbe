"""The evaluation protocols (CASIA-B, CCPG, SUSTech1K) on embeddings whose right answer is known by
construction."""

from __future__ import annotations

import numpy as np
import pytest

from model.evaluation import EvaluationError, evaluate_embeddings
from tests.model.conftest import CASIA_VIEWS, casia_labels, clustered


def index_of(labels, key) -> int:
    return labels.index(key)


# ------------------------------------------------------------------------------------------------
# CASIA-B
# ------------------------------------------------------------------------------------------------


def test_casia_b_separated_subjects_score_100_everywhere():
    rng = np.random.default_rng(2)
    labels = casia_labels([f"{i:03d}" for i in range(75, 80)])
    x, _ = clustered(labels, rng)
    result = evaluate_embeddings(x, labels, "casia-b", "both")
    assert (result.num_sequences, result.num_subjects) == (len(labels), 5)
    for metric in ("euclidean", "cosine"):
        for cond in result[metric].conditions:
            assert cond.views == CASIA_VIEWS
            assert cond.num_probes == 5 * 2 * 11 and cond.num_gallery == 5 * 4 * 11
            np.testing.assert_array_equal(cond.accuracy[1], np.full((11, 11), 100.0))
            assert cond.mean(exclude_identical=True) == cond.mean(exclude_identical=False) == 100.0
    assert result.summary()["euclidean"]["CL"]["rank1"] == 100.0


def test_casia_b_planted_confusion_gives_the_exact_rank1():
    rng = np.random.default_rng(3)
    subjects = [f"{i:03d}" for i in range(75, 80)]
    labels = casia_labels(subjects)
    x, centres = clustered(labels, rng)
    # One NM probe of subject 075 in view 090 sits on subject 076's centre: wrong in every gallery view.
    x[index_of(labels, ("075", "nm-05", "090"))] = centres["076"]
    nm = evaluate_embeddings(x, labels, "casia-b", "euclidean")["euclidean"].condition("NM")

    probes_per_view = len(subjects) * 2  # nm-05 and nm-06
    wrong_view_cell = 100 * (probes_per_view - 1) / probes_per_view
    row = CASIA_VIEWS.index("090")
    expected = np.full((11, 11), 100.0)
    expected[row] = wrong_view_cell
    np.testing.assert_allclose(nm.accuracy[1], expected)
    np.testing.assert_allclose(nm.per_probe_view()[row], wrong_view_cell)
    np.testing.assert_allclose(nm.mean(), (10 * 100 + wrong_view_cell) / 11)
    # BG and CL did not move
    result = evaluate_embeddings(x, labels, "casia-b", "euclidean")
    assert result["euclidean"].condition("BG").mean() == result["euclidean"].condition("CL").mean() == 100.0


def test_identical_view_exclusion_changes_a_constructed_case():
    """Two subjects A, B; two views. The gallery of view 090 is laid out so that same-view matching is
    right and cross-view matching mostly wrong (1-D part, 2 channels, by hand):

        gallery nm-01: A/000 (0, 0)   B/000 (10, 0)   A/090 (20, 10)   B/090 (0, 10)
        probe   nm-05: A/000 (1, 0)   B/000 (9, 0)    A/090 (19, 10)   B/090 (1, 10)

    Probe view 000: same view both right; vs 090 gallery A(1,0) -> B/090 (wrong), B(9,0) -> B/090
    (right): [100, 50]. Probe view 090: same view both right; vs 000 gallery A(19,10) -> B/000
    (wrong), B(1,10) -> A/000 (wrong): [0, 100].
    """
    labels = [("A", "nm-01", "000"), ("B", "nm-01", "000"), ("A", "nm-01", "090"), ("B", "nm-01", "090"),
              ("A", "nm-05", "000"), ("B", "nm-05", "000"), ("A", "nm-05", "090"), ("B", "nm-05", "090")]
    x = np.array([[0, 0], [10, 0], [20, 10], [0, 10], [1, 0], [9, 0], [19, 10], [1, 10]], dtype=np.float32)
    nm = evaluate_embeddings(x, labels, "casia-b", "euclidean")["euclidean"].condition("NM")
    np.testing.assert_array_equal(nm.accuracy[1], [[100, 50], [0, 100]])
    np.testing.assert_allclose(nm.per_probe_view(exclude_identical=True), [50, 0])
    np.testing.assert_allclose(nm.per_probe_view(exclude_identical=False), [75, 50])
    assert nm.mean(exclude_identical=True) == 25.0
    assert nm.mean(exclude_identical=False) == 62.5
    # BG and CL have no probes here: NaN, reported as "not measured", not as 0
    bg = evaluate_embeddings(x, labels, "casia-b", "euclidean")["euclidean"].condition("BG")
    assert bg.num_probes == 0 and np.isnan(bg.mean())


def test_bad_inputs_raise_typed_errors():
    labels = casia_labels(["001"], ["000"])
    x = np.zeros((len(labels), 4, 2), dtype=np.float32)
    with pytest.raises(EvaluationError, match="unknown protocol"):
        evaluate_embeddings(x, labels, "oumvlp")
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate_embeddings(x, labels, "casia-b", "hamming")
    with pytest.raises(EvaluationError, match="labels"):
        evaluate_embeddings(x[:-1], labels)
    with pytest.raises(EvaluationError, match="no sequence follows the ccpg"):
        evaluate_embeddings(x, labels, "ccpg")


# ------------------------------------------------------------------------------------------------
# CCPG
# ------------------------------------------------------------------------------------------------

CCPG_CONDITIONS = ["U0_D0", "U0_D0_BG", "U1_D1", "U2_D2", "U3_D3", "U0_D3", "U1_D0"]


def test_ccpg_pairs_views_and_separated_subjects():
    rng = np.random.default_rng(4)
    subjects = [f"{i:03d}" for i in range(101, 107)]
    folders = ["01_1", "02_1", "03_2"]  # CCPG view folders: the part before "_" is the camera
    labels = [(s, c, v) for s in subjects for c in CCPG_CONDITIONS for v in folders]
    x, _ = clustered(labels, rng)
    result = evaluate_embeddings(x, labels, "ccpg", "euclidean")["euclidean"]
    assert [c.name for c in result.conditions] == ["CL", "UP", "DN", "BG"]
    n_views = len(folders)
    expected_sizes = {"CL": (2, 3), "UP": (1, 1), "DN": (1, 1), "BG": (1, 1)}  # conditions in probe, gallery
    for cond in result.conditions:
        assert cond.views == ["01", "02", "03"]
        n_probe_conditions, n_gallery_conditions = expected_sizes[cond.name]
        assert cond.num_probes == len(subjects) * n_probe_conditions * n_views
        assert cond.num_gallery == len(subjects) * n_gallery_conditions * n_views
        assert cond.mean() == 100.0
        assert cond.reid.rank1 == cond.reid.mean_ap == cond.reid.mean_inp == 100.0
        assert cond.reid.valid_probes == cond.num_probes


def test_ccpg_reid_scores_on_a_hand_built_ranking():
    """BG pair (probe U0_D0_BG, gallery U0_D0), one channel, one part; positions on a line.

        gallery: A/01 at 0, A/02 at 1, B/02 at 2, A/03 at 3, B/03 at 4
        probes (view 01): A at 0, B at 3.4

    ReID: probe A drops A/01 (same subject, same view): ranking A/02, B/02, A/03, B/03 -> hits at ranks
    1 and 3: rank-1 right, AP (1/1 + 2/3)/2, INP 2/3. Probe B: A/03, B/03, B/02, A/02, A/01 -> hits at
    ranks 2 and 3: rank-1 wrong, AP (1/2 + 2/3)/2, INP 2/3.
    View table, probe view 01: vs gallery 01 (only A): A right, B wrong -> 50; vs 02: both right -> 100;
    vs 03: A right, B -> A/03 wrong -> 50.
    """
    labels = [("A", "U0_D0", "01"), ("A", "U0_D0", "02"), ("B", "U0_D0", "02"), ("A", "U0_D0", "03"),
              ("B", "U0_D0", "03"), ("A", "U0_D0_BG", "01"), ("B", "U0_D0_BG", "01")]
    x = np.array([0, 1, 2, 3, 4, 0, 3.4], dtype=np.float64)[:, None, None]
    bg = evaluate_embeddings(x, labels, "ccpg", "euclidean")["euclidean"].condition("BG")
    assert bg.reid.valid_probes == 2
    assert bg.reid.rank1 == 50.0
    np.testing.assert_allclose(bg.reid.mean_ap, 100 * ((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    np.testing.assert_allclose(bg.reid.mean_inp, 100 * 2 / 3)
    np.testing.assert_array_equal(bg.accuracy[1][0], [50, 100, 50])
    assert np.isnan(bg.accuracy[1][1:]).all()  # no probes in views 02 and 03
    assert bg.mean(exclude_identical=True) == 75.0
    np.testing.assert_allclose(bg.mean(exclude_identical=False), 200 / 3)


def test_ccpg_reid_skips_probes_whose_only_match_is_same_view():
    # UP pair: probe U3_D3, gallery U0_D3. Subject C's only gallery entry shares the probe's view.
    labels = [("A", "U0_D3", "01"), ("A", "U0_D3", "02"), ("C", "U0_D3", "01"),
              ("A", "U3_D3", "01"), ("C", "U3_D3", "01")]
    x = np.array([0.0, 0.1, 5.0, 0.05, 5.05])[:, None, None]
    up = evaluate_embeddings(x, labels, "ccpg", "euclidean")["euclidean"].condition("UP")
    assert up.reid.valid_probes == 1 and up.reid.rank1 == 100.0


# ------------------------------------------------------------------------------------------------
# SUSTech1K
# ------------------------------------------------------------------------------------------------

SUSTECH_CONDITIONS = ["00-nm", "01-nm", "01-bg", "02-cl-ub", "03-cr", "04-nt", "04-oc", "05-uf"]


def test_sustech1k_groups_attributes_and_reports_rank5():
    rng = np.random.default_rng(5)
    subjects = [f"{i:04d}" for i in range(6)]
    views = ["000", "090"]
    labels = [(s, c, v) for s in subjects for c in SUSTECH_CONDITIONS for v in views]
    x, centres = clustered(labels, rng, channels=32, noise=0.01)
    # Subject 0000's bag probe in view 000 lies closer to 0001 than to itself: wrong at rank 1, but its
    # own subject is second, so right at rank 5.
    x[index_of(labels, ("0000", "01-bg", "000"))] = 0.45 * centres["0000"] + 0.55 * centres["0001"]
    result = evaluate_embeddings(x, labels, "sustech1k", "cosine")["cosine"]

    counts = {c.name: c.num_probes for c in result.conditions}
    n = len(subjects) * len(views)
    assert counts == {"Normal": n, "Bag": n, "Clothing": n, "Carrying": n, "Umbrella": n, "Uniform": n,
                      "Occlusion": n, "Night": n,
                      "Overall": n * 6}  # sequences numbered 01..04: 01-nm 01-bg 02-cl-ub 03-cr 04-nt 04-oc
    assert all(c.num_gallery == n for c in result.conditions)  # 00-nm

    bag, overall = result.condition("Bag"), result.condition("Overall")
    np.testing.assert_allclose(bag.per_probe_view(1), [100 * 5 / 6, 100])
    np.testing.assert_allclose(bag.mean(1), (100 * 5 / 6 + 100) / 2)
    np.testing.assert_allclose(overall.per_probe_view(1), [100 * (36 - 1) / 36, 100])
    assert bag.mean(5) == overall.mean(5) == 100.0
    for name in ("Normal", "Clothing", "Umbrella", "Night", "Uniform"):
        assert result.condition(name).mean(1) == 100.0
    summary = evaluate_embeddings(x, labels, "sustech1k", "cosine").summary()["cosine"]["Bag"]
    assert set(summary) == {"rank1", "rank1_incl_identical", "rank5", "rank5_incl_identical"}

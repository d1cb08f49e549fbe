"""Threshold calibration (gallery.calibration): pair and open-set protocols against brute force,
and the `gaitid calibrate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery import calibrate
from tests.gallery.synthetic import direct_similarity, labelled


def test_calibrate_pairs_matches_brute_force(rng: np.random.Generator) -> None:
    embs, labels = labelled(rng, subjects=12, per_subject=4, noise=5.5)  # overlapping score ranges
    report = calibrate(embs, labels, target_far=0.05)
    genuine, impostor = [], []
    for i in range(len(embs)):
        for j in range(i + 1, len(embs)):
            (genuine if labels[i] == labels[j] else impostor).append(direct_similarity(embs[i], embs[j]))
    genuine, impostor = np.array(genuine), np.array(impostor)
    assert report.genuine_trials == len(genuine) == 12 * 6 and report.impostor_trials == len(impostor)
    # Same trials and scores as a direct computation (float32 index arithmetic vs float64 here).
    np.testing.assert_allclose(report.genuine_scores, np.sort(genuine), atol=1e-5)
    np.testing.assert_allclose(report.impostor_scores, np.sort(impostor), atol=1e-5)
    t = report.threshold
    scores_imp, scores_gen = report.impostor_scores, report.genuine_scores
    assert report.far_at_threshold == np.mean(scores_imp >= t) and report.frr_at_threshold == np.mean(scores_gen < t)
    assert report.far_at_threshold <= 0.05
    # Lowest such threshold: accepting the next impostor score below it would break the target.
    assert np.mean(scores_imp >= scores_imp[scores_imp < t].max()) > 0.05
    _, far, frr = report.curve()
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0)
    assert 0.0 < report.eer < 0.5
    eer_far, eer_frr = report.rates_at(report.eer_threshold)
    assert abs(eer_far - eer_frr) <= 1 / report.genuine_trials  # FAR and FRR cross there (one step apart)
    assert report.eer == pytest.approx((eer_far + eer_frr) / 2)


def test_calibrate_open_set_counts_unenrolled_probes_as_impostors(rng: np.random.Generator) -> None:
    embs, labels = labelled(rng, subjects=10, per_subject=3, noise=1.5)
    subject_index = np.repeat(np.arange(10), 3)
    gallery_mask = (np.tile([True, False, False], 10)) & (subject_index < 7)  # subjects 7-9 never enrolled
    report = calibrate(embs, labels, gallery_mask=gallery_mask, target_far=0.0)
    assert report.mode == "open-set"
    assert report.genuine_trials == 7 * 2 and report.impostor_trials == 3 * 3
    assert report.far_at_threshold == 0.0
    assert report.threshold > report.impostor_scores.max()
    # The well-separated synthetic identities are recognised at that threshold.
    assert report.frr_at_threshold < 0.5 and report.misidentified == 0


def test_calibrate_cli(tmp_path: Path, rng: np.random.Generator) -> None:
    from gaitid.cli import app as gaitid_cli  # the CLI composes the gallery, not the other way

    embs, labels = labelled(rng, subjects=6, per_subject=3, noise=2.0)
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=embs, labels=labels)
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(gaitid_cli, ["calibrate", str(path), "--target-far", "0.1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "threshold at FAR <= 0.1" in result.output and "| threshold | FAR | FRR |" in result.output
    summary = json.loads(out.read_text())
    assert summary["threshold"] == pytest.approx(calibrate(embs, labels, target_far=0.1).threshold)
    bad = CliRunner().invoke(gaitid_cli, ["calibrate", str(tmp_path / "missing.npz")])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_calibrate_scores_by_the_contracts_similarity(rng: np.random.Generator) -> None:
    from gallery import InvalidInputError

    embs, labels = labelled(rng, subjects=4, per_subject=2, noise=1.0)
    default = calibrate(embs, labels, target_far=0.1)
    explicit = calibrate(embs, labels, target_far=0.1, similarity="part-cosine")
    np.testing.assert_array_equal(default.impostor_scores, explicit.impostor_scores)
    with pytest.raises(InvalidInputError, match="unknown similarity"):
        calibrate(embs, labels, similarity="euclidean")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        calibrate(np.full((8, 4, 2), np.nan), labels)  # the contract's check, as the gallery's error


def test_open_set_ranks_and_fnir_at_fpir_against_brute_force(rng: np.random.Generator) -> None:
    """Rank-k and FNIR@FPIR from the report equal a direct per-subject search in float64."""
    embs, labels = labelled(rng, subjects=14, per_subject=4, noise=12.0)  # noisy: some probes rank > 1
    subject_index = np.repeat(np.arange(14), 4)
    gallery_mask = np.tile([True, True, False, False], 14) & (subject_index < 8)  # 8 enrolled, 6 strangers
    report = calibrate(embs, labels, gallery_mask=gallery_mask, target_far=0.1)

    enrolled = sorted(set(np.asarray(labels)[gallery_mask]))
    ranks, tops, correct = [], [], []
    impostor = []
    for i in np.flatnonzero(~gallery_mask):
        per_subject = {s: max(direct_similarity(embs[i], embs[j]) for j in np.flatnonzero(gallery_mask)
                              if labels[j] == s) for s in enrolled}
        best = max(per_subject, key=per_subject.get)
        if labels[i] in per_subject:
            ranks.append(1 + sum(v > per_subject[labels[i]] for v in per_subject.values()))
            tops.append(per_subject[best])
            correct.append(best == labels[i])
        else:
            impostor.append(per_subject[best])
    ranks = np.array(ranks)
    assert 1 < ranks.max() and (ranks == 1).any()  # the case is not trivial
    np.testing.assert_array_equal(np.sort(report.true_subject_ranks), np.sort(ranks))
    assert report.rank_rate(1) == pytest.approx(np.mean(ranks == 1))
    assert report.rank_rate(5) == pytest.approx(np.mean(ranks <= 5))
    assert report.misidentified == int(np.sum(~np.array(correct)))
    # The report's trials are the brute-force ones (float32 index arithmetic vs float64 here) ...
    np.testing.assert_allclose(report.impostor_scores, np.sort(impostor), atol=1e-5)
    genuine = np.sort(np.where(correct, tops, -np.inf))
    np.testing.assert_allclose(report.genuine_scores, genuine, atol=1e-5)
    # ... and FNIR@FPIR is read off them at the lowest threshold meeting the FPIR.
    scores_imp, scores_gen = report.impostor_scores, report.genuine_scores
    for fpir in (0.5, 1 / 6, 0.0):
        fnir, threshold = report.fnir_at_fpir(fpir)
        assert np.mean(scores_imp >= threshold) <= fpir + 1e-12
        below = scores_imp[scores_imp < threshold]
        if len(below):  # one impostor score lower and the FPIR would be broken
            assert np.mean(scores_imp >= below.max()) > fpir
        assert fnir == pytest.approx(np.mean(scores_gen < threshold))
    summary = report.summary()
    assert [p["fpir"] for p in summary["fnir_at_fpir"]] == [0.1, 0.01, 0.003]
    assert summary["rank1"] == pytest.approx(np.mean(ranks == 1))


def test_pairs_report_has_no_ranks(rng: np.random.Generator) -> None:
    embs, labels = labelled(rng, subjects=5, per_subject=3, noise=2.0)
    report = calibrate(embs, labels)
    assert report.true_subject_ranks is None and report.rank_rate(1) is None


def test_det_plot_is_a_png_with_the_curve(tmp_path: Path, rng: np.random.Generator) -> None:
    pytest.importorskip("matplotlib")
    from gallery.det_plot import write_det_plot

    embs, labels = labelled(rng, subjects=10, per_subject=4, noise=7.0)  # overlapping: a real curve
    mask = np.tile([True, True, False, False], 10) & (np.repeat(np.arange(10), 4) < 6)
    report = calibrate(embs, labels, gallery_mask=mask)
    path = write_det_plot(report, tmp_path / "det" / "curve.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    # Not a blank canvas: the blue curve is drawn (tab:blue = (31, 119, 180)).
    blue = (np.abs(pixels[..., 0] - 31 / 255) < 0.05) & (np.abs(pixels[..., 2] - 180 / 255) < 0.05)
    assert blue.sum() > 50

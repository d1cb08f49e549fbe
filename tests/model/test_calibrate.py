"""calibrate_on_dataset: a model and a labelled tree -> FAR/FRR, through the one embedding interface."""

import numpy as np

from model.calibrate import calibrate_on_dataset
from model.dataset import save_sequence
from tests.model.conftest import subject_frames


def test_calibrates_an_onnx_model_on_a_tree_and_saves_the_embeddings(tmp_path, strip_pool_onnx):
    rng = np.random.default_rng(11)
    root = tmp_path / "sil"
    for s in range(1, 5):
        for cond in ("nm-01", "nm-02", "nm-05"):
            save_sequence(root, f"00{s}", cond, "090", subject_frames(s, rng, 4 + s))
    saved = tmp_path / "embeddings.npz"
    report = calibrate_on_dataset(strip_pool_onnx(["sils"]), root, "001-004", gallery_conditions=("nm-01", "nm-02"),
                                  save_embeddings=saved)
    with np.load(saved) as data:
        assert data["embeddings"].shape == (12, 44, 4)
        assert list(data["labels"]) == [f"00{s}" for s in range(1, 5) for _ in range(3)]
        # subjects 001-002 are enrolled with nm-01/02; everything else probes
        assert int(data["gallery"].sum()) == 4
    # genuine searches: the nm-05 probes of 001-002; impostor searches: every walk of 003-004
    assert (report.mode, report.genuine_trials, report.impostor_trials) == ("open-set", 2, 6)
    # each subject's bar sits in its own columns: genuine scores near 1, impostors far below
    assert report.misidentified == 0 and report.eer == 0.0
    assert report.genuine_scores.min() > 0.99 > report.impostor_scores.max()


def test_calibrate_cli_draws_the_det_curve_and_writes_the_threshold_into_the_model(tmp_path, strip_pool_onnx):
    """`gaitid calibrate MODEL ROOT --det det.png --write-threshold`: the PNG exists, the model file now
    declares the threshold at the target FPIR (and what it was measured on)."""
    from typer.testing import CliRunner

    from gaitid.cli import app
    from gaitid.contract import read_metadata

    rng = np.random.default_rng(5)
    root = tmp_path / "sil"
    for s in range(1, 7):
        for cond in ("nm-01", "nm-02", "nm-05", "bg-01"):
            save_sequence(root, f"00{s}", cond, "090", subject_frames(s, rng, 5))
    model = strip_pool_onnx(["sils"])
    assert read_metadata(model).open_set_threshold is None
    det = tmp_path / "det.png"
    result = CliRunner().invoke(app, ["calibrate", str(model), str(root), "--subjects", "001-006",
                                      "--det", str(det), "--write-threshold", "--target-far", "0.1"])
    assert result.exit_code == 0, result.output
    assert "| FPIR | threshold | FNIR |" in result.output and "rank-1" in result.output
    assert det.read_bytes()[:4] == b"\x89PNG"
    metadata = read_metadata(model)
    expected = calibrate_on_dataset(model, root, "001-006", gallery_conditions=("nm-01", "nm-02", "nm-03", "nm-04"),
                                    target_far=0.1)
    assert metadata.open_set_threshold == round(expected.threshold, 6)
    assert metadata.provenance["calibration"]["target_fpir"] == 0.1
    assert "001-006" in metadata.provenance["calibration"]["dataset"]


def test_write_threshold_refuses_a_checkpoint(tmp_path):
    import pytest

    from model.calibrate import write_threshold

    with pytest.raises(ValueError, match="onnx"):
        write_threshold(tmp_path / "last.pt", report=None, dataset="x")

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

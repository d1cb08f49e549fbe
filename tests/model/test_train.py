"""Training on a small real subset of CASIA-B: the loss goes down, checkpoints resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import ExperimentConfig, load_config
from model.depthgait import build_model
from model.losses import GaitLoss
from model.train import run_training, seed_everything
from model.training_data import PKBatches, SequenceBank, sample_window

CONFIGS = Path(__file__).resolve().parents[2] / "model" / "configs"


def small_config(root, iterations: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "model": {"width": 8, "layers": [1, 1, 1, 1], "num_classes": 4},
        "data": {"silhouette_root": str(root), "train_subjects": "007-010", "frames": 10,
                 "batch_subjects": 4, "batch_per_subject": 4},
        "optim": {"lr": 0.05, "milestones": [1000]},
        "trainer": {"iterations": iterations, "log_every": 5, "save_every": 1000, "seed": 0},
    })


def fixed_batch_loss(model, batch, cfg) -> float:
    with torch.no_grad():
        loss, _ = GaitLoss(cfg.loss)(model.train()(sils=batch["sils"]), batch["labels"])
    return loss.item()


@pytest.mark.data
def test_short_training_run_lowers_the_loss(casia_root, tmp_path):
    cfg = small_config(casia_root, iterations=60)
    bank = SequenceBank.load(cfg.data, cfg.data.train_subjects, need_depth=False)
    assert bank.subjects == ["007", "008", "009", "010"]
    probe = PKBatches(bank, cfg.data, seed=123, train=False).batch(np.random.default_rng(123))
    seed_everything(cfg.trainer.seed)
    initial = build_model(cfg.model)  # same seed -> the weights the run starts from

    summary = run_training(None, tmp_path / "run", resume=False, config=cfg, device="cpu")

    trained = build_model(cfg.model)
    trained.load_state_dict(torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"])
    before, after = fixed_batch_loss(initial, probe, cfg), fixed_batch_loss(trained, probe, cfg)
    assert after < 0.85 * before, (before, after)
    assert summary["iterations"] == 60
    assert all(np.isfinite(h["loss"]) for h in summary["history"])


@pytest.mark.data
def test_resume_continues_from_the_checkpoint(casia_root, tmp_path):
    out = tmp_path / "run"
    run_training(None, out, resume=False, config=small_config(casia_root, iterations=3), device="cpu")
    assert torch.load(out / "last.pt", weights_only=False)["iteration"] == 3
    summary = run_training(None, out, resume=True, config=small_config(casia_root, iterations=5), device="cpu")
    assert [h["iteration"] for h in summary["history"]] == [4, 5]
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1]["iteration"] == 5


def test_windows_are_ordered_and_loop_short_sequences():
    rng = np.random.default_rng(0)
    window = sample_window(100, 30, rng)
    assert len(window) == 30 and np.all(np.diff(window) == 1)
    short = sample_window(7, 30, rng)
    assert len(short) == 30 and set(short) == set(range(7)) and np.all(np.diff(short) >= 0)


def test_reserved_subjects_are_not_in_the_shipped_training_configs():
    from model.config import load_config
    from model.dataset import parse_subject_range

    reserved = {f"{i:03d}" for i in range(1, 7)}
    for path in CONFIGS.glob("*.yaml"):
        subjects = parse_subject_range(load_config(path).data.train_subjects)
        assert not subjects & reserved, path


@pytest.mark.data
def test_batches_are_uint8_frames_the_network_scales(casia_root):
    cfg = small_config(casia_root, iterations=1)
    bank = SequenceBank.load(cfg.data, "007-008", need_depth=False)
    batch = PKBatches(bank, cfg.data.model_copy(update={"batch_subjects": 2}), seed=0).batch(np.random.default_rng(0))
    assert batch["sils"].dtype == torch.uint8 and batch["sils"].shape == (2 * 4, 10, 64, 44)
    assert set(batch["sils"].unique().tolist()) <= set(range(256)) and batch["sils"].max() == 255


@pytest.mark.data
def test_validation_scores_held_out_subjects_under_both_metrics(casia_root, tmp_path):
    cfg = small_config(casia_root, iterations=2)
    cfg.data.val_subjects = "011-012"
    summary = run_training(None, tmp_path / "run", resume=False, config=cfg, device="cpu")
    assert set(summary["validation"]) == {"euclidean", "cosine"}
    for metric in ("euclidean", "cosine"):
        assert set(summary["validation"][metric]) == {"NM", "BG", "CL"}
        assert 0 <= summary["validation"][metric]["NM"]["rank1"] <= 100
    logged = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1] == {"iteration": 2, "validation": summary["validation"]}


def test_shipped_configs_load_and_say_which_opengait_config_they_follow():
    for path in CONFIGS.glob("*.yaml"):
        cfg = load_config(path)
        assert "OpenGait" in path.read_text(), path
        if cfg.model.width == 64:  # the GPU recipes follow OpenGait's CASIA-B DeepGaitV2 config
            assert cfg.model.layers == [1, 1, 1, 1], path


@pytest.mark.data
def test_init_from_seeds_a_new_run_and_is_ignored_on_resume(casia_root, tmp_path):
    """`gaitid train --init-from`: a new run starts from the given weights (here one of our own
    silhouette checkpoints), a resumed run from its checkpoint."""
    from model.train import InitFrom, build_trainer

    source = tmp_path / "source"
    run_training(None, source, resume=False, config=small_config(casia_root, iterations=2), device="cpu")
    weights = torch.load(source / "last.pt", weights_only=False)["model"]

    cfg = small_config(casia_root, iterations=1)
    cfg.trainer.seed = 99  # another seed: a fresh network would differ from the source
    trainer = build_trainer(cfg, torch.device("cpu"), InitFrom(source / "last.pt"))
    for key, value in trainer.model.state_dict().items():
        if key.startswith("encoders."):
            torch.testing.assert_close(value, weights[key], msg=key)
    assert any(not torch.equal(v, weights[k]) for k, v in build_model(cfg.model).state_dict().items()
               if k.startswith("encoders.") and v.is_floating_point())

    out = tmp_path / "run"
    run_training(None, out, resume=False, config=cfg, device="cpu", init=InitFrom(source / "last.pt"))
    resumed_cfg = small_config(casia_root, iterations=2)
    summary = run_training(None, out, resume=True, config=resumed_cfg, device="cpu",
                           init=InitFrom(tmp_path / "no-such-file.pt"))  # would fail if it were read
    assert summary["iterations"] == 2


def test_training_step_statistics_stay_on_the_device():
    """train_step returns tensors (no host sync per step); the loop turns them into floats to log."""
    from model.train import build_trainer, train_step

    cfg = ExperimentConfig.model_validate({
        "model": {"width": 8, "layers": [1, 1, 1, 1], "num_classes": 2},
        "data": {"frames": 6, "batch_subjects": 2, "batch_per_subject": 2},
    })
    trainer = build_trainer(cfg, torch.device("cpu"))
    batch = {"sils": (torch.rand(4, 6, 64, 44) > 0.5).to(torch.uint8) * 255, "labels": torch.tensor([0, 0, 1, 1])}
    stats = train_step(trainer, batch)
    assert set(stats) >= {"loss", "triplet", "ce", "train_acc"}
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in stats.values())
    assert np.isfinite(float(stats["loss"]))

"""`gaitid train`: SGD + multi-step schedule, PxK batches, checkpoint and resume, progress bar with loss
and throughput. The same code runs on CPU and CUDA, each at its speed (model.speed): bf16 autocast where
the hardware has it, channels-last convolution weights, and on CUDA torch.compile, a fused optimiser
and the whole training set on the device (model.device_batches: no host round-trip per step; the loss
statistics stay on the device until a log line needs them).

`run_training` reads as its steps: data, model, optimiser, resume, the loop (one `train_step` per
iteration, logging, checkpoints, time limit, validation), the final checkpoint and validation.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gaitid.contract import ModelInput
from gaitid.progress import progress_bar
from model.checkpoint import current_weights, resolve_device, save_checkpoint
from model.config import ExperimentConfig, load_config
from model.depthgait import DepthGait, build_model
from model.device_batches import DeviceBatches
from model.embedder import TorchEmbedder
from model.losses import GaitLoss
from model.speed import Accelerated, accelerate, portable_optimizer_state, sgd
from model.training_data import PKBatches, SequenceBank, frames_per_batch

LAST_CHECKPOINT = "last.pt"
LOG_FILE = "train_log.jsonl"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- the parts of a run ---------------------------------------------------------------------------


@dataclass
class Trainer:
    """What a training step changes: the network (made fast for the device), its optimiser and schedule."""

    fast: Accelerated  # .model: the network (state_dict, export); .forward: what a step calls
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    criterion: GaitLoss

    @property
    def model(self) -> DepthGait:
        return self.fast.model

    @property
    def device(self) -> torch.device:
        return self.fast.device

    def state(self, cfg: ExperimentConfig, iteration: int, subjects: list[str], batches: object = None) -> dict:
        """The checkpoint: `model` and `config` are what model.checkpoint.load_model reads."""
        state = {"model": self.model.state_dict(), "optimizer": portable_optimizer_state(self.optimizer),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.fast.scaler.state_dict(),
                 "iteration": iteration, "config": cfg.model_dump(mode="json"), "subjects": subjects}
        if isinstance(batches, DeviceBatches):
            state["batches"] = batches.state_dict()
        return state


def load_training_data(cfg: ExperimentConfig) -> SequenceBank:
    bank = SequenceBank.load(cfg.data, cfg.data.train_subjects, need_depth="depths" in cfg.model.modalities)
    if len(bank.subjects) != cfg.model.num_classes:
        # The classifier must have one output per training subject.
        cfg.model.num_classes = len(bank.subjects)
    return bank


def build_trainer(cfg: ExperimentConfig, device: torch.device, init: InitFrom | None = None) -> Trainer:
    model = build_model(cfg.model)
    if init is not None:
        from model.opengait.init_from import init_from

        tqdm.write(init_from(model, init.model, encoders=init.encoders, config_yaml=init.config_yaml).summary())
    fast = accelerate(model, device, amp=cfg.trainer.amp, channels_last=cfg.trainer.channels_last,
                      compile=cfg.trainer.compile)
    optimizer = sgd(fast.model.parameters(), device, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                    weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.optim.milestones, cfg.optim.gamma)
    tqdm.write(f"training on {json.dumps(fast.describe())}")
    return Trainer(fast, optimizer, scheduler, GaitLoss(cfg.loss))


def resume_from(trainer: Trainer, checkpoint: Path, cfg: ExperimentConfig) -> tuple[int, dict | None]:
    """Load `checkpoint` into the trainer; returns the iteration it was saved at and the state of the
    device batch sampler, if the run used one."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    trainer.model.load_state_dict(current_weights(state["model"]))
    if state["optimizer"].get("state") or not state.get("momentum_dropped"):
        trainer.optimizer.load_state_dict(state["optimizer"])
    else:  # a checkpoint shrunk for transport (bench/gpu_run): momentum rebuilds in a few steps
        trainer.optimizer.load_state_dict({**state["optimizer"], "state": {}})
    trainer.scheduler.load_state_dict(state["scheduler"])
    # The schedule in the config wins over the one saved: a resumed run may be given a new length.
    trainer.scheduler.milestones = Counter(cfg.optim.milestones)
    trainer.scheduler.gamma = cfg.optim.gamma
    if state.get("scaler") and trainer.fast.scaler.is_enabled():  # a bf16/fp32 run saves an empty scaler
        trainer.fast.scaler.load_state_dict(state["scaler"])
    tqdm.write(f"resumed from {checkpoint} at iteration {state['iteration']}")
    return state["iteration"], state.get("batches")


def batch_stream(bank: SequenceBank, cfg: ExperimentConfig, start: int, device: torch.device,
                 sampler_state: dict | None = None) -> Iterator[dict]:
    """Endless PxK batches of uint8 frames. On CUDA the whole set lives on the device and batches are
    drawn there (DeviceBatches, resumed exactly from its saved state); on CPU (numpy + OpenCV, far
    faster than the step there) the seed moves with the start iteration so a resumed run does not
    replay the same batches."""
    if device.type == "cuda":
        batches = DeviceBatches(bank, cfg.data, device, seed=cfg.trainer.seed + start)
        if sampler_state is not None:
            batches.load_state_dict(sampler_state)
        return batches
    batches = PKBatches(bank, cfg.data, seed=cfg.trainer.seed + start)
    return iter(DataLoader(batches, batch_size=None, num_workers=0))


def train_step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One optimisation step on one batch; returns the loss statistics as detached tensors on the
    device (reading them is a host sync: the loop does it only when it logs)."""
    dev, fast = trainer.device, trainer.fast
    feeds = {name: batch[name].to(dev, non_blocking=True) for name in trainer.model.modalities}
    labels = batch["labels"].to(dev, non_blocking=True)
    with fast.autocast():
        outputs = fast.forward(**feeds)
        loss, stats = trainer.criterion(outputs, labels)
    trainer.optimizer.zero_grad(set_to_none=True)
    fast.scaler.scale(loss).backward()
    fast.scaler.step(trainer.optimizer)
    fast.scaler.update()
    trainer.scheduler.step()
    return stats


def validate(model: torch.nn.Module, bank: SequenceBank, device: torch.device) -> dict:
    """CASIA-B rank-1 of `bank`'s sequences (all frames), under both evaluation metrics."""
    from model.evaluation import evaluate_embeddings

    sequences = [ModelInput(sils=bank.sils[i], depths=None if bank.depths is None else bank.depths[i])
                 for i in range(len(bank.infos))]
    embeddings = TorchEmbedder(model, device).embed(sequences)
    labels = [(i.subject, i.condition, i.view) for i in bank.infos]
    return evaluate_embeddings(embeddings, labels, protocol="casia-b", metric="both").summary()


def _validate_and_log(model, cfg: ExperimentConfig, device, log: IO[str], iteration: int) -> dict:
    bank = SequenceBank.load(cfg.data, cfg.data.val_subjects, need_depth="depths" in cfg.model.modalities)
    result = validate(model, bank, device)
    _log(log, {"iteration": iteration, "validation": result})
    tqdm.write(f"validation at {iteration}: {json.dumps(result)}")
    return result


def _as_floats(stats: dict) -> dict:
    return {key: float(value) for key, value in stats.items()}


def _log(log: IO[str], record: dict) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitFrom:
    """Start a new run from other weights (`gaitid train --init-from`): an OpenGait DeepGaitV2 checkpoint,
    a converted one, or one of our silhouette checkpoints (model.opengait.init_from says what maps)."""

    model: Path
    encoders: tuple[str, ...] | None = None  # default: every encoder of the network
    config_yaml: Path | None = None  # the OpenGait YAML, when the source is an OpenGait checkpoint


def run_training(
    config_path: Path | None,
    out: Path,
    resume: bool = True,
    overrides: list[str] | None = None,
    device: str = "auto",
    config: ExperimentConfig | None = None,
    init: InitFrom | None = None,
) -> dict:
    """Train (or continue training) into `out`: config.json, train_log.jsonl, last.pt. `init` seeds a
    new run's weights (ignored when resuming: the checkpoint has them).

    Returns {"iterations", "seconds", "history" (stats per step), "validation" (with val_subjects)}.
    """
    cfg = config or load_config(config_path, overrides)
    dev = resolve_device(device)
    torch.set_num_threads(cfg.trainer.threads)
    seed_everything(cfg.trainer.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))

    bank = load_training_data(cfg)
    last = out / LAST_CHECKPOINT
    resuming = resume and last.exists()
    trainer = build_trainer(cfg, dev, None if resuming else init)
    start, sampler_state = resume_from(trainer, last, cfg) if resuming else (0, None)
    batches = batch_stream(bank, cfg, start, dev, sampler_state)
    limits = cfg.trainer

    with open(out / LOG_FILE, "a") as log:
        began = time.monotonic()
        frames_done = 0
        history: list[dict] = []
        trainer.model.train()
        bar = progress_bar(range(start, limits.iterations), initial=start, total=limits.iterations, desc="train",
                           unit="it")
        for iteration in bar:
            stats = train_step(trainer, next(batches))
            done = iteration + 1
            frames_done += frames_per_batch(cfg.data)
            stats.update(iteration=done, lr=trainer.scheduler.get_last_lr()[0])
            history.append(stats)
            elapsed = time.monotonic() - began
            if done % limits.log_every == 0 or done == limits.iterations:
                # wall time too, so CPU/GPU-hours can be read off a run that was resumed several times
                record = _as_floats(stats) | {"frames_per_s": frames_done / elapsed, "time": time.time()}
                bar.set_postfix(loss=f"{record['loss']:.3f}", fps=f"{record['frames_per_s']:.0f}", refresh=False)
                _log(log, record)
            if done % limits.save_every == 0:
                save_checkpoint(last, trainer.state(cfg, done, bank.subjects, batches))
            if limits.time_limit_min and elapsed > limits.time_limit_min * 60:
                tqdm.write(f"time limit reached at iteration {done}")
                break
            if limits.val_every and cfg.data.val_subjects and done % limits.val_every == 0:
                _validate_and_log(trainer.model, cfg, dev, log, done)
                trainer.model.train()
        bar.close()
        done = history[-1]["iteration"] if history else start
        save_checkpoint(last, trainer.state(cfg, done, bank.subjects, batches))
        history = [_as_floats(stats) for stats in history]  # one host sync for the whole run
        summary = {"iterations": done, "seconds": time.monotonic() - began, "history": history}
        if cfg.data.val_subjects:
            summary["validation"] = _validate_and_log(trainer.model, cfg, dev, log, done)
    return summary

"""`gaitid train`: SGD + multi-step schedule, PxK batches, AMP and channels-last on CUDA, checkpoint and
resume, progress bar with loss and throughput. The same code runs on CPU and CUDA.

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
from model.checkpoint import current_weights, resolve_device, save_checkpoint
from model.config import ExperimentConfig, load_config
from model.depthgait import DepthGait, build_model
from model.embedder import TorchEmbedder
from model.losses import GaitLoss
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
    """What a training step changes: the network, its optimiser, schedule and AMP scaler."""

    model: DepthGait
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    criterion: GaitLoss
    device: torch.device
    use_amp: bool

    def state(self, cfg: ExperimentConfig, iteration: int, subjects: list[str]) -> dict:
        """The checkpoint: `model` and `config` are what model.checkpoint.load_model reads."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "iteration": iteration, "config": cfg.model_dump(mode="json"), "subjects": subjects}


def load_training_data(cfg: ExperimentConfig) -> SequenceBank:
    bank = SequenceBank.load(cfg.data, cfg.data.train_subjects, need_depth="depths" in cfg.model.modalities)
    if len(bank.subjects) != cfg.model.num_classes:
        # The classifier must have one output per training subject.
        cfg.model.num_classes = len(bank.subjects)
    return bank


def build_trainer(cfg: ExperimentConfig, device: torch.device) -> Trainer:
    cuda = device.type == "cuda"
    model = build_model(cfg.model).to(device)
    if cuda and cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.optim.milestones, cfg.optim.gamma)
    use_amp = cuda and cfg.trainer.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return Trainer(model, optimizer, scheduler, scaler, GaitLoss(cfg.loss), device, use_amp)


def resume_from(trainer: Trainer, checkpoint: Path, cfg: ExperimentConfig) -> int:
    """Load `checkpoint` into the trainer; returns the iteration it was saved at."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    trainer.model.load_state_dict(current_weights(state["model"]))
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    # The schedule in the config wins over the one saved: a resumed run may be given a new length.
    trainer.scheduler.milestones = Counter(cfg.optim.milestones)
    trainer.scheduler.gamma = cfg.optim.gamma
    trainer.scaler.load_state_dict(state["scaler"])
    tqdm.write(f"resumed from {checkpoint} at iteration {state['iteration']}")
    return state["iteration"]


def batch_stream(bank: SequenceBank, cfg: ExperimentConfig, start: int, device: torch.device) -> Iterator[dict]:
    """Endless PxK batches of uint8 frames. The seed moves with the start iteration so a resumed run
    does not replay the same batches."""
    cuda = device.type == "cuda"
    workers = cfg.data.workers if cuda else 0  # on CPU the workers would compete with the math for cores
    batches = PKBatches(bank, cfg.data, seed=cfg.trainer.seed + start)
    return iter(DataLoader(batches, batch_size=None, num_workers=workers, pin_memory=cuda,
                           persistent_workers=workers > 0))


def train_step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimisation step on one batch; returns the loss statistics."""
    dev = trainer.device
    feeds = {name: batch[name].to(dev, non_blocking=True) for name in trainer.model.modalities}
    labels = batch["labels"].to(dev, non_blocking=True)
    with torch.autocast(dev.type, enabled=trainer.use_amp, dtype=torch.float16):
        outputs = trainer.model(**feeds)
        loss, stats = trainer.criterion(outputs, labels)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
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


def _log(log: IO[str], record: dict) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()


# -- the run --------------------------------------------------------------------------------------


def run_training(
    config_path: Path | None,
    out: Path,
    resume: bool = True,
    overrides: list[str] | None = None,
    device: str = "auto",
    config: ExperimentConfig | None = None,
) -> dict:
    """Train (or continue training) into `out`: config.json, train_log.jsonl, last.pt.

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
    trainer = build_trainer(cfg, dev)
    last = out / LAST_CHECKPOINT
    start = resume_from(trainer, last, cfg) if resume and last.exists() else 0
    batches = batch_stream(bank, cfg, start, dev)
    limits = cfg.trainer

    with open(out / LOG_FILE, "a") as log:
        began = time.monotonic()
        frames_done = 0
        history: list[dict] = []
        trainer.model.train()
        bar = tqdm(range(start, limits.iterations), initial=start, total=limits.iterations, desc="train", unit="it")
        for iteration in bar:
            stats = train_step(trainer, next(batches))
            done = iteration + 1
            frames_done += frames_per_batch(cfg.data)
            elapsed = time.monotonic() - began
            stats.update(iteration=done, lr=trainer.scheduler.get_last_lr()[0], frames_per_s=frames_done / elapsed)
            history.append(stats)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", fps=f"{stats['frames_per_s']:.0f}")
            if done % limits.log_every == 0 or done == limits.iterations:
                _log(log, stats)
            if done % limits.save_every == 0:
                save_checkpoint(last, trainer.state(cfg, done, bank.subjects))
            if limits.time_limit_min and elapsed > limits.time_limit_min * 60:
                tqdm.write(f"time limit reached at iteration {done}")
                break
            if limits.val_every and cfg.data.val_subjects and done % limits.val_every == 0:
                _validate_and_log(trainer.model, cfg, dev, log, done)
                trainer.model.train()
        bar.close()
        done = history[-1]["iteration"] if history else start
        save_checkpoint(last, trainer.state(cfg, done, bank.subjects))
        summary = {"iterations": done, "seconds": time.monotonic() - began, "history": history}
        if cfg.data.val_subjects:
            summary["validation"] = _validate_and_log(trainer.model, cfg, dev, log, done)
    return summary

"""`gaitid train`: SGD + multi-step schedule, PxK batches, AMP and channels-last on CUDA, checkpoint and
resume, progress bar with loss and throughput. The same code runs on CPU and CUDA."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoint import resolve_device, save_checkpoint
from model.config import ExperimentConfig, load_config
from model.data import PKBatches, SequenceBank, frames_per_batch
from model.depthgait import build_model
from model.losses import GaitLoss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def embed_bank(model: torch.nn.Module, bank: SequenceBank, device: torch.device) -> np.ndarray:
    """Embeddings (n, C, P) of every sequence, all frames, one sequence at a time."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in tqdm(range(len(bank.infos)), desc="embedding", unit="seq", leave=False):
            sils = torch.from_numpy(bank.sils[i][None]).float().div_(255.0).to(device)
            depths = None
            if bank.depths is not None:
                depths = torch.from_numpy(bank.depths[i][None]).float().div_(255.0).to(device)
            out.append(model(sils=sils, depths=depths)["embedding"].float().cpu().numpy())
    return np.concatenate(out)


def validate(model: torch.nn.Module, bank: SequenceBank, device: torch.device) -> dict:
    from model.evaluate import evaluate_embeddings

    embeddings = embed_bank(model, bank, device)
    labels = [(i.subject, i.condition, i.view) for i in bank.infos]
    result = evaluate_embeddings(embeddings, labels, protocol="casia-b", metric="euclidean")
    return result.summary()


def run_training(
    config_path: Path | None,
    out: Path,
    resume: bool = True,
    overrides: list[str] | None = None,
    device: str = "auto",
    config: ExperimentConfig | None = None,
) -> dict:
    cfg = config or load_config(config_path, overrides)
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    torch.set_num_threads(cfg.trainer.threads)
    seed_everything(cfg.trainer.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))

    modalities = cfg.model.modalities
    bank = SequenceBank.load(cfg.data, cfg.data.train_subjects, need_depth="depths" in modalities)
    if len(bank.subjects) != cfg.model.num_classes:
        # The classifier must have one output per training subject.
        cfg.model.num_classes = len(bank.subjects)
    model = build_model(cfg.model).to(dev)
    if cuda and cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = GaitLoss(cfg.loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.optim.milestones, cfg.optim.gamma)
    use_amp = cuda and cfg.trainer.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start = 0
    last = out / "last.pt"
    if resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The schedule in the config wins over the one saved: a resumed run may be given a new length.
        scheduler.milestones = Counter(cfg.optim.milestones)
        scheduler.gamma = cfg.optim.gamma
        scaler.load_state_dict(state["scaler"])
        start = state["iteration"]
        tqdm.write(f"resumed from {last} at iteration {start}")

    def checkpoint(iteration: int) -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "iteration": iteration, "config": cfg.model_dump(mode="json"),
                 "subjects": bank.subjects}
        save_checkpoint(last, state)

    # The seed moves with the start iteration so a resumed run does not replay the same batches.
    batches = PKBatches(bank, cfg.data, seed=cfg.trainer.seed + start)
    workers = cfg.data.workers if cuda else 0  # on CPU the workers would compete with the math for cores
    loader = iter(DataLoader(batches, batch_size=None, num_workers=workers, pin_memory=cuda,
                             persistent_workers=workers > 0))
    with open(out / "train_log.jsonl", "a") as log:
        began = time.monotonic()
        frames_done = 0
        history: list[dict] = []
        model.train()
        bar = tqdm(range(start, cfg.trainer.iterations), initial=start, total=cfg.trainer.iterations, desc="train", unit="it")
        iteration = start
        for iteration in bar:
            batch = next(loader)
            sils = batch["sils"].to(dev, non_blocking=True)
            depths = batch["depths"].to(dev, non_blocking=True) if "depths" in batch else None
            labels = batch["labels"].to(dev, non_blocking=True)
            with torch.autocast(dev.type, enabled=use_amp, dtype=torch.float16):
                outputs = model(sils=sils if "sils" in modalities else None, depths=depths)
                loss, stats = criterion(outputs, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            frames_done += frames_per_batch(cfg.data)
            elapsed = time.monotonic() - began
            stats.update(iteration=iteration + 1, lr=scheduler.get_last_lr()[0], frames_per_s=frames_done / elapsed)
            history.append(stats)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", fps=f"{stats['frames_per_s']:.0f}")
            if (iteration + 1) % cfg.trainer.log_every == 0 or iteration + 1 == cfg.trainer.iterations:
                log.write(json.dumps(stats) + "\n")
                log.flush()
            if (iteration + 1) % cfg.trainer.save_every == 0:
                checkpoint(iteration + 1)
            if cfg.trainer.time_limit_min and elapsed > cfg.trainer.time_limit_min * 60:
                tqdm.write(f"time limit reached at iteration {iteration + 1}")
                break
            if cfg.trainer.val_every and cfg.data.val_subjects and (iteration + 1) % cfg.trainer.val_every == 0:
                _validate_and_log(model, cfg, dev, log, iteration + 1)
                model.train()
        bar.close()
        done = iteration + 1 if history else start
        checkpoint(done)
        summary = {"iterations": done, "seconds": time.monotonic() - began, "history": history}
        if cfg.data.val_subjects:
            summary["validation"] = _validate_and_log(model, cfg, dev, log, done)
    return summary


def _validate_and_log(model, cfg: ExperimentConfig, dev, log, iteration: int) -> dict:
    bank = SequenceBank.load(cfg.data, cfg.data.val_subjects, need_depth="depths" in cfg.model.modalities)
    result = validate(model, bank, dev)
    log.write(json.dumps({"iteration": iteration, "validation": result}) + "\n")
    log.flush()
    tqdm.write(f"validation at {iteration}: {json.dumps(result)}")
    return result

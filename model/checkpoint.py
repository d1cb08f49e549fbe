"""Saving and loading training checkpoints (atomic writes; the config travels inside)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from model.config import ExperimentConfig
from model.depthgait import DepthGait, build_model


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash while saving never leaves a truncated checkpoint behind


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(path: str | Path, device: str = "auto") -> tuple[DepthGait, ExperimentConfig]:
    """A trained network in eval mode, and the experiment config it was trained with."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ExperimentConfig.model_validate(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), cfg

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


# State-dict names of checkpoints written before the cross-level term was a named module.
_RENAMED_KEY_PREFIXES = {"fused_stages.": "cross_level.stages."}


def current_weights(weights: dict) -> dict:
    """A saved state dict under the names the network has today."""
    renamed = {}
    for key, value in weights.items():
        for old, new in _RENAMED_KEY_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        renamed[key] = value
    return renamed


def load_model(path: str | Path, device: str = "auto") -> tuple[DepthGait, ExperimentConfig]:
    """A trained network in eval mode, and the experiment config it was trained with.

    Reads {"model": state_dict, "config": ExperimentConfig as JSON}; other fields (optimizer, ...) are
    for resuming and ignored here."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ExperimentConfig.model_validate(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(current_weights(state["model"]))
    return model.to(resolve_device(device)).eval(), cfg

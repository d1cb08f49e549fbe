"""Shared fixtures of the model tests: contract inputs, tiny networks, their checkpoints, and tiny ONNX
embedding models that follow the contract (uint8 inputs scaled inside the graph)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from gaitid.contract import INPUT_MAX
from model.checkpoint import save_checkpoint
from model.config import ExperimentConfig, ModelConfig
from model.depthgait import DepthGait, build_model
from tests.conftest import build_tiny_embedding_model

STRIP_PARTS = 4

# Labelled embeddings (model/evaluation).
CASIA_CONDITIONS = [f"nm-0{i}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]
CASIA_VIEWS = [f"{18 * i:03d}" for i in range(11)]


def casia_labels(subjects: list[str], views: list[str] = CASIA_VIEWS) -> list[tuple[str, str, str]]:
    return [(s, c, v) for s in subjects for c in CASIA_CONDITIONS for v in views]


def clustered(labels, rng, channels=16, parts=4, noise=0.05, scale=1.0) -> tuple[np.ndarray, dict]:
    """Each subject a random centre, each sequence its centre plus small noise."""
    centres = {s: scale * rng.normal(size=(channels, parts)) for s in sorted({lab[0] for lab in labels})}
    x = np.stack([centres[s] + noise * rng.normal(size=(channels, parts)) for s, _, _ in labels])
    return x.astype(np.float32), centres


def tiny_model_config(variant: str = "silhouette", **kw) -> ModelConfig:
    """The smallest DepthGait of a variant: width 8, one block per stage."""
    return ModelConfig(**{"variant": variant, "width": 8, "layers": [1, 1, 1, 1], "num_classes": 5, **kw})


def contract_inputs(n: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs as the contract has them: uint8 binary silhouettes (0 / 255), uint8 depths 0..255."""
    g = torch.Generator().manual_seed(seed)
    sils = (torch.rand(n, frames, 64, 44, generator=g) > 0.5).to(torch.uint8) * INPUT_MAX
    depths = (torch.rand(n, frames, 64, 44, generator=g) * INPUT_MAX).round().to(torch.uint8)
    return sils, depths


def write_checkpoint(path: Path, variant: str = "silhouette", seed: int = 0) -> tuple[Path, DepthGait]:
    """A training checkpoint of a tiny network whose BatchNorm statistics are not the defaults."""
    cfg = ExperimentConfig.model_validate({"model": tiny_model_config(variant).model_dump()})
    torch.manual_seed(seed)
    net = build_model(cfg.model)
    net.train()
    with torch.no_grad():
        sils, depths = contract_inputs(4, 8, seed)
        net(sils=sils, depths=depths)
    save_checkpoint(path, {"model": net.eval().state_dict(), "config": cfg.model_dump(mode="json")})
    return path, net


def strip_pool(frames: torch.Tensor) -> torch.Tensor:
    """(N, T, 64, W) in [0, 1] -> (N, W, STRIP_PARTS): time mean, then each horizontal strip's mean."""
    n, _, h, w = frames.shape
    return frames.mean(1).reshape(n, STRIP_PARTS, h // STRIP_PARTS, w).mean(2).transpose(1, 2)


def strip_pool_weights(inputs: list[str]) -> dict[str, np.ndarray]:
    """`strip_pool` as the projection of tests/conftest.py's tiny model: input k's column w of strip p
    lands in channel k * 44 + w, part p."""
    height, width = 64, 44
    channels = width * len(inputs)
    weights = {}
    for k, name in enumerate(inputs):
        projection = np.zeros((height, width, channels, STRIP_PARTS), np.float32)
        for row in range(height):
            for col in range(width):
                projection[row, col, k * width + col, row // (height // STRIP_PARTS)] = STRIP_PARTS / height
        weights[name] = projection.reshape(height * width, channels * STRIP_PARTS)
    return weights


def write_strip_pool_onnx(path: Path, inputs: list[str]) -> Path:
    """A contract-v2 ONNX embedding model (uint8 inputs, scaling inside) whose embedding is `strip_pool`
    of each input, channels side by side: the shared tiny model with known weights."""
    return build_tiny_embedding_model(path, inputs=inputs, channels=44 * len(inputs), parts=STRIP_PARTS,
                                      weights=strip_pool_weights(inputs))


class StripPoolV1(nn.Module):
    """StripPool as contract v1 had it: float inputs already in [0, 1] (the caller divided by 255)."""

    def forward(self, *frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([strip_pool(f) for f in frames], dim=1)


def write_v1_onnx(path: Path, inputs: list[str], module: nn.Module | None = None) -> Path:
    """A contract-v1 file: float inputs, metadata without a version, the unread `metric`, `extra`."""
    example = tuple(torch.rand(1, 5, 64, 44) for _ in inputs)
    dynamic = {name: {0: "batch", 1: "frames"} for name in inputs} | {"embedding": {0: "batch"}}
    torch.onnx.export(module or StripPoolV1(), example, str(path), input_names=inputs,
                      output_names=["embedding"], dynamic_axes=dynamic, opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "gaitid", json.dumps({
        "architecture": "DepthGait", "variant": "silhouette" if inputs == ["sils"] else "concat",
        "inputs": inputs, "input_height": 64, "input_width": 44, "embedding_channels": 44 * len(inputs),
        "embedding_parts": STRIP_PARTS, "metric": "euclidean", "training_data": "unit test",
        "git_commit": "0" * 40, "extra": {"config": "tiny", "width": 8, "layers": [1, 1, 1, 1], "block": "p3d",
                                          "fp16_weights": False}})
    onnx.save(model, str(path))
    return path


def subject_frames(subject: int, rng: np.random.Generator, frames: int = 6) -> np.ndarray:
    """(T, 64, 64) uint8: a vertical bar whose column depends on the subject, plus a few speckles."""
    array = np.zeros((frames, 64, 64), dtype=np.uint8)
    col = 12 + 6 * subject  # inside the 10..54 columns the 64 -> 44 trim keeps
    array[:, 8:60, col:col + 4] = 255
    array[rng.random(array.shape) < 0.002] = 255
    return array


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Callable[[str], tuple[Path, DepthGait]]:
    """variant -> (checkpoint path, the network saved in it)."""
    return lambda variant="silhouette": write_checkpoint(tmp_path / f"{variant}.pt", variant)


@pytest.fixture
def strip_pool_onnx(tmp_path) -> Callable[[list[str]], Path]:
    """inputs -> a tiny contract-v2 ONNX model over them."""
    return lambda inputs=("sils",): write_strip_pool_onnx(tmp_path / f"strip-{'-'.join(inputs)}.onnx", list(inputs))


@pytest.fixture
def v1_onnx(tmp_path) -> Callable[[list[str]], Path]:
    """inputs -> a contract-v1 ONNX file (float inputs in [0, 1]) of StripPool."""
    return lambda inputs=("sils",): write_v1_onnx(tmp_path / f"v1-{'-'.join(inputs)}.onnx", list(inputs))

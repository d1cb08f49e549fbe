"""Typed experiment configuration. One YAML file per dataset/variant in model/configs/; any field can be
overridden from the command line with `--set section.field=value`. Behaviour is chosen here, not by
editing code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

# silhouette / depth: one DeepGaitV2 encoder on one modality (the paper's single-modality baselines).
# plus / concat / attention / mcf: two encoders fused at every stage (paper Table 7 compares these).
Variant = Literal["silhouette", "depth", "plus", "concat", "attention", "mcf"]
Block = Literal["p3d", "2d", "3d"]
# How F_sd of eq. 6 is read (model/depthgait.py): "fused-stream" carries the fused stream Y_f(i-1)
# through stage i's own blocks; "none" drops the term (per-stage fusion only, the last stage kept).
CrossLevel = Literal["fused-stream", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    variant: Variant = "silhouette"
    block: Block = "p3d"  # OpenGait's DeepGaitV2 'mode'
    width: int = 64  # c in the paper: stage channels are c, 2c, 4c, 8c
    # Blocks per stage. OpenGait's DeepGaitV2 configs use [1, 1, 1, 1] for CASIA-B, CCPG, SUSTech1K and
    # OU-MVLP, and [1, 4, 4, 1] for the larger Gait3D and GREW (configs/deepgaitv2/*.yaml).
    layers: list[int] = Field(default_factory=lambda: [1, 4, 4, 1])
    parts: int = 16  # horizontal pyramid bins
    embedding_dim: int = 256  # separate FC output per part
    num_classes: int = 74  # BNNeck classifier (training subjects)
    fusion_reduction: int = 4  # MCF/attention inner channels = 2C / reduction
    cross_level: CrossLevel = "fused-stream"  # Y_f = X_f + F_sd (paper eq. 6)
    # What retrieval compares (the `embedding` output): the separate FCs' output, or that after the
    # BNNeck's BatchNorm, which centres and scales every channel by training statistics and so spreads
    # part-cosine similarities over the range (chosen per model by measured open-set error).
    inference_feature: Literal["pre-bnneck", "bnneck"] = "pre-bnneck"

    @field_validator("cross_level", mode="before")
    @classmethod
    def _cross_level_from_bool(cls, value):
        # Configs and checkpoints written before the term had a name say true / false.
        if isinstance(value, bool):
            return "fused-stream" if value else "none"
        return value

    @property
    def channels(self) -> list[int]:
        return [self.width * m for m in (1, 2, 4, 8)]

    @property
    def modalities(self) -> list[str]:
        if self.variant == "silhouette":
            return ["sils"]
        if self.variant == "depth":
            return ["depths"]
        return ["sils", "depths"]


class LossConfig(_Strict):
    triplet_margin: float = 0.2
    triplet_weight: float = 1.0
    ce_weight: float = 1.0
    label_smoothing: float = 0.1
    ce_scale: float = 16.0  # logits are cosine similarities; scaled before softmax (OpenGait: 16)


class AugmentConfig(_Strict):
    """OpenGait's CASIA-B training augmentations, applied per sequence (same transform to every frame
    and to both modalities)."""

    horizontal_flip: float = 0.2
    perspective: float = 0.2
    rotate: float = 0.2
    max_rotate_deg: float = 10.0
    erase: float = 0.0  # random erasing probability (GaitBase uses it on other datasets)


class DataConfig(_Strict):
    silhouette_root: Path = Path("data/casia-b")
    depth_root: Path | None = None  # parallel tree for two-modality variants
    train_subjects: str = "007-074"  # 001-006 are reserved for end-to-end video checks: never train on them
    val_subjects: str | None = None  # e.g. "055-074" with train_subjects "007-054" for model selection
    frames: int = 30  # fixed-length training windows
    min_frames: int = 10  # shorter sequences are skipped
    batch_subjects: int = 8  # P in the PxK sampler
    batch_per_subject: int = 16  # K
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    workers: int = 2


class OptimConfig(_Strict):
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = Field(default_factory=lambda: [20000, 40000, 50000])
    gamma: float = 0.1


class TrainerConfig(_Strict):
    iterations: int = 60000
    seed: int = 0
    amp: bool = True  # autocast in the precision the device does well (model.speed.autocast_dtype)
    channels_last: bool = True  # 4-D convolution weights channels-last
    compile: bool | None = None  # torch.compile the training step; None = on CUDA only (slower on CPU here)
    log_every: int = 50
    save_every: int = 1000
    val_every: int = 0  # 0 = only at the end (when val_subjects is set)
    threads: int = 1  # CPU intra-op threads
    time_limit_min: float = 0.0  # stop (and save) after this many minutes; 0 = no limit


class ExperimentConfig(_Strict):
    name: str = "experiment"
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


def _set_path(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config and apply `section.field=value` overrides (values parsed as YAML)."""
    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    raw = raw or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), yaml.safe_load(value))
    return ExperimentConfig.model_validate(raw)

"""DepthGait (Li et al., ACM MM 2025, arXiv 2508.03397), over OpenGait's DeepGaitV2 encoder.

    silhouettes ─ DeepGaitV2 encoder ─┐ F_s (every stage)
                                      ├─ fusion (MCF) ─ X_f ─(+ F_sd)─ Y_f ─► next stage … ─► TP ─► HPP ─► FCs ─► BNNeck
    depth       ─ DeepGaitV2 encoder ─┘ F_d

The classes below follow the paper's order (§3.3-3.5): the two encoders, the fusion of one stage's
features (eqs. 1-5), the cross-level term (eq. 6), then the head. Per stage i:

    F_t = concat(F_s, F_d)                                  (1)
    L_S = PW(Γ(Conv3x3(Γ(PW(F_t)))))   local branch         (2)
    G_S = PW(Γ(Conv5x5(Γ(PW(F_t)))))   global branch        (3)
    W   = softmax over the two modalities of (L_S + G_S)    (4)
    X_f = F_s · W0 + F_d · W1                               (5)
    Y_f = X_f + F_sd                                        (6)

How we read F_sd ("cross-level"), `cross_level: fused-stream` (`CrossLevelStream`): after the first
fusion the two modality streams continue as one fused stream. F_sd at stage i is that stream's previous
output Y_f(i-1) carried through stage i's own residual blocks (same block type, stride and channels as
the encoders' stage i), so the fused representation keeps being refined level by level while each level
re-injects freshly fused modality features. At the first stage there is no earlier level: Y_f = X_f.
`cross_level: none` drops the term: each stage is fused independently and only the last one is kept (an
ablation). Another reading of F_sd is another entry in `CROSS_LEVEL_TERMS`.

Variants (Tables 5-8): silhouette-only and depth-only run one encoder; plus / concat / attention
(single-scale: local branch only) / mcf differ only in how X_f is formed.

Inputs are the contract's raw tensors (gaitid.contract): uint8 (or float) 0..255 silhouettes and
quantised disparities. `DepthGait.forward` scales them to [0, 1] first, the one place that does so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gaitid.contract import INPUT_MAX
from model.config import ModelConfig
from model.modules import (
    HorizontalPyramidPooling,
    ModalityWeights,
    PerFrame,
    SeparateBNNecks,
    SeparateFCs,
    conv3x3,
    make_stage,
    temporal_max_pool,
)

# DeepGaitV2's spatial strides per stage for 64x44 inputs: 64x44 -> 64x44 -> 32x22 -> 16x11 -> 16x11,
# so HPP's 16 bins are one row each.
STAGE_STRIDES = (1, 2, 2, 1)


def unit_range(frames: torch.Tensor | None) -> torch.Tensor | None:
    """Contract inputs 0..INPUT_MAX (uint8 or float) -> float32 in [0, 1]. Divides (not multiplies by
    the reciprocal) so the values are bit-identical to what the v1 tooling fed its networks."""
    return None if frames is None else frames.float() / INPUT_MAX


class DeepGaitV2Encoder(nn.Module):
    """One modality's encoder: stem (3x3 conv, per frame) and four stages; stage 0 is 2D, the others
    use cfg.block. `strides` and `stem_maxpool` let OpenGait's GaitBase (a ResNet-9) be the same module
    tree (model/opengait)."""

    def __init__(self, cfg: ModelConfig, strides: Sequence[int] = STAGE_STRIDES, stem_maxpool: bool = False):
        super().__init__()
        ch = cfg.channels
        stem = [conv3x3(1, ch[0]), nn.BatchNorm2d(ch[0]), nn.ReLU(inplace=True)]
        if stem_maxpool:
            stem.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))  # torchvision ResNet's maxpool
        self.stem = PerFrame(nn.Sequential(*stem))
        stages = [make_stage("2d", ch[0], ch[0], cfg.layers[0], strides[0])]
        stages += [make_stage(cfg.block, ch[i - 1], ch[i], cfg.layers[i], strides[i]) for i in range(1, 4)]
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class ModalityFusion(nn.Module):
    """X_f from one stage's (F_s, F_d), frame by frame: eqs. (1)-(5) for mcf / attention."""

    def __init__(self, variant: str, channels: int, reduction: int):
        super().__init__()
        self.variant = variant
        if variant == "concat":
            self.project = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        elif variant in ("attention", "mcf"):
            kernels = (3, 5) if variant == "mcf" else (3,)
            self.weights = ModalityWeights(channels, reduction, kernels)

    def forward(self, f_s: torch.Tensor, f_d: torch.Tensor) -> torch.Tensor:
        if self.variant == "plus":
            return f_s + f_d
        n, c, s, h, w = f_s.shape
        fs = f_s.transpose(1, 2).reshape(n * s, c, h, w)
        fd = f_d.transpose(1, 2).reshape(n * s, c, h, w)
        f_t = torch.cat([fs, fd], dim=1)  # (1)
        if self.variant == "concat":
            x_f = self.project(f_t)
        else:
            weights = self.weights(f_t)  # (2)-(4)
            x_f = fs * weights[:, 0] + fd * weights[:, 1]  # (5)
        return x_f.reshape(n, s, c, h, w).transpose(1, 2)

    def modality_weights(self, f_s: torch.Tensor, f_d: torch.Tensor) -> torch.Tensor:
        """W for inspection and tests: (N*S, 2, C, H, W)."""
        n, c, s, h, w = f_s.shape
        f_t = torch.cat([f_s.transpose(1, 2).reshape(n * s, c, h, w), f_d.transpose(1, 2).reshape(n * s, c, h, w)], 1)
        return self.weights(f_t)


class CrossLevelStream(nn.Module):
    """F_sd of eq. (6) read as a fused stream: Y_f(i-1) carried through stage i's own blocks.

    forward(level, y_previous) -> F_sd at `level` (1..3), shaped like that level's X_f.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch = cfg.channels
        # The fused stream's own stages 1..3 (stage 0 has no earlier level to carry).
        self.stages = nn.ModuleList(
            make_stage(cfg.block, ch[i - 1], ch[i], cfg.layers[i], STAGE_STRIDES[i]) for i in range(1, 4)
        )

    def forward(self, level: int, y_previous: torch.Tensor) -> torch.Tensor:
        return self.stages[level - 1](y_previous)


# cfg.cross_level -> the module computing F_sd; "none" has no term (None).
CROSS_LEVEL_TERMS: dict[str, type[nn.Module] | None] = {"fused-stream": CrossLevelStream, "none": None}


class DepthGait(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.modalities = cfg.modalities
        self.encoders = nn.ModuleDict({m: DeepGaitV2Encoder(cfg) for m in self.modalities})
        self.fused = len(self.modalities) == 2
        self.cross_level: nn.Module | None = None
        if self.fused:
            self.fusions = nn.ModuleList(ModalityFusion(cfg.variant, c, cfg.fusion_reduction) for c in ch)
            term = CROSS_LEVEL_TERMS[cfg.cross_level]
            self.cross_level = term(cfg) if term is not None else None
        self.hpp = HorizontalPyramidPooling(cfg.parts)
        self.fcs = SeparateFCs(cfg.parts, ch[3], cfg.embedding_dim)
        self.bnneck = SeparateBNNecks(cfg.parts, cfg.embedding_dim, cfg.num_classes)

    def encode(self, sils: torch.Tensor | None, depths: torch.Tensor | None) -> torch.Tensor:
        """Frame features before temporal pooling, (N, C, S, h, w), from inputs already in [0, 1]."""
        inputs = {"sils": sils, "depths": depths}
        for name in self.modalities:
            if inputs[name] is None:
                raise ValueError(f"variant {self.cfg.variant!r} needs {name}")
        if not self.fused:
            (name,) = self.modalities
            return self.encoders[name](inputs[name].unsqueeze(1))
        enc_s, enc_d = self.encoders["sils"], self.encoders["depths"]
        f_s, f_d = enc_s.stem(sils.unsqueeze(1)), enc_d.stem(depths.unsqueeze(1))
        y_f = None
        for level, fusion in enumerate(self.fusions):
            f_s, f_d = enc_s.stages[level](f_s), enc_d.stages[level](f_d)
            x_f = fusion(f_s, f_d)  # (1)-(5)
            if y_f is None or self.cross_level is None:
                y_f = x_f
            else:
                y_f = x_f + self.cross_level(level, y_f)  # (6)
        return y_f

    def forward(self, sils: torch.Tensor | None = None, depths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """sils / depths: (N, S, 64, 44), the contract's raw 0..255 values (uint8 or float); any S >= 1.

        Returns `embedding` (N, C, P), what retrieval compares (cfg.inference_feature); `pre_bnneck`, the
        separate FCs' output the triplet loss trains; the BNNeck features; and the cosine logits
        (N, num_classes, P) of the cross-entropy loss.
        """
        frames = self.encode(unit_range(sils), unit_range(depths))
        parts = self.hpp(temporal_max_pool(frames))
        pre_bnneck = self.fcs(parts)
        bn_embedding, logits = self.bnneck(pre_bnneck)
        embedding = bn_embedding if self.cfg.inference_feature == "bnneck" else pre_bnneck
        return {"embedding": embedding, "pre_bnneck": pre_bnneck, "bn_embedding": bn_embedding, "logits": logits}


def build_model(cfg: ModelConfig) -> DepthGait:
    return DepthGait(cfg)

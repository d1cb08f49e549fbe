"""OpenGait's DeepGaitV2 (2d / p3d / 3d) and GaitBase as variants of our model configuration, built
from our blocks (model/modules.py), and the table naming each of our weights in OpenGait's checkpoints.

What OpenGait computes at inference (opengait/modeling/models/deepgaitv2.py, baseline.py,
backbones/resnet.py), and how each step is built here:

    DeepGaitV2                                   GaitBase (Baseline over ResNet9)
    layer0: 3x3 conv, BN, ReLU (per frame)       conv1 (3x3), bn1, relu, [maxpool 3/2/1] (per frame)
    layer1: BasicBlock2D x layers[0], stride 1   layer1..4: torchvision BasicBlocks, strides [1,2,2,1]
    layer2..4: blocks of `mode`, strides 2,2,1
    TP: max over frames                          TP: max over frames
    HPP: 16 strips, mean + max                   HPP: bin_num [16]
    FCs: SeparateFCs(16, c[3], c[2])             FCs: SeparateFCs(parts, in, out)
    BNNecks: BN1d over C*P, cosine classifier    BNNecks: the same
    inference: FCs output, or with use_emb2      inference: FCs output
      the BNNeck feature L2-normalised per part

Both are the same network shape as one DepthGait encoder (model/depthgait.py) with a head, so the
encoder's module tree is DeepGaitV2Encoder's (stem, stages) and a converted DeepGaitV2 can seed
DepthGait's encoders (model/opengait/init_from.py). Inputs follow the contract (uint8 0..255, scaled
to [0, 1] first, as OpenGait's BaseSilCuttingTransform divides by 255).
"""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from model.config import ModelConfig
from model.depthgait import DeepGaitV2Encoder, unit_range
from model.modules import (
    HorizontalPyramidPooling,
    SeparateBNNecks,
    SeparateFCs,
    temporal_max_pool,
)

Architecture = Literal["deepgaitv2-2d", "deepgaitv2-p3d", "deepgaitv2-3d", "gaitbase"]
ARCHITECTURES: tuple[Architecture, ...] = ("deepgaitv2-2d", "deepgaitv2-p3d", "deepgaitv2-3d", "gaitbase")
# Which feature inference returns: the FCs output (OpenGait's embed_1), or with `use_emb2` the BNNeck
# feature that SeparateBNNecks returns (BN, then L2-normalised over channels per part: embed_2).
InferenceFeature = Literal["pre-bnneck", "bnneck-normalised"]

# DeepGaitV2 hard-codes these (deepgaitv2.py): 16 HPP bins, FCs to channels[2], spatial strides 1,2,2,1.
DEEPGAITV2_PARTS = 16
DEFAULT_STRIDES = [1, 2, 2, 1]


class OpenGaitModelConfig(ModelConfig):
    """Our ModelConfig (silhouette variant, one encoder) plus what OpenGait's configs can set beyond it."""

    variant: Literal["silhouette"] = "silhouette"
    architecture: Architecture
    strides: list[int] = DEFAULT_STRIDES  # spatial stride of each stage's first block
    stem_maxpool: bool = False  # ResNet9's `maxpool` flag (every gaitbase config sets it false)
    inference_feature: InferenceFeature = "pre-bnneck"

    @model_validator(mode="after")
    def _consistent(self) -> OpenGaitModelConfig:
        if len(self.layers) != 4 or len(self.strides) != 4:
            raise ValueError(f"OpenGait's networks have 4 stages: layers {self.layers}, strides {self.strides}")
        expected_block = "2d" if self.architecture == "gaitbase" else self.architecture.split("-")[1]
        if self.block != expected_block:
            raise ValueError(f"{self.architecture} uses {expected_block} blocks, not {self.block}")
        if self.architecture.startswith("deepgaitv2"):
            fixed = {"parts": DEEPGAITV2_PARTS, "embedding_dim": self.channels[2], "strides": DEFAULT_STRIDES,
                     "stem_maxpool": False}
            for name, value in fixed.items():
                if getattr(self, name) != value:
                    raise ValueError(f"DeepGaitV2 has {name} = {value} (fixed in its code), got {getattr(self, name)}")
        elif self.inference_feature != "pre-bnneck":
            raise ValueError("GaitBase (Baseline) always returns the FCs output at inference")
        return self

    @property
    def source_model(self) -> str:
        """OpenGait's class name (model_cfg.model)."""
        return "Baseline" if self.architecture == "gaitbase" else "DeepGaitV2"

    @property
    def family(self) -> str:
        """The architecture's name in our metadata (gaitid.contract: DepthGait | DeepGaitV2 | GaitBase)."""
        return "GaitBase" if self.architecture == "gaitbase" else "DeepGaitV2"

    @property
    def mode(self) -> str:
        """DeepGaitV2's Backbone.mode, or 'resnet9' for GaitBase (our metadata's `variant`)."""
        return "resnet9" if self.architecture == "gaitbase" else self.block


class OpenGaitNet(nn.Module):
    """DeepGaitV2 or GaitBase. forward(sils) takes the contract's raw (N, S, 64, 44) 0..255 frames and
    returns DepthGait's outputs: `embedding` is the feature OpenGait's inference returns."""

    def __init__(self, cfg: OpenGaitModelConfig):
        super().__init__()
        self.cfg = cfg
        self.modalities = cfg.modalities
        self.encoders = nn.ModuleDict({"sils": DeepGaitV2Encoder(cfg, cfg.strides, cfg.stem_maxpool)})
        self.hpp = HorizontalPyramidPooling(cfg.parts)
        self.fcs = SeparateFCs(cfg.parts, cfg.channels[3], cfg.embedding_dim)
        self.bnneck = SeparateBNNecks(cfg.parts, cfg.embedding_dim, cfg.num_classes)

    def forward(self, sils: torch.Tensor | None = None, depths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if sils is None:
            raise ValueError(f"{self.cfg.architecture} needs sils")
        if depths is not None:
            raise ValueError(f"{self.cfg.architecture} takes silhouettes only")
        frames = self.encoders["sils"](unit_range(sils).unsqueeze(1))
        parts = self.hpp(temporal_max_pool(frames))
        pre_bnneck = self.fcs(parts)
        bn_embedding, logits = self.bnneck(pre_bnneck)
        if self.cfg.inference_feature == "bnneck-normalised":
            embedding = F.normalize(bn_embedding, dim=1)  # SeparateBNNecks(norm=True) returns this
        else:
            embedding = pre_bnneck
        return {"embedding": embedding, "pre_bnneck": pre_bnneck, "bn_embedding": bn_embedding, "logits": logits}


# --- OpenGait's names for our weights ---------------------------------------------------------------
# Rewrites applied in order to each of our state-dict keys give the key OpenGait's checkpoint stores it
# under. OpenGait wraps per-frame modules in SetBlockWrapper (`forward_block`) where we use PerFrame
# (`module`), calls a block's residual branch `downsample` where we say `shortcut`, and P3D's temporal
# conv `shortcut3d` / `sbn`.
_STAGE_AND_BLOCK_RENAMES: list[tuple[str, str]] = [
    (r"\.stages\.(\d)\.module\.", lambda m: f".layer{int(m[1]) + 1}.forward_block."),  # per-frame stage
    (r"\.stages\.(\d)\.", lambda m: f".layer{int(m[1]) + 1}."),  # p3d / 3d stage
    (r"\.conv([12])\.module\.", r".conv\1.forward_block."),  # p3d's per-frame convs
    (r"\.temporal\.", ".shortcut3d."),
    (r"\.temporal_bn\.", ".sbn."),
    (r"\.shortcut\.", ".downsample."),
]
_HEAD_RENAMES: list[tuple[str, str]] = [
    (r"^fcs\.weight$", "FCs.fc_bin"),
    (r"^bnneck\.weight$", "BNNecks.fc_bin"),
    (r"^bnneck\.bn\.", "BNNecks.bn1d."),
]
KEY_RENAMES: dict[str, list[tuple[str, str]]] = {
    "deepgaitv2": [
        (r"^encoders\.sils\.stem\.module\.", "layer0.forward_block."),
        *_STAGE_AND_BLOCK_RENAMES,
        (r"^encoders\.sils\.", ""),
        *_HEAD_RENAMES,
    ],
    "gaitbase": [  # the whole ResNet9 is one SetBlockWrapper: Backbone.forward_block.*
        (r"^encoders\.sils\.stem\.module\.0\.", "encoders.sils.conv1.conv."),  # BasicConv2d
        (r"^encoders\.sils\.stem\.module\.1\.", "encoders.sils.bn1."),
        *_STAGE_AND_BLOCK_RENAMES,
        (r"\.forward_block\.", "."),  # stages are not wrapped one by one there
        (r"^encoders\.sils\.", "Backbone.forward_block."),
        *_HEAD_RENAMES,
    ],
}


def opengait_key(our_key: str, architecture: Architecture) -> str:
    """The name OpenGait's checkpoint gives to our weight `our_key`."""
    key = our_key
    for pattern, replacement in KEY_RENAMES[architecture.split("-")[0]]:
        key = re.sub(pattern, replacement, key)
    return key


def opengait_key_table(cfg: OpenGaitModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every weight of the network `cfg` describes: OpenGait's key -> (our key, shape)."""
    state = OpenGaitNet(cfg).state_dict()
    table = {opengait_key(key, cfg.architecture): (key, tuple(value.shape)) for key, value in state.items()}
    if len(table) != len(state):  # two of our weights with one OpenGait name: a broken rename rule
        raise AssertionError(f"key renames for {cfg.architecture} are not one-to-one")
    return table

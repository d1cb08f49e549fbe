"""`gaitid train --init-from MODEL`: start DepthGait from trained weights, copying a DeepGaitV2 encoder
(an OpenGait checkpoint, converted on the fly, or one of our silhouette checkpoints) into one or both of
DepthGait's encoders, and the head (separate FCs, BNNeck) wherever its shapes match.

An OpenGait DeepGaitV2 is one DepthGait encoder plus the same head (architectures.py), so the encoder's
weights carry over key for key when block type, width and layer counts agree; anything else is an
error naming the first weight that differs. The fused stream of the cross-level term and the fusion
modules have no counterpart in a single-modality network and keep their initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from model.opengait.architectures import DEFAULT_STRIDES, OpenGaitModelConfig
from model.opengait.convert import map_state
from model.opengait.source import OpenGaitSourceError, read_source

SOURCE_ENCODER = "encoders.sils."
# Head parts copied independently: each only when all its weights match in shape.
HEAD_GROUPS = {"separate FCs": ("fcs.",), "BNNeck batch norm": ("bnneck.bn.",), "BNNeck classifier": ("bnneck.weight",)}


@dataclass
class InitReport:
    source: str
    encoders: list[str] = field(default_factory=list)  # our modalities that were initialised
    head: list[str] = field(default_factory=list)  # HEAD_GROUPS copied
    skipped: dict[str, str] = field(default_factory=dict)  # part -> why it kept its initialisation

    def summary(self) -> str:
        lines = [(f"initialised from {self.source}: encoders {', '.join(self.encoders)}; "
                  f"head: {', '.join(self.head) or 'nothing'}")]
        lines += [f"  kept own initialisation: {part} ({why})" for part, why in self.skipped.items()]
        return "\n".join(lines)


def source_state(source: str | Path, config_yaml: str | Path | None = None) -> dict[str, torch.Tensor]:
    """A DeepGaitV2 state dict under our key names (encoders.sils.*, fcs.*, bnneck.*) from an OpenGait
    checkpoint or one of our training checkpoints of a single-modality silhouette network."""
    path = Path(source)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "config" in raw:  # one of ours (model.checkpoint), not OpenGait's
        from model.checkpoint import load_model

        net, cfg = load_model(path, "cpu")
        if cfg.model.variant != "silhouette":
            raise OpenGaitSourceError(f"{path} is a {cfg.model.variant} DepthGait; --init-from takes a "
                                      f"single-encoder silhouette network (DeepGaitV2)")
        return net.state_dict()
    opengait = read_source(path, None, config_yaml)
    cfg = opengait.config
    if cfg.stem_maxpool or cfg.strides != DEFAULT_STRIDES:
        raise OpenGaitSourceError(f"{path}: a {cfg.architecture} with strides {cfg.strides} and maxpool "
                                  f"{cfg.stem_maxpool} computes differently from DepthGait's encoder")
    return map_state(cfg, opengait.state)


def init_from(net: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *,
              encoders: Sequence[str] | None = None, head: bool = True,
              config_yaml: str | Path | None = None) -> InitReport:
    """Copy a DeepGaitV2's weights into DepthGait `net` (in place). encoders: which of net's modalities
    ("sils", "depths") to initialise, default all of them."""
    if isinstance(source, Mapping):
        state, name = dict(source), "a state dict"
    else:
        state, name = source_state(source, config_yaml), str(source)
    if isinstance(getattr(net, "cfg", None), OpenGaitModelConfig):
        raise TypeError("init_from seeds a DepthGait; an OpenGait network loads its checkpoint directly")
    targets = list(encoders) if encoders is not None else list(net.modalities)
    unknown = [m for m in targets if m not in net.modalities]
    if unknown:
        raise ValueError(f"this DepthGait ({net.cfg.variant}) has no {unknown} encoder; it has {net.modalities}")

    ours = net.state_dict()  # tensors share storage with the parameters: copy_ writes the network
    encoder = {k[len(SOURCE_ENCODER):]: v for k, v in state.items() if k.startswith(SOURCE_ENCODER)}
    report = InitReport(source=name)
    with torch.no_grad():
        for modality in targets:
            prefix = f"encoders.{modality}."
            wanted = {k[len(prefix):]: v for k, v in ours.items() if k.startswith(prefix)}
            _check_same_weights(encoder, wanted, f"encoder {modality!r}", net.cfg)
            for key, value in encoder.items():
                wanted[key].copy_(value)
            report.encoders.append(modality)
        for group, prefixes in HEAD_GROUPS.items():
            keys = [k for k in ours if k.startswith(prefixes)]
            if not head:
                report.skipped[group] = "head not requested"
                continue
            why = _head_mismatch(keys, state, ours)
            if why:
                report.skipped[group] = why
                continue
            for key in keys:
                ours[key].copy_(state[key])
            report.head.append(group)
    if getattr(net, "cross_level", None) is not None:
        report.skipped["cross-level fused stream"] = "no counterpart in a single-modality network"
    return report


def _check_same_weights(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str, cfg) -> None:
    config = f"(this DepthGait: block {cfg.block}, width {cfg.width}, layers {cfg.layers})"
    for key, value in target.items():
        if key not in source:
            raise OpenGaitSourceError(f"{what}: the source has no weight {key!r} {config}")
        if source[key].shape != value.shape:
            raise OpenGaitSourceError(f"{what}: {key} is {tuple(source[key].shape)} in the source, "
                                      f"{tuple(value.shape)} here {config}")
    extra = [k for k in source if k not in target]
    if extra:
        raise OpenGaitSourceError(f"{what}: the source has weights this encoder lacks, e.g. {extra[0]!r} {config}")


def _head_mismatch(keys: list[str], source: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> str:
    for key in keys:
        if key not in source:
            return f"source has no {key}"
        if source[key].shape != ours[key].shape:
            return f"{key} is {tuple(source[key].shape)} in the source, {tuple(ours[key].shape)} here"
    return ""

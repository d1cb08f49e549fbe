"""Reading what OpenGait gives a user: its checkpoint file and, optionally, its YAML config, into our
OpenGaitModelConfig and a float32 state dict under OpenGait's key names.

A checkpoint is `{'model': state_dict, 'optimizer': ..., 'scheduler': ..., 'iteration': N}` (BaseModel
.save_ckpt); keys may carry DDP's `module.` prefix and weights may be fp16. Layer counts, widths, parts,
embedding size and classes are read from the weights' shapes; what shapes cannot tell (GaitBase's strides
and maxpool flag, DeepGaitV2's use_emb2) comes from the YAML, else from OpenGait's released configs
(recorded as assumed in the provenance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from model.opengait.architectures import (
    ARCHITECTURES,
    DEFAULT_STRIDES,
    Architecture,
    OpenGaitModelConfig,
)

DDP_PREFIX = "module."
# OpenGait's configs/default.yaml, merged under every config (utils.config_loader).
DEFAULT_METRIC = "euc"
DEFAULT_TRANSFORM = "BaseSilCuttingTransform"
# Transforms that feed the network binary silhouettes divided by 255, as our contract does.
SILHOUETTE_TRANSFORMS = ("BaseSilCuttingTransform", "BaseSilTransform")
METRIC_NAMES = {"euc": "euclidean", "cos": "cosine"}


class OpenGaitSourceError(ValueError):
    """An OpenGait checkpoint or config cannot be converted; the message says which part and why."""


@dataclass
class OpenGaitSource:
    """What conversion needs from the user's files."""

    config: OpenGaitModelConfig
    state: dict[str, torch.Tensor]  # OpenGait key -> float32 tensor (num_batches_tracked stays int64)
    provenance: dict[str, Any] = field(default_factory=dict)
    training_data: str = ""


def load_checkpoint_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state of an OpenGait checkpoint (prefix-free, float32) and facts about the file."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or non-tensor files
        raise OpenGaitSourceError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OpenGaitSourceError(f"{path} holds no state dict ('model' entry or a plain state dict of tensors)")
    facts: dict[str, Any] = {}
    if isinstance(raw, dict) and isinstance(raw.get("iteration"), int):
        facts["source_iteration"] = raw["iteration"]
    prefixed = [k for k in state if k.startswith(DDP_PREFIX)]
    if prefixed and len(prefixed) != len(state):
        unprefixed = next(k for k in state if not k.startswith(DDP_PREFIX))
        raise OpenGaitSourceError(f"{path} mixes '{DDP_PREFIX}'-prefixed and plain keys (e.g. {unprefixed!r})")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    facts["source_dtypes"] = dtypes
    facts["source_ddp_prefix"] = bool(prefixed)
    cleaned = {}
    for key, value in state.items():
        key = key[len(DDP_PREFIX):] if prefixed else key
        cleaned[key] = value.float() if value.is_floating_point() else value
    return cleaned, facts


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OpenGaitSourceError(f"cannot read OpenGait config {path}: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise OpenGaitSourceError(f"{path} has no model_cfg: not an OpenGait config")
    return cfg


# --- shapes -> config --------------------------------------------------------------------------------


def _require(state: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise OpenGaitSourceError(f"missing key {key!r} ({what}): is this an OpenGait checkpoint of that architecture?")
    return state[key]


def _blocks_per_layer(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Blocks in layer1..layer4 under `prefix` (e.g. 'layer{i}.' or 'Backbone.forward_block.layer{i}.')."""
    counts = []
    for i in range(1, 5):
        pattern = re.compile(re.escape(prefix.format(i=i)) + r"(?:forward_block\.)?(\d+)\.")
        counts.append(len({m[1] for key in state if (m := pattern.match(key))}))
    return counts


def _deepgaitv2_mode(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("layer2.forward_block.") for k in state):
        return "2d"
    if any(k.startswith("layer2.0.conv1.forward_block.") for k in state):
        return "p3d"
    if "layer2.0.conv1.weight" in state and state["layer2.0.conv1.weight"].ndim == 5:
        return "3d"
    raise OpenGaitSourceError("cannot tell DeepGaitV2's mode: no layer2 block weights (missing key 'layer2.0.conv1.*')")


def _head_shapes(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    parts, fc_in, embedding_dim = _require(state, "FCs.fc_bin", "separate FCs").shape
    classes = _require(state, "BNNecks.fc_bin", "BNNeck classifier").shape[2]
    return parts, fc_in, embedding_dim, classes


def _stem_width(state: dict[str, torch.Tensor], key: str) -> int:
    weight = _require(state, key, "stem convolution")
    if weight.shape[1] != 1:
        raise OpenGaitSourceError(f"{key} takes {weight.shape[1]} input channels; the contract feeds 1 (silhouettes)")
    return int(weight.shape[0])


def detect_architecture(state: dict[str, torch.Tensor]) -> Architecture:
    """Which of our architectures a checkpoint's keys belong to."""
    if any(k.startswith("Backbone.forward_block.") for k in state):
        return "gaitbase"
    if any(k.startswith("layer0.forward_block.") for k in state):
        return f"deepgaitv2-{_deepgaitv2_mode(state)}"
    first = next(iter(state), "(empty)")
    raise OpenGaitSourceError(f"not an OpenGait DeepGaitV2 or GaitBase checkpoint (first key {first!r})")


def infer_config(architecture: Architecture, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Config fields the weights' shapes determine, for `architecture`."""
    if architecture not in ARCHITECTURES:
        raise OpenGaitSourceError(f"unknown architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")
    parts, fc_in, embedding_dim, classes = _head_shapes(state)
    if architecture.startswith("deepgaitv2"):
        if any(k.startswith("Backbone.") for k in state):
            raise OpenGaitSourceError(f"this checkpoint is a Baseline (GaitBase: 'Backbone.*' keys), not {architecture}")
        mode = _deepgaitv2_mode(state)
        if f"deepgaitv2-{mode}" != architecture:
            raise OpenGaitSourceError(
                f"this checkpoint is DeepGaitV2 in mode {mode}, not {architecture}: use --arch deepgaitv2-{mode}")
        width = _stem_width(state, "layer0.forward_block.0.weight")
        layers = _blocks_per_layer(state, "layer{i}.")
        block = mode
    else:
        if not any(k.startswith("Backbone.forward_block.") for k in state):
            raise OpenGaitSourceError("this checkpoint has no 'Backbone.forward_block.*' keys: not a GaitBase (Baseline over ResNet9)")
        width = _stem_width(state, "Backbone.forward_block.conv1.conv.weight")
        layers = _blocks_per_layer(state, "Backbone.forward_block.layer{i}.")
        block = "2d"
    if fc_in != 8 * width:
        raise OpenGaitSourceError(
            f"FCs.fc_bin takes {fc_in} channels but the stem is {width} wide: only stage widths c, 2c, 4c, 8c "
            f"(every OpenGait DeepGaitV2 / GaitBase config) are supported")
    return {"architecture": architecture, "block": block, "width": width, "layers": layers, "parts": parts,
            "embedding_dim": embedding_dim, "num_classes": classes}


# --- YAML -> config ----------------------------------------------------------------------------------


def config_from_yaml(architecture: Architecture, cfg: dict[str, Any]) -> dict[str, Any]:
    """Config fields an OpenGait YAML states for `architecture` (only those it states)."""
    model_cfg = cfg["model_cfg"]
    name = model_cfg.get("model")
    expected = "Baseline" if architecture == "gaitbase" else "DeepGaitV2"
    if name != expected:
        raise OpenGaitSourceError(f"the config's model_cfg.model is {name!r}; {architecture} is OpenGait's {expected}")
    fields: dict[str, Any] = {"architecture": architecture}
    if expected == "DeepGaitV2":
        backbone = model_cfg.get("Backbone", {})
        mode = backbone.get("mode")
        if mode is not None and f"deepgaitv2-{mode}" != architecture:
            raise OpenGaitSourceError(f"the config's Backbone.mode is {mode!r}, not {architecture}")
        if backbone.get("in_channels", 1) != 1:
            raise OpenGaitSourceError(f"Backbone.in_channels is {backbone['in_channels']}; the contract feeds 1")
        if "layers" in backbone:
            fields["layers"] = list(backbone["layers"])
        if "channels" in backbone:
            fields.update(_width_from_channels(backbone["channels"], "Backbone.channels"))
        if "class_num" in model_cfg.get("SeparateBNNecks", {}):
            fields["num_classes"] = model_cfg["SeparateBNNecks"]["class_num"]
        fields["inference_feature"] = "bnneck-normalised" if model_cfg.get("use_emb2", False) else "pre-bnneck"
        return fields

    backbone = model_cfg.get("backbone_cfg", {})
    if backbone.get("type") != "ResNet9":
        raise OpenGaitSourceError(f"backbone_cfg.type is {backbone.get('type')!r}: only GaitBase's ResNet9 is supported")
    if backbone.get("block", "BasicBlock") != "BasicBlock":
        raise OpenGaitSourceError(f"backbone_cfg.block is {backbone['block']!r}: only BasicBlock is supported")
    if backbone.get("in_channel", 1) != 1:
        raise OpenGaitSourceError(f"backbone_cfg.in_channel is {backbone['in_channel']}; the contract feeds 1")
    # ResNet9's own defaults where the YAML is silent (backbones/resnet.py).
    fields["layers"] = list(backbone.get("layers", [1, 2, 2, 1]))
    fields["strides"] = list(backbone.get("strides", DEFAULT_STRIDES))
    fields["stem_maxpool"] = bool(backbone.get("maxpool", True))
    fields.update(_width_from_channels(backbone.get("channels", [32, 64, 128, 256]), "backbone_cfg.channels"))
    bins = model_cfg.get("bin_num", [16, 8, 4, 2, 1])
    if len(bins) != 1:
        raise OpenGaitSourceError(f"bin_num {bins}: only a single horizontal pyramid level is supported")
    fields["parts"] = bins[0]
    fcs, bnnecks = model_cfg.get("SeparateFCs", {}), model_cfg.get("SeparateBNNecks", {})
    if fcs.get("norm", False):
        raise OpenGaitSourceError("SeparateFCs.norm: true is not supported")
    if not bnnecks.get("parallel_BN1d", True):
        raise OpenGaitSourceError("SeparateBNNecks.parallel_BN1d: false is not supported")
    if "out_channels" in fcs:
        fields["embedding_dim"] = fcs["out_channels"]
    if "class_num" in bnnecks:
        fields["num_classes"] = bnnecks["class_num"]
    return fields


def _width_from_channels(channels: list[int], where: str) -> dict[str, int]:
    width = channels[0]
    if list(channels) != [width * m for m in (1, 2, 4, 8)]:
        raise OpenGaitSourceError(f"{where} {channels}: only widths c, 2c, 4c, 8c are supported")
    return {"width": width}


def yaml_facts(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(training dataset, provenance facts) from a YAML; refuses inputs that are not silhouettes."""
    evaluator = cfg.get("evaluator_cfg") or {}
    transforms = [t.get("type") for t in evaluator.get("transform", [{"type": DEFAULT_TRANSFORM}])]
    if any(t not in SILHOUETTE_TRANSFORMS for t in transforms):
        raise OpenGaitSourceError(
            f"the config's evaluator transform is {transforms}: this model does not take silhouettes /255 "
            f"({' or '.join(SILHOUETTE_TRANSFORMS)}), which is what the service feeds")
    metric = evaluator.get("metric", DEFAULT_METRIC)
    data = cfg.get("data_cfg") or {}
    dataset = data.get("dataset_name", "")
    return dataset, {
        "source_metric": METRIC_NAMES.get(metric, metric),
        "source_transform": transforms,
        "source_dataset": dataset,
        "source_test_dataset": data.get("test_dataset_name", dataset),
    }


def read_source(checkpoint: str | Path, architecture: Architecture | None,
                config_yaml: str | Path | None = None) -> OpenGaitSource:
    """The checkpoint's state and the config of the network it fits (shapes, checked against the YAML).
    architecture None: the one the checkpoint's keys belong to."""
    state, provenance = load_checkpoint_state(checkpoint)
    architecture = architecture or detect_architecture(state)
    inferred = infer_config(architecture, state)
    fields = dict(inferred)
    assumed: list[str] = []
    training_data = ""
    if config_yaml is not None:
        cfg = read_yaml(config_yaml)
        stated = config_from_yaml(architecture, cfg)
        for name, value in stated.items():
            if name in inferred and inferred[name] != value:
                raise OpenGaitSourceError(
                    f"the config says {name} = {value} but the checkpoint's weights have {inferred[name]}")
        fields.update(stated)
        training_data, facts = yaml_facts(cfg)
        provenance.update(facts)
        provenance["source_config"] = Path(config_yaml).name
    else:
        provenance["source_metric"] = METRIC_NAMES[DEFAULT_METRIC]  # what every released config uses
        assumed.append("source_metric")
        if architecture == "gaitbase":
            assumed += ["strides", "stem_maxpool"]  # as in every configs/gaitbase/*.yaml on ResNet9
        else:
            assumed.append("use_emb2")  # off, OpenGait's default
    if assumed:
        provenance["assumed_without_config"] = assumed
    try:
        config = OpenGaitModelConfig(**fields)
    except ValueError as exc:
        raise OpenGaitSourceError(f"not a supported {architecture}: {exc}") from exc
    return OpenGaitSource(config=config, state=state, provenance=provenance, training_data=training_data)

"""`gaitid models convert-opengait`: an OpenGait DeepGaitV2 / GaitBase checkpoint -> our network -> an
ONNX embedding model under the contract (gaitid/contract.py), through our export path.

Every key of the checkpoint must be one of the network's weights under OpenGait's name
(architectures.opengait_key_table) and every weight must be in the checkpoint, with its shape: the
first key that is not is named in the error. The weights then load strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gaitid.contract import EmbeddingModelMetadata, file_sha256
from model.opengait.architectures import Architecture, OpenGaitModelConfig, OpenGaitNet, opengait_key_table
from model.opengait.source import OpenGaitSourceError, read_source

# How many unmapped / missing keys an error lists (all are counted).
_KEYS_SHOWN = 5
# Largest ONNX-vs-torch difference accepted when exporting: the bar `gaitid export` sets for our own
# models (float32 throughout; measured differences are ~1e-7, see the parity note).
EXPORT_TOLERANCE = 1e-3


def map_state(cfg: OpenGaitModelConfig, opengait_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenGait's state dict -> ours for `cfg`, or OpenGaitSourceError naming the keys that do not map."""
    table = opengait_key_table(cfg)
    unmapped = [k for k in opengait_state if k not in table]
    missing = [k for k in table if k not in opengait_state]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} unmapped key(s) in the checkpoint: {', '.join(unmapped[:_KEYS_SHOWN])}")
    if missing:
        problems.append(f"{len(missing)} key(s) missing from the checkpoint: {', '.join(missing[:_KEYS_SHOWN])}")
    if problems:
        raise OpenGaitSourceError(f"checkpoint does not fit {cfg.architecture} "
                                  f"(layers {cfg.layers}, width {cfg.width}): " + "; ".join(problems))
    ours = {}
    for key, value in opengait_state.items():
        our_key, shape = table[key]
        if tuple(value.shape) != shape:
            raise OpenGaitSourceError(f"{key} has shape {tuple(value.shape)}, {cfg.architecture} expects {shape}")
        ours[our_key] = value
    return ours


def build_converted(cfg: OpenGaitModelConfig, opengait_state: dict[str, torch.Tensor]) -> OpenGaitNet:
    """Our network holding the checkpoint's weights, in eval mode."""
    net = OpenGaitNet(cfg)
    net.load_state_dict(map_state(cfg, opengait_state), strict=True)
    return net.eval()


def load_opengait(checkpoint: str | Path, architecture: Architecture,
                  config_yaml: str | Path | None = None) -> tuple[OpenGaitNet, dict[str, Any], str]:
    """(network, provenance, training data) for an OpenGait checkpoint."""
    source = read_source(checkpoint, architecture, config_yaml)
    net = build_converted(source.config, source.state)
    provenance = {
        "source": "OpenGait",
        "source_model": source.config.source_model,
        "source_checkpoint": Path(checkpoint).name,
        "source_checkpoint_sha256": file_sha256(checkpoint),
        "layers": source.config.layers,
        "width": source.config.width,
        "num_classes": source.config.num_classes,
        **source.provenance,
        "accuracy": "OpenGait's model zoo table (docs/1.model_zoo.md) for this checkpoint; not re-measured here",
    }
    if config_yaml is not None:
        provenance["source_config_sha256"] = file_sha256(config_yaml)
    return net, provenance, source.training_data


def converted_metadata(net: OpenGaitNet, provenance: dict[str, Any], training_data: str,
                       git_commit: str = "") -> EmbeddingModelMetadata:
    cfg = net.cfg
    return EmbeddingModelMetadata(
        architecture=cfg.family,
        variant=cfg.mode,
        inputs=cfg.modalities,
        embedding_channels=cfg.embedding_dim,
        embedding_parts=cfg.parts,
        embedding_feature=cfg.inference_feature,
        training_data=training_data or "unknown (pass --config with the OpenGait YAML to record it)",
        git_commit=git_commit,
        provenance=provenance,
    )


def convert_opengait(checkpoint: str | Path, out_onnx: str | Path, arch: Architecture,
                     config_yaml: str | Path | None = None, *, training_data: str = "",
                     extra_provenance: dict[str, Any] | None = None) -> EmbeddingModelMetadata:
    """Convert an OpenGait checkpoint into a served embedding model at `out_onnx`; returns its metadata.
    training_data / extra_provenance: facts known from elsewhere (a zoo entry) when there is no YAML."""
    from model.export import export_module, git_commit  # onnx / onnxruntime only when exporting

    net, provenance, yaml_training_data = load_opengait(checkpoint, arch, config_yaml)
    provenance.update(extra_provenance or {})
    metadata = converted_metadata(net, provenance, yaml_training_data or training_data, git_commit())
    out_onnx = Path(out_onnx)
    diff = export_module(net, out_onnx, metadata)
    if diff > EXPORT_TOLERANCE:
        out_onnx.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX output differs from torch by {diff:.3e}: refusing to keep {out_onnx}")
    return metadata

"""ONNX files of the embedding model: `gaitid export` (checkpoint -> ONNX) and `upgrade_v1` (contract v1
file -> v2), both writing the contract (gaitid.contract) and checking the result before it is kept.

An exported file takes the contract's uint8 inputs (scaled inside the graph by the network's own first
operation), has dynamic batch and frame axes, carries its metadata (`write_metadata`: variant, inputs,
embedding layout, similarity "part-cosine", training data, git commit, provenance) and is checked
against torch before it is written out.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from gaitid.contract import (
    INPUT_MAX,
    METADATA_KEY,
    OUTPUT_NAME,
    ContractError,
    EmbeddingModelMetadata,
    write_metadata,
)
from model.checkpoint import load_model
from model.depthgait import DepthGait
from model.embedder import network_metadata

OPSET = 17


class _EmbeddingOnly(nn.Module):
    """Positional inputs in metadata order, one output: what the service runs."""

    def __init__(self, net: DepthGait):
        super().__init__()
        self.net = net
        self.inputs = net.cfg.modalities

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.net(**dict(zip(self.inputs, tensors)))[OUTPUT_NAME]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _random_inputs(count: int, batch: int, frames: int, h: int, w: int, generator: torch.Generator):
    """Contract inputs: uint8, binary silhouette-like masks (0 / 255)."""
    return tuple((torch.rand(batch, frames, h, w, generator=generator) > 0.5).to(torch.uint8) * INPUT_MAX
                 for _ in range(count))


def export_module(net: DepthGait, out: Path, metadata: EmbeddingModelMetadata | None = None, fp16: bool = False,
                  frames: int = 20) -> float:
    """Export `net` (eval mode) to `out`; returns the max abs difference ONNX vs torch, relative to the
    largest output magnitude when that exceeds 1 (a young network's embeddings reach 1e4, where float32
    rounding alone is ~1e-3 absolute).

    metadata: what the file declares (default: `network_metadata(net.cfg)`).
    """
    import onnxruntime as ort

    out = Path(out)
    metadata = metadata or network_metadata(net.cfg)
    net = net.float().eval().cpu()
    wrapper = _EmbeddingOnly(net).eval()
    h, w = metadata.input_height, metadata.input_width
    generator = torch.Generator().manual_seed(0)
    example = _random_inputs(len(wrapper.inputs), 2, frames, h, w, generator)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    dynamic = {name: {0: "batch", 1: "frames"} for name in wrapper.inputs}
    dynamic[OUTPUT_NAME] = {0: "batch"}
    torch.onnx.export(
        wrapper, example, str(tmp), input_names=list(wrapper.inputs), output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
    )
    model = onnx.load(str(tmp))
    if fp16:
        model = _weights_to_fp16(model)
    del model.metadata_props[:]
    write_metadata(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))

    # Parity on a different length than the export example: the frame axis must really be dynamic.
    check = _random_inputs(len(wrapper.inputs), 1, frames + 7, h, w, generator)
    with torch.inference_mode():
        expected = wrapper(*check).numpy()
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {n: t.numpy() for n, t in zip(wrapper.inputs, check)})
    diff = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
    tmp.replace(out)
    return diff


def _weights_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store float32 initializers as float16 with a Cast back to float32 in front of their users, so
    the file halves while inputs, outputs and arithmetic stay float32 (no fp16 kernels needed on CPU)."""
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < 16:
            continue  # not worth it; also keeps shape constants exact
        half_name = init.name + "__fp16"
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT))
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float16), half_name))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model


def export_onnx(checkpoint: Path, out: Path, fp16: bool = False, training_data: str = "",
                tolerance: float = 1e-3, inference_feature: str | None = None) -> EmbeddingModelMetadata:
    """inference_feature: override the checkpoint's choice of what retrieval compares (pre-bnneck | bnneck)."""
    net, cfg = load_model(checkpoint, device="cpu")
    if inference_feature is not None:
        cfg.model = type(cfg.model).model_validate({**cfg.model.model_dump(), "inference_feature": inference_feature})
        net.cfg = cfg.model
    metadata = network_metadata(
        cfg.model,
        training_data=training_data or f"{cfg.data.silhouette_root} subjects {cfg.data.train_subjects}",
        git_commit=git_commit(),
        provenance={"config": cfg.name, "width": cfg.model.width, "layers": cfg.model.layers,
                    "block": cfg.model.block, "fp16": fp16},
    )
    diff = export_module(net, Path(out), metadata, fp16=fp16)
    print(f"exported {out} ({Path(out).stat().st_size / 1e6:.1f} MB); max |onnx - torch| = {diff:.2e} (relative)")
    if diff > tolerance * (100 if fp16 else 1):
        raise RuntimeError(f"ONNX output differs from torch by {diff:.3e}: refusing to ship this export")
    return metadata


# -- contract v1 -> v2 ----------------------------------------------------------------------------


def upgrade_v1(src: str | Path, dst: str | Path) -> EmbeddingModelMetadata:
    """Turn a contract-v1 embedding model (float inputs in [0, 1], scaled by the caller) into a v2 one.

    Graph surgery, weights untouched: each input becomes uint8 under the same name and feeds
    Cast(float) -> Div(INPUT_MAX) into what the old input fed, the very scaling a v2 network does
    first, so v2(x) == v1(x / 255). The metadata is rewritten to v2: v1's `extra` and its unread
    `metric` move into `provenance`. `dst` may be `src` (written through a temporary file).
    """
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    metadata = _v2_metadata(model, str(src))
    graph = model.graph
    graph_inputs = {i.name: i for i in graph.input}
    missing = [name for name in metadata.inputs if name not in graph_inputs]
    if missing:
        raise ContractError(f"{src}: metadata names inputs {missing} that the graph does not have")

    scaling = []
    divisor = "gaitid_v2_input_max"
    graph.initializer.append(numpy_helper.from_array(np.array(INPUT_MAX, dtype=np.float32), divisor))
    for name in metadata.inputs:
        graph_input = graph_inputs[name]
        if graph_input.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ContractError(f"{src}: input {name!r} is not float, so this is not a v1 embedding model")
        as_float, scaled = f"{name}__float", f"{name}__unit"
        for node in graph.node:  # everything that read the old input now reads the scaled one
            node.input[:] = [scaled if x == name else x for x in node.input]
        scaling += [helper.make_node("Cast", [name], [as_float], to=TensorProto.FLOAT),
                    helper.make_node("Div", [as_float, divisor], [scaled])]
        graph_input.type.tensor_type.elem_type = TensorProto.UINT8
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(scaling + nodes)

    write_metadata(model, metadata)
    onnx.checker.check_model(model)
    tmp = dst.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return metadata


def _v2_metadata(model: onnx.ModelProto, where: str) -> EmbeddingModelMetadata:
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ContractError(f"{where} has no '{METADATA_KEY}' metadata: not a gaitid embedding model")
    raw = json.loads(props[METADATA_KEY])
    version = raw.pop("contract_version", 1)
    if version != 1:
        raise ContractError(f"{where} follows contract v{version}; only v1 files need an upgrade")
    provenance = dict(raw.pop("extra", {}) or {})
    if "metric" in raw:
        # v1 declared the metric the model was selected with; nothing computed with it.
        provenance["selection_metric"] = raw.pop("metric")
    if "fp16_weights" in provenance:
        provenance["fp16"] = provenance.pop("fp16_weights")
    provenance["upgraded_from"] = "contract v1"
    return EmbeddingModelMetadata.model_validate({**raw, "provenance": provenance})

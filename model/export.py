"""`gaitid export`: a training checkpoint -> ONNX for the service.

The file has dynamic batch and frame axes, carries its own metadata (service.pipeline.embed
.EmbeddingModelMetadata under the key 'gaitid': architecture, variant, inputs, embedding layout, metric,
training data, git commit), and is checked against torch before it is written out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from model.checkpoint import load_model
from model.depthgait import DepthGait
from service.pipeline.embed import METADATA_KEY, EmbeddingModelMetadata


class _EmbeddingOnly(nn.Module):
    """Positional inputs in metadata order, one output: what the service runs."""

    def __init__(self, net: DepthGait):
        super().__init__()
        self.net = net
        self.inputs = net.cfg.modalities

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(self.inputs, tensors))
        return self.net(sils=feeds.get("sils"), depths=feeds.get("depths"))["embedding"]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def export_module(net: DepthGait, out: Path, metadata: EmbeddingModelMetadata, fp16: bool = False,
                  frames: int = 20) -> float:
    """Export `net` (eval mode) to `out`; returns the max abs difference ONNX vs torch."""
    import onnxruntime as ort

    net = net.float().eval().cpu()
    wrapper = _EmbeddingOnly(net).eval()
    h, w = metadata.input_height, metadata.input_width
    generator = torch.Generator().manual_seed(0)
    example = tuple((torch.rand(2, frames, h, w, generator=generator) > 0.5).float() for _ in wrapper.inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    dynamic = {name: {0: "batch", 1: "frames"} for name in wrapper.inputs}
    dynamic["embedding"] = {0: "batch"}
    torch.onnx.export(
        wrapper, example, str(tmp), input_names=list(wrapper.inputs), output_names=["embedding"],
        dynamic_axes=dynamic, opset_version=17, dynamo=False,
    )
    model = onnx.load(str(tmp))
    if fp16:
        model = _weights_to_fp16(model)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.model_dump_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))

    # Parity on a different length than the export example: the frame axis must really be dynamic.
    check = tuple((torch.rand(1, frames + 7, h, w, generator=generator) > 0.5).float() for _ in wrapper.inputs)
    with torch.inference_mode():
        expected = wrapper(*check).numpy()
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], {n: t.numpy() for n, t in zip(wrapper.inputs, check)})
    diff = float(np.abs(got - expected).max())
    tmp.replace(out)
    return diff


def _weights_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store float32 initializers as float16 with a Cast back to float32 in front of their users, so
    the file halves while inputs, outputs and arithmetic stay float32 (no fp16 kernels needed on CPU)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < 16:
            continue  # not worth it; also keeps shape constants exact
        half_name = init.name + "__fp16"
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=onnx.TensorProto.FLOAT))
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float16), half_name))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model


def export_onnx(checkpoint: Path, out: Path, fp16: bool = False, training_data: str = "",
                tolerance: float = 1e-3) -> EmbeddingModelMetadata:
    net, cfg = load_model(checkpoint, device="cpu")
    metadata = EmbeddingModelMetadata(
        variant=cfg.model.variant,
        inputs=cfg.model.modalities,
        embedding_channels=cfg.model.embedding_dim,
        embedding_parts=cfg.model.parts,
        metric="euclidean",
        training_data=training_data or f"{cfg.data.silhouette_root} subjects {cfg.data.train_subjects}",
        git_commit=git_commit(),
        extra={"config": cfg.name, "width": cfg.model.width, "layers": cfg.model.layers,
               "block": cfg.model.block, "fp16_weights": fp16},
    )
    diff = export_module(net, Path(out), metadata, fp16=fp16)
    print(f"exported {out} ({Path(out).stat().st_size / 1e6:.1f} MB); max |onnx - torch| = {diff:.2e}")
    if diff > tolerance * (100 if fp16 else 1):
        raise RuntimeError(f"ONNX output differs from torch by {diff:.3e}: refusing to ship this export")
    return metadata

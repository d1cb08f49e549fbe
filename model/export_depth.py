"""Depth Anything V2 (transformers `DepthAnythingForDepthEstimation`) -> ONNX for the service.

The file takes `pixel_values` (B, 3, H, W), ImageNet-normalised, H and W multiples of 14, and returns
`predicted_depth` (B, H, W): relative inverse depth (disparity) for the relative models. Batch, height
and width are all dynamic, so one file serves person crops of any aspect ratio and full frames.

Why a patch is needed for dynamic height/width (measured with torch 2.13, transformers 5.23): the
TorchScript exporter traces everything shape-generically except the head's final upsampling, whose
size transformers computes with `int(patch_height * patch_size)`; `int()` freezes the example's size
into the graph (a 518x266 input then came out 70x98). The dynamo exporter is no better here (it also
specialised the output size, and the batch axis, and took 26 s instead of 2 s). During export the
head runs a copy of its forward that passes that size on without `int()`; the weights and arithmetic
are unchanged, which the parity check against the unpatched torch model confirms at several sizes.

Metadata stored in the file under `gaitid_depth` (read by service.pipeline.depth): what the output
means (disparity | depth), the normalisation, the patch size, the source.
"""

from __future__ import annotations

import argparse
import json
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from service.pipeline.depth import IMAGENET_MEAN, IMAGENET_STD, METADATA_KEY, PATCH_SIZE

HUB_ID_V2_SMALL = "depth-anything/Depth-Anything-V2-Small-hf"
# Sizes the parity check runs at: a person crop and a 16:9 full frame at the service's 518 default.
SERVING_CHECK_SIZES: tuple[tuple[int, int, int], ...] = ((2, 518, 238), (1, 518, 924))
PARITY_TOLERANCE = 1e-3  # max |onnx - torch| relative to max |torch|


@dataclass
class DepthExportReport:
    out: str
    opset: int
    dynamic_axes: dict[str, list[str]]
    parity_max_abs_diff: float
    parity_relative: float
    checked_shapes: list[list[int]]
    output: str
    seconds: float
    libraries: dict[str, str] = field(default_factory=dict)


def v2_small_config():
    """The architecture of Depth-Anything-V2-Small-hf: DINOv2-S backbone (12 layers, 384 wide, 6
    heads, patch 14) read at layers 3/6/9/12, DPT neck 48/96/192/384, fusion 64, relative depth."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=PATCH_SIZE,
        image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False, layerscale_value=1.0,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384], reassemble_hidden_size=384,
        fusion_hidden_size=64, head_hidden_size=32, patch_size=PATCH_SIZE, depth_estimation_type="relative",
    )


def random_model(config=None, seed: int = 0) -> nn.Module:
    """A randomly initialised model (tests and benchmarks: speed and plumbing only, no meaning)."""
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    return DepthAnythingForDepthEstimation(config or v2_small_config()).eval()


def load_pretrained(folder: str | Path) -> nn.Module:
    """A local Hugging Face folder (config.json + model.safetensors), never the network."""
    from transformers import DepthAnythingForDepthEstimation

    return DepthAnythingForDepthEstimation.from_pretrained(str(folder), local_files_only=True).eval()


def _head_forward_traceable(self, hidden_states, patch_height, patch_width):
    """transformers' DepthAnythingDepthEstimationHead.forward without the int() on the output size."""
    hidden = hidden_states[self.head_in_index]
    depth = self.conv1(hidden)
    size = (patch_height * self.patch_size, patch_width * self.patch_size)
    depth = nn.functional.interpolate(depth, size, mode="bilinear", align_corners=True)
    depth = self.conv3(self.activation1(self.conv2(depth)))
    return (self.activation2(depth) * self.max_depth).squeeze(dim=1)


class _PredictedDepth(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).predicted_depth


def export_depth_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    source: str = "",
    check_shapes: tuple[tuple[int, int, int], ...] = SERVING_CHECK_SIZES,
    example_shape: tuple[int, int, int] = (2, 140, 98),
    opset: int = 17,
    tolerance: float = PARITY_TOLERANCE,
) -> DepthExportReport:
    """Export with dynamic batch/height/width; check against torch at `check_shapes` (B, H, W).

    The example is small (tracing cost grows with it, the graph does not) and deliberately differs from
    every checked shape: a size frozen into the graph would fail the check.
    """
    import onnxruntime as ort

    started = time.time()
    model = model.float().eval().cpu()
    reference = _PredictedDepth(model).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")

    head = model.head
    head.forward = types.MethodType(_head_forward_traceable, head)  # only for the trace, undone below
    try:
        example = torch.randn(example_shape[0], 3, example_shape[1], example_shape[2])
        torch.onnx.export(
            reference, (example,), str(tmp), input_names=["pixel_values"], output_names=["predicted_depth"],
            dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                          "predicted_depth": {0: "batch", 1: "height", 2: "width"}},
            opset_version=opset, dynamo=False,
        )
    finally:
        del head.forward  # back to the class's own forward for the torch reference

    relative_model = model.config.depth_estimation_type == "relative"
    info = {
        "architecture": "DepthAnythingForDepthEstimation",
        "output": "disparity" if relative_model else "depth",
        "image_mean": IMAGENET_MEAN.tolist(), "image_std": IMAGENET_STD.tolist(),
        "patch_size": PATCH_SIZE, "source": source,
    }
    onnx_model = onnx.load(str(tmp))
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(tmp))
    del onnx_model

    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst_abs, worst_rel = 0.0, 0.0
    for batch, height, width in check_shapes:
        pixels = torch.randn(batch, 3, height, width, generator=generator)
        with torch.inference_mode():
            want = reference(pixels).numpy()
        (got,) = session.run(["predicted_depth"], {"pixel_values": pixels.numpy()})
        if got.shape != want.shape:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"ONNX output {got.shape} != torch {want.shape} for input {(batch, 3, height, width)}")
        diff = float(np.abs(got - want).max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.abs(want).max()), 1e-12))
    del session
    if worst_rel > tolerance:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX differs from torch by {worst_rel:.2e} (relative): refusing to ship this export")
    tmp.replace(out)
    return DepthExportReport(
        out=str(out), opset=opset,
        dynamic_axes={"pixel_values": ["batch", "height", "width"], "predicted_depth": ["batch", "height", "width"]},
        parity_max_abs_diff=worst_abs, parity_relative=worst_rel,
        checked_shapes=[[b, 3, h, w] for b, h, w in check_shapes], output=info["output"],
        seconds=round(time.time() - started, 1), libraries=library_versions(),
    )


def library_versions() -> dict[str, str]:
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export Depth Anything V2 to ONNX (dynamic batch/height/width).")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--source", type=Path, help="local Hugging Face folder (config.json + model.safetensors)")
    group.add_argument("--random", action="store_true", help="randomly initialised V2 Small (speed tests only)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model = random_model() if args.random else load_pretrained(args.source)
    report = export_depth_onnx(model, args.out, source="random init" if args.random else str(args.source))
    print(json.dumps(asdict(report), indent=2))


if __name__ == "__main__":
    main()

"""Export an Ultralytics YOLO-seg checkpoint to ONNX for the service, with a torch-vs-ONNX parity check.

Runs inside the separate `.venv-ultra` environment (ultralytics pulls in its own torch/torchvision
build, which must never replace the torch in the main `.venv`), so it is a standalone script that
imports nothing from this repository (not even gaitid.contract: that environment has no pydantic; the
caller hashes the weights file named in the report). `model/zoo.py` calls it as a subprocess:

    .venv-ultra/bin/python model/export_yolo.py --weights yolov8n-seg.pt --out models/yolov8n-seg.onnx \
        --imgsz 640 --report report.json [--download]

The ONNX file uses Ultralytics' own exporter (the official graph: Conv+BN fused, the Segment head in
export mode) with dynamic batch, height and width axes: frames are batched at serving time, and one
file serves any letterbox size that is a multiple of the stride (640, 320, rectangles). Outputs:
`output0` (B, 4 + classes + 32, anchors) = xywh boxes in input pixels, sigmoid class scores, mask
coefficients; `output1` (B, 32, H/4, W/4) = mask prototypes.

`--weights` may also be a model YAML (e.g. `yolov8n-seg.yaml`): a randomly initialised network of that
architecture, which is what the tests and the benchmark use (no pretrained weights there).

Exit codes: 0 ok, 2 bad arguments, 3 weights unavailable (missing file, or download failed/offline),
4 export failed or parity check failed. The last stderr line explains the failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

EXIT_WEIGHTS_UNAVAILABLE = 3
EXIT_EXPORT_FAILED = 4
# Parity bounds, relative to each output's largest magnitude (boxes are in pixels, scores in [0, 1]).
PARITY_TOLERANCE = 1e-3


def release_url(name: str) -> str:
    """Where Ultralytics' own downloader fetches `name` from (its GitHub release assets)."""
    import inspect

    from ultralytics.utils import downloads

    release = inspect.signature(downloads.attempt_download_asset).parameters["release"].default
    return f"https://github.com/ultralytics/assets/releases/download/{release}/{name}"


def download_weights(name: str, into: Path) -> Path:
    """Download an official checkpoint with Ultralytics' downloader into `into`."""
    from ultralytics.utils import is_online
    from ultralytics.utils.downloads import attempt_download_asset

    if not is_online():
        raise WeightsUnavailable(f"cannot download {name}: no internet connection (or YOLO_OFFLINE is set)")
    into.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(into)  # the downloader saves into the working directory
    try:
        local = Path(attempt_download_asset(name)).resolve()
    except Exception as exc:  # network errors come in many types; all mean "not downloaded"
        raise WeightsUnavailable(f"download of {name} failed: {exc}") from exc
    finally:
        os.chdir(cwd)
    if not local.is_file():
        raise WeightsUnavailable(f"download of {name} failed: {local} was not written")
    return local


class WeightsUnavailable(Exception):
    pass


class ExportFailed(Exception):
    pass


def materialise_checkpoint(weights: str, workdir: Path, seed: int) -> Path:
    """A checkpoint file inside `workdir`: Ultralytics' exporter writes next to its input, and the
    user's folder must stay untouched. A model YAML becomes a randomly initialised checkpoint."""
    import torch
    from ultralytics import YOLO

    checkpoint = workdir / "model.pt"
    if weights.endswith((".yaml", ".yml")):
        torch.manual_seed(seed)
        YOLO(weights).save(str(checkpoint))
    else:
        shutil.copyfile(weights, checkpoint)
    return checkpoint


def load_model(checkpoint: Path):
    from ultralytics import YOLO

    try:
        model = YOLO(str(checkpoint))
    except Exception as exc:  # unpickling errors of all kinds: not a usable checkpoint
        raise ExportFailed(f"cannot load the checkpoint as an Ultralytics model: {exc}") from exc
    if model.task != "segment":
        raise ExportFailed(f"this is a '{model.task}' model; the service needs a segmentation model (-seg)")
    return model


def export_onnx(checkpoint: Path, imgsz: int) -> tuple[Path, dict]:
    settings = {"format": "onnx", "imgsz": imgsz, "dynamic": True, "simplify": True, "batch": 1, "half": False}
    exported = load_model(checkpoint).export(**settings)
    return Path(exported), settings


def parity(model, onnx_path: Path, imgsz: int, seed: int) -> dict[str, float]:
    """Max |onnx - torch| per output, relative to the output's scale, on two input shapes.

    The second shape (batch 1, half height) proves the batch and spatial axes really are dynamic.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    net = model.model.float().eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    report: dict[str, float] = {}
    for shape in [(2, 3, imgsz, imgsz), (1, 3, imgsz // 2, imgsz)]:
        images = torch.rand(shape, generator=generator)
        with torch.inference_mode():
            expected = [t.numpy() for t in net(images)[0]]
        got = session.run(["output0", "output1"], {"images": images.numpy()})
        for name, want, have in zip(["output0", "output1"], expected, got):
            if want.shape != have.shape:
                raise ExportFailed(f"{name}: ONNX shape {have.shape} != torch shape {want.shape} for input {shape}")
            scale = max(float(np.abs(want).max()), 1e-6)
            diff = float(np.abs(want - have).max()) / scale
            report[name] = max(report.get(name, 0.0), diff)
    return report


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import ultralytics

    return {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": sys.version.split()[0]}


def run(args: argparse.Namespace) -> dict:
    import onnx

    started = time.time()
    weights = args.weights
    if weights.endswith((".yaml", ".yml")):
        origin = f"random initialisation of {weights} (seed {args.seed})"
    elif Path(weights).is_file():
        origin = str(Path(weights).resolve())
    elif args.download:
        origin = release_url(Path(weights).name)
        weights = str(download_weights(Path(weights).name, Path(args.download_dir or ".")))
    else:
        raise WeightsUnavailable(f"{weights} not found")

    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gaitid-yolo-export-") as tmp:
        checkpoint = materialise_checkpoint(weights, Path(tmp), args.seed)
        model = load_model(checkpoint)  # the torch reference, loaded from the very file exported
        exported, settings = export_onnx(checkpoint, args.imgsz)
        diffs = parity(model, exported, args.imgsz, args.seed)
        worst = max(diffs.values())
        if worst > PARITY_TOLERANCE:
            raise ExportFailed(f"ONNX differs from torch by {worst:.2e} (relative): refusing to ship this export")
        opset = onnx.load(str(exported), load_external_data=False).opset_import[0].version
        shutil.move(str(exported), out)

    return {
        "out": str(out),
        "weights": str(Path(weights).resolve()) if Path(weights).is_file() else weights,
        "class_names": {int(k): str(v) for k, v in model.names.items()},
        "origin": origin,
        "task": model.task,
        "export": {**settings, "opset": opset,
                   "dynamic_axes": {"images": ["batch", "height", "width"]}},
        "parity_relative_max_abs_diff": diffs,
        "libraries": library_versions(),
        "seconds": round(time.time() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="*.pt checkpoint, official name, or model *.yaml")
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--imgsz", type=int, default=640, help="export example size (axes stay dynamic)")
    parser.add_argument("--report", help="write a JSON report (versions, settings, parity) here")
    parser.add_argument("--download", action="store_true", help="download official weights if not local")
    parser.add_argument("--download-dir", help="where downloaded weights are kept")
    parser.add_argument("--seed", type=int, default=0, help="seed for random initialisation and parity inputs")
    args = parser.parse_args(argv)
    if args.imgsz <= 0 or args.imgsz % 32:
        print(f"error: --imgsz must be a positive multiple of 32 (the model stride), got {args.imgsz}",
              file=sys.stderr)
        return 2
    try:
        report = run(args)
    except WeightsUnavailable as exc:
        print(f"error: weights unavailable: {exc}", file=sys.stderr)
        return EXIT_WEIGHTS_UNAVAILABLE
    except ExportFailed as exc:
        print(f"error: export failed: {exc}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    text = json.dumps(report, indent=2)
    if args.report:
        Path(args.report).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

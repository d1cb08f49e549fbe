"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent.

Tiny embedding models: `build_tiny_embedding_model` is the one way tests make an ONNX embedding
model. It is a pure ONNX graph (no torch) that follows the contract (gaitid/contract.py): uint8
inputs named in its metadata, scaled to [0, 1] inside the graph, then mean over time and a fixed
random projection per modality -> `embedding` (N, C, P). Random: tests assert structure and
plumbing with it, never that it recognises anyone.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from gaitid.contract import (
    ALIGNED_HEIGHT,
    ALIGNED_WIDTH,
    INPUT_MAX,
    OUTPUT_NAME,
    EmbeddingModelMetadata,
    write_metadata,
)

# One thread per library: faster on a loaded 2-core machine, and reproducible.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
VIDEOS = SHARED_DATA / "videos"
CASIA_TARBALL = SHARED_DATA / "casia-b-sil-001-074.tar.xz"
# Where `.ci/run` (and the README) unpack the CASIA-B silhouettes.
CASIA_ROOT = REPO / "data" / "casia-b"

TINY_CHANNELS, TINY_PARTS = 8, 4  # the tiny model's embedding (C, P)


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the checkout)")
    return path


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return require_shared(VIDEOS)


@pytest.fixture(scope="session")
def casia_root() -> Path:
    """CASIA-B silhouettes 001-074 in OpenGait layout; unpacked once if only the tarball is there."""
    if (CASIA_ROOT / "074").exists():
        return CASIA_ROOT
    require_shared(CASIA_TARBALL)
    CASIA_ROOT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "xJf", str(CASIA_TARBALL), "-C", str(CASIA_ROOT)], check=True)
    return CASIA_ROOT


# -- synthetic footage --------------------------------------------------------------------------
def write_synthetic_walk(path: Path, frames: int = 40, with_person: bool = True, appear_at: int = 0) -> Path:
    """A static textured scene and a dark figure (head, body, striding legs) crossing it from
    frame `appear_at` on."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(90, 200, (240, 320, 3), dtype=np.uint8), (9, 9), 0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.bit_rate = 4_000_000
        for t in range(frames):
            image = scene.copy()
            if with_person and t >= appear_at:
                x = 30 + 6 * t
                stride = int(18 * np.sin(t / 3))
                cv2.circle(image, (x, 62), 12, (30, 30, 40), -1)
                cv2.rectangle(image, (x - 14, 74), (x + 14, 140), (40, 35, 30), -1)
                cv2.line(image, (x, 140), (x - stride, 200), (35, 30, 45), 9)
                cv2.line(image, (x, 140), (x + stride, 200), (35, 30, 45), 9)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


class RecordingDepth:
    """Stands in for service.pipeline.depth.DepthEstimator: disparity 0.5 on the mask; counts its calls."""

    def __init__(self):
        self.calls = 0

    def track_disparity(self, frames: np.ndarray, track) -> np.ndarray:
        self.calls += 1
        return np.where(track.masks, np.float32(0.5), np.float32(0.0))


# -- tiny embedding models ---------------------------------------------------------------------
def build_tiny_embedding_model(path: Path, *, inputs: Sequence[str] = ("sils",), channels: int = TINY_CHANNELS,
                               parts: int = TINY_PARTS, seed: int = 0,
                               weights: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a contract-v2 embedding model to `path`: for each input (uint8 (N, T, 64, 44)),
    cast, scale by 1/255, mean over time, project; the projections are summed -> (N, C, P).
    `weights` (input -> (64*44, C*P) projection) replaces the random ones: a model whose embedding
    is known in closed form."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    pixels = ALIGNED_HEIGHT * ALIGNED_WIDTH
    nodes, initializers = [], [
        numpy_helper.from_array(np.array(1.0 / INPUT_MAX, np.float32), "scale"),
        numpy_helper.from_array(np.array([0, pixels], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0, channels, parts], np.int64), "out_shape"),
    ]
    projections = []
    for name in inputs:
        projection = rng.standard_normal((pixels, channels * parts)) if weights is None else weights[name]
        initializers.append(numpy_helper.from_array(np.asarray(projection, np.float32), f"{name}_weights"))
        nodes += [
            helper.make_node("Cast", [name], [f"{name}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}_float", "scale"], [f"{name}_scaled"]),  # the network scales
            helper.make_node("ReduceMean", [f"{name}_scaled"], [f"{name}_mean"], axes=[1], keepdims=0),
            helper.make_node("Reshape", [f"{name}_mean", "flat_shape"], [f"{name}_flat"]),
            helper.make_node("MatMul", [f"{name}_flat", f"{name}_weights"], [f"{name}_projected"]),
        ]
        projections.append(f"{name}_projected")
    total = projections[0]
    for i, other in enumerate(projections[1:]):
        nodes.append(helper.make_node("Add", [total, other], [f"sum_{i}"]))
        total = f"sum_{i}"
    nodes.append(helper.make_node("Reshape", [total, "out_shape"], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes, "tiny_gait",
        [helper.make_tensor_value_info(name, TensorProto.UINT8, ["batch", "frames", ALIGNED_HEIGHT, ALIGNED_WIDTH])
         for name in inputs],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", channels, parts])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    variant = "silhouette" if list(inputs) == ["sils"] else "depth" if list(inputs) == ["depths"] else "concat"
    write_metadata(model, EmbeddingModelMetadata(
        architecture="tiny-test", variant=variant, inputs=list(inputs), embedding_channels=channels,
        embedding_parts=parts, training_data="none: random weights"))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory) -> Callable[..., Path]:
    """make(inputs=("sils",), seed=0, ...) -> path of a tiny embedding model (built once per variant)."""
    folder = tmp_path_factory.mktemp("tiny-models")
    built: dict[tuple, Path] = {}

    def make(inputs: Sequence[str] = ("sils",), seed: int = 0, channels: int = TINY_CHANNELS,
             parts: int = TINY_PARTS) -> Path:
        key = (tuple(inputs), seed, channels, parts)
        if key not in built:
            name = f"tiny-{'-'.join(inputs)}-{seed}-{channels}x{parts}.onnx"
            built[key] = build_tiny_embedding_model(folder / name, inputs=inputs, channels=channels, parts=parts,
                                                    seed=seed)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory) -> Path:
    """The silhouette-only tiny embedding model."""
    return tiny_model_factory()

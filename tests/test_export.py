"""ONNX export: parity with torch, dynamic batch/frame axes, metadata the service reads."""

import numpy as np
import onnx
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import ExperimentConfig
from model.depthgait import build_model
from model.export import export_onnx
from service.pipeline.embed import GaitEmbedder, read_metadata


def make_checkpoint(tmp_path, variant: str):
    cfg = ExperimentConfig.model_validate({"model": {"variant": variant, "width": 8, "layers": [1, 1, 1, 1]}})
    torch.manual_seed(0)
    net = build_model(cfg.model)
    # Non-trivial BatchNorm statistics, so parity also covers the eval-mode BN folding.
    net.train()
    with torch.no_grad():
        sils = (torch.rand(4, 8, 64, 44) > 0.5).float()
        net(sils=sils, depths=torch.rand(4, 8, 64, 44))
    path = tmp_path / f"{variant}.pt"
    save_checkpoint(path, {"model": net.eval().state_dict(), "config": cfg.model_dump(mode="json")})
    return path, net


@pytest.mark.parametrize("variant", ["silhouette", "mcf"])
def test_export_parity_dynamic_axes_and_metadata(tmp_path, variant):
    ckpt, net = make_checkpoint(tmp_path, variant)
    out = tmp_path / f"{variant}.onnx"
    export_onnx(ckpt, out, training_data="unit test")

    meta = read_metadata(out)
    assert meta.variant == variant
    assert meta.inputs == (["sils"] if variant == "silhouette" else ["sils", "depths"])
    assert (meta.embedding_channels, meta.embedding_parts) == (256, 16)
    assert meta.training_data == "unit test"
    graph_inputs = [i.name for i in onnx.load(str(out)).graph.input]
    assert graph_inputs == meta.inputs

    embedder = GaitEmbedder(out, providers="cpu")
    assert embedder.needs_depth == (variant == "mcf")
    rng = np.random.default_rng(1)
    for batch, frames in [(1, 5), (3, 40)]:
        sils = (rng.random((batch, frames, 64, 44)) > 0.5).astype(np.uint8) * 255
        depths = rng.random((batch, frames, 64, 44)).astype(np.float32)
        got = embedder.embed_batch(list(sils), list(depths) if embedder.needs_depth else None)
        with torch.no_grad():
            want = net(sils=torch.from_numpy(sils / 255.0).float(), depths=torch.from_numpy(depths))["embedding"]
        assert got.shape == (batch, 256, 16)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_fp16_weights_halve_the_file_and_keep_parity(tmp_path):
    ckpt, net = make_checkpoint(tmp_path, "silhouette")
    export_onnx(ckpt, tmp_path / "fp32.onnx")
    export_onnx(ckpt, tmp_path / "fp16.onnx", fp16=True)
    assert (tmp_path / "fp16.onnx").stat().st_size < 0.6 * (tmp_path / "fp32.onnx").stat().st_size
    sils = (np.random.default_rng(2).random((12, 64, 44)) > 0.5).astype(np.uint8) * 255
    a = GaitEmbedder(tmp_path / "fp32.onnx").embed(sils)
    b = GaitEmbedder(tmp_path / "fp16.onnx").embed(sils)
    assert np.abs(a - b).max() < 1e-2 * np.abs(a).max()


def test_embedder_refuses_a_file_without_metadata(tmp_path):
    model = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    onnx.save(model, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="gaitid export"):
        read_metadata(tmp_path / "plain.onnx")

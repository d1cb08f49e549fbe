"""ONNX export and the v1 -> v2 upgrade: parity with torch, uint8 inputs, dynamic batch/frame axes, the
contract's metadata, fp16 weights."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gaitid.contract import METADATA_KEY, ContractError, ModelInput, read_metadata
from model.export import export_onnx, upgrade_v1
from service.pipeline.embed import OnnxEmbedder


def uint8_inputs(rng, batch: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    sils = (rng.random((batch, frames, 64, 44)) > 0.5).astype(np.uint8) * 255
    depths = rng.integers(0, 256, (batch, frames, 64, 44), dtype=np.uint8)
    return sils, depths


@pytest.mark.parametrize("variant", ["silhouette", "mcf"])
def test_export_parity_uint8_inputs_dynamic_axes_and_metadata(tmp_path, tiny_checkpoint, variant):
    ckpt, net = tiny_checkpoint(variant)
    out = tmp_path / f"{variant}.onnx"
    export_onnx(ckpt, out, training_data="unit test")

    meta = read_metadata(out)
    assert meta.contract_version == 2 and meta.similarity == "part-cosine"
    assert meta.variant == variant
    assert meta.inputs == (["sils"] if variant == "silhouette" else ["sils", "depths"])
    assert (meta.embedding_channels, meta.embedding_parts) == (256, 16)
    assert meta.training_data == "unit test"
    assert meta.provenance == {"config": "experiment", "width": 8, "layers": [1, 1, 1, 1], "block": "p3d",
                               "fp16": False}
    assert "metric" not in json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[METADATA_KEY])
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == meta.inputs
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for i in graph.input)

    embedder = OnnxEmbedder(out, providers="cpu")
    assert embedder.metadata.needs_depth == (variant == "mcf")
    rng = np.random.default_rng(1)
    for batch, frames in [(1, 5), (3, 40)]:
        sils, depths = uint8_inputs(rng, batch, frames)
        sequences = [ModelInput(sils=s, depths=d if meta.needs_depth else None) for s, d in zip(sils, depths)]
        got = embedder.embed(sequences)
        with torch.no_grad():  # the network takes the same raw uint8 arrays
            want = net(sils=torch.from_numpy(sils), depths=torch.from_numpy(depths))["embedding"]
        assert got.shape == (batch, 256, 16)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_fp16_weights_halve_the_file_and_keep_parity(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint("silhouette")
    export_onnx(ckpt, tmp_path / "fp32.onnx")
    meta = export_onnx(ckpt, tmp_path / "fp16.onnx", fp16=True)
    assert meta.provenance["fp16"] is True
    assert (tmp_path / "fp16.onnx").stat().st_size < 0.6 * (tmp_path / "fp32.onnx").stat().st_size
    sils = (np.random.default_rng(2).random((12, 64, 44)) > 0.5).astype(np.uint8) * 255
    a = OnnxEmbedder(tmp_path / "fp32.onnx").embed([ModelInput(sils)])
    b = OnnxEmbedder(tmp_path / "fp16.onnx").embed([ModelInput(sils)])
    assert np.abs(a - b).max() < 1e-2 * np.abs(a).max()


def test_a_file_without_metadata_is_refused(tmp_path):
    model = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    onnx.save(model, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="gaitid export"):
        read_metadata(tmp_path / "plain.onnx")


# -- upgrade_v1 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("inputs", [["sils"], ["sils", "depths"]])
def test_upgrade_v1_parity_v1_on_scaled_inputs_equals_v2_on_raw(tmp_path, v1_onnx, inputs):
    v1 = v1_onnx(inputs)
    with pytest.raises(ContractError, match="gaitid models upgrade"):
        read_metadata(v1)  # what every consumer says about a v1 file
    v2 = tmp_path / "v2.onnx"
    meta = upgrade_v1(v1, v2)

    assert read_metadata(v2) == meta and meta.contract_version == 2 and meta.similarity == "part-cosine"
    assert meta.inputs == inputs and meta.training_data == "unit test"
    # v1's `extra` and its unread `metric` are kept as provenance
    assert meta.provenance == {"config": "tiny", "width": 8, "layers": [1, 1, 1, 1], "block": "p3d", "fp16": False,
                               "selection_metric": "euclidean", "upgraded_from": "contract v1"}
    old, new = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (v1, v2))
    assert [i.type for i in new.get_inputs()] == ["tensor(uint8)"] * len(inputs)
    rng = np.random.default_rng(3)
    for batch, frames in [(1, 3), (2, 17)]:
        raw = dict(zip(["sils", "depths"], uint8_inputs(rng, batch, frames)))
        feeds = {name: raw[name] for name in inputs}
        (want,) = old.run(None, {name: x.astype(np.float32) / 255 for name, x in feeds.items()})
        (got,) = new.run(None, feeds)
        np.testing.assert_array_equal(got, want)  # the same float inputs reach the same graph: bit-identical
    embedded = OnnxEmbedder(v2).embed([ModelInput(**{n: raw[n][0] for n in inputs})])
    assert embedded.shape == (1, 44 * len(inputs), 4)


def test_upgrade_v1_overwrites_in_place_and_refuses_what_is_not_v1(tmp_path, v1_onnx, strip_pool_onnx):
    v1 = v1_onnx(["sils"])
    upgrade_v1(v1, v1)
    assert read_metadata(v1).contract_version == 2
    assert not list(tmp_path.glob("*.tmp.onnx"))
    with pytest.raises(ContractError, match="only v1 files need an upgrade"):
        upgrade_v1(v1, tmp_path / "again.onnx")
    with pytest.raises(ContractError, match="only v1 files"):
        upgrade_v1(strip_pool_onnx(["sils"]), tmp_path / "v2-again.onnx")
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], [])), plain)
    with pytest.raises(ContractError, match="no 'gaitid' metadata"):
        upgrade_v1(plain, tmp_path / "out.onnx")


def test_upgrade_v1_of_a_real_v1_export_matches_the_torch_network(tmp_path, tiny_checkpoint):
    """A DepthGait exported the v1 way (float [0, 1] inputs) and upgraded equals today's network on uint8."""
    from model.depthgait import DepthGait
    from tests.model.conftest import write_v1_onnx

    _, net = tiny_checkpoint("mcf")

    class V1Network(torch.nn.Module):  # what v1 exported: the caller had scaled, the graph did not
        def __init__(self, net: DepthGait):
            super().__init__()
            self.net = net

        def forward(self, sils, depths):
            frames = self.net.encode(sils, depths)
            return self.net.fcs(self.net.hpp(frames.max(dim=2).values))

    v1 = write_v1_onnx(tmp_path / "v1-mcf.onnx", ["sils", "depths"], V1Network(net).eval())
    v2 = tmp_path / "v2-mcf.onnx"
    upgrade_v1(v1, v2)
    sils, depths = uint8_inputs(np.random.default_rng(4), 2, 9)
    got = ort.InferenceSession(str(v2), providers=["CPUExecutionProvider"]).run(None, {"sils": sils, "depths": depths})[0]
    with torch.no_grad():
        want = net(sils=torch.from_numpy(sils), depths=torch.from_numpy(depths))["embedding"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_export_with_the_bnneck_feature(tmp_path):
    """`gaitid export --feature bnneck`: the file's embedding is the BNNeck output, and says so."""
    from tests.model.conftest import contract_inputs, write_checkpoint

    checkpoint, net = write_checkpoint(tmp_path / "ck.pt")
    out = tmp_path / "bn.onnx"
    export_onnx(checkpoint, out, inference_feature="bnneck")
    assert read_metadata(out).embedding_feature == "bnneck"
    sils, _ = contract_inputs(1, 9)
    with torch.inference_mode():
        expected = net.eval()(sils=sils)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["embedding"], {"sils": sils.numpy()})
    np.testing.assert_allclose(got, expected["bn_embedding"].numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, expected["pre_bnneck"].numpy(), atol=1e-2)  # really another feature
    with pytest.raises(ValueError):
        export_onnx(checkpoint, tmp_path / "bad.onnx", inference_feature="centroid")

"""service/pipeline/embed.py: `OnnxEmbedder` follows the contract (gaitid/contract.py): uint8 inputs
fed as they are, equal lengths batched, metadata and model id from the contract."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from gaitid.contract import METADATA_KEY, ContractError, ModelInput, SequenceEmbedder, model_id
from service.pipeline.embed import OnnxEmbedder
from tests.conftest import TINY_CHANNELS, TINY_PARTS, build_tiny_embedding_model


def sequences(lengths, seed=0, depth=False):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        sils = np.where(rng.random((n, 64, 44)) > 0.5, 255, 0).astype(np.uint8)
        depths = rng.integers(0, 256, (n, 64, 44), dtype=np.uint8) if depth else None
        out.append(ModelInput(sils, depths))
    return out


def test_is_the_contracts_embedder(tiny_model):
    embedder = OnnxEmbedder(tiny_model, providers="cpu")
    assert isinstance(embedder, SequenceEmbedder)
    assert embedder.model_id == model_id(tiny_model)
    assert embedder.metadata.inputs == ["sils"] and embedder.metadata.embedding_shape == (TINY_CHANNELS, TINY_PARTS)
    assert embedder.embed([]).shape == (0, TINY_CHANNELS, TINY_PARTS)


def test_batched_equals_one_by_one_in_order(tiny_model):
    embedder = OnnxEmbedder(tiny_model, providers="cpu")
    batch = sequences([12, 20, 12, 7, 20])
    together = embedder.embed(batch)
    alone = np.concatenate([embedder.embed([s]) for s in batch])
    assert together.shape == (5, TINY_CHANNELS, TINY_PARTS) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    capped = OnnxEmbedder(tiny_model, providers="cpu", max_batch_frames=15)  # one sequence per call
    np.testing.assert_allclose(capped.embed(batch), together, rtol=1e-5, atol=1e-6)


def test_the_network_scales_the_uint8_input(tiny_model):
    """What the embedder feeds is the raw 0..255 silhouette: the mean over time of a sequence that
    is 255 everywhere equals the projection of 1.0 (the scaling happened in the graph)."""
    embedder = OnnxEmbedder(tiny_model, providers="cpu")
    weights = next(onnx.numpy_helper.to_array(t) for t in onnx.load(str(tiny_model)).graph.initializer
                   if t.name == "sils_weights")
    full = ModelInput(np.full((5, 64, 44), 255, np.uint8))
    expected = weights.sum(axis=0).reshape(TINY_CHANNELS, TINY_PARTS)
    np.testing.assert_allclose(embedder.embed([full])[0], expected, rtol=1e-4, atol=1e-3)


def test_a_depth_model_needs_depth(tiny_model_factory):
    embedder = OnnxEmbedder(tiny_model_factory(("sils", "depths")), providers="cpu")
    assert embedder.metadata.needs_depth
    with_depth = sequences([10, 10], depth=True)
    assert embedder.embed(with_depth).shape == (2, TINY_CHANNELS, TINY_PARTS)
    with pytest.raises(ContractError, match="depths"):
        embedder.embed(sequences([10]))


def test_an_old_contract_model_is_refused_with_the_upgrade_command(tmp_path):
    model = onnx.load(str(build_tiny_embedding_model(tmp_path / "tiny.onnx")))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    del metadata["contract_version"]
    entry.value = json.dumps(metadata)
    onnx.save(model, str(tmp_path / "v1.onnx"))
    with pytest.raises(ContractError, match="gaitid models upgrade"):
        OnnxEmbedder(tmp_path / "v1.onnx", providers="cpu")


def test_a_float_input_model_is_refused(tmp_path):
    """Metadata saying v2 on a graph that still takes floats: the two disagree, nothing is guessed."""
    model = onnx.load(str(build_tiny_embedding_model(tmp_path / "tiny.onnx")))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    cast = next(n for n in model.graph.node if n.op_type == "Cast")
    cast.attribute[0].i = TensorProto.FLOAT
    onnx.save(model, str(tmp_path / "float.onnx"))
    with pytest.raises(ContractError, match="uint8"):
        OnnxEmbedder(tmp_path / "float.onnx", providers="cpu")

"""`gaitid models upgrade OLD NEW`: a contract-v1 embedding model (float inputs scaled by the caller)
becomes a v2 one (uint8 inputs scaled inside) that gives the same embeddings."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from typer.testing import CliRunner

from gaitid.cli import app
from gaitid.contract import METADATA_KEY, ModelInput, read_metadata
from service.pipeline.embed import OnnxEmbedder
from tests.conftest import build_tiny_embedding_model


def write_v1_model(path, tmp_path):
    """The tiny model as v1 exports were: a float input the caller scaled, metadata without a version."""
    model = onnx.load(str(build_tiny_embedding_model(tmp_path / "v2-source.onnx")))
    graph = model.graph
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    scaling = [n for n in graph.node if n.op_type in ("Cast", "Mul")]
    for node in scaling:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = ["sils" if x == "sils_scaled" else x for x in node.input]
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    v2 = json.loads(entry.value)
    v1 = {k: v2[k] for k in ("architecture", "variant", "inputs", "embedding_channels", "embedding_parts")}
    entry.value = json.dumps({**v1, "metric": "euclidean", "extra": {"note": "v1"}})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_upgrade_gives_a_v2_model_with_the_same_embeddings(tmp_path):
    old = write_v1_model(tmp_path / "old.onnx", tmp_path)
    new = tmp_path / "new.onnx"
    result = CliRunner().invoke(app, ["models", "upgrade", str(old), str(new)])
    assert result.exit_code == 0, result.output
    assert str(new) in result.output and "contract v2" in result.output
    assert read_metadata(new).inputs == ["sils"]
    sils = np.where(np.random.default_rng(0).random((1, 9, 64, 44)) > 0.5, 255, 0).astype(np.uint8)
    (before,) = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"]).run(
        ["embedding"], {"sils": sils.astype(np.float32) / 255})
    after = OnnxEmbedder(new, providers="cpu").embed([ModelInput(sils[0])])
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_upgrade_of_a_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["models", "upgrade", str(tmp_path / "nope.onnx"), str(tmp_path / "new.onnx")],
                                terminal_width=200)
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "new.onnx").exists()


def test_upgrade_of_a_model_that_is_not_v1_says_so(tmp_path):
    current = build_tiny_embedding_model(tmp_path / "v2.onnx")
    result = CliRunner().invoke(app, ["models", "upgrade", str(current), str(tmp_path / "new.onnx")])
    assert result.exit_code == 2 and result.output.startswith("error: ")

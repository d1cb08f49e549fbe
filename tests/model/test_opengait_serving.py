"""A converted OpenGait model is served like any of ours: the service's ONNX embedder accepts it (its
contract metadata is valid) and computes what our torch network computes, and the whole service
enrolls and identifies with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaitid.contract import ModelInput, model_id
from model.opengait.convert import convert_opengait
from service.pipeline.embed import OnnxEmbedder
from tests.model.conftest import contract_inputs
from tests.model.test_opengait import arch_config, opengait_state, randomised, save_opengait_checkpoint
from tests.service.conftest import serve, walking_clip


@pytest.fixture(scope="module", params=["deepgaitv2-p3d", "gaitbase"])
def converted(request, tmp_path_factory):
    """(ONNX path, our torch network) for a random-weight OpenGait checkpoint converted with our code."""
    folder = tmp_path_factory.mktemp(request.param)
    net = randomised(arch_config(request.param))
    ckpt = save_opengait_checkpoint(folder / "ckpt.pt", opengait_state(net), ddp=True)
    convert_opengait(ckpt, folder / "converted.onnx", request.param)
    return folder / "converted.onnx", net


def test_the_service_embedder_runs_a_converted_model(converted):
    path, net = converted
    embedder = OnnxEmbedder(path, providers="cpu")
    assert embedder.metadata.embedding_shape == (32, 16) and embedder.model_id == model_id(path)
    lengths = [10, 30, 30, 73]
    sequences = [ModelInput(sils=contract_inputs(1, n, seed=i)[0][0].numpy()) for i, n in enumerate(lengths)]
    got = embedder.embed(sequences)
    with torch.inference_mode():
        expected = np.concatenate([net(sils=torch.from_numpy(s.sils[None]))["embedding"].numpy() for s in sequences])
    assert got.shape == (4, 32, 16)
    assert np.abs(got - expected).max() <= 1e-4


def test_enroll_and_identify_with_a_converted_model(tmp_path, converted):
    path, _ = converted
    walker = walking_clip(people=1)
    with serve(tmp_path, path) as client:
        enrolled = client.post("/enroll", data={"subject_id": "walker"}, files={"video": ("w.avi", walker)})
        assert enrolled.status_code == 201, enrolled.text
        answer = client.post("/identify", files={"video": ("w.avi", walker)})
    assert answer.status_code == 200, answer.text
    track = answer.json()["tracks"][0]
    assert track["candidates"][0]["sequence_id"] == enrolled.json()["sequence_id"]
    assert track["subject_id"] == "walker"
    assert track["similarity"] == pytest.approx(1.0, abs=1e-4)

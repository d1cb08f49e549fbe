"""TorchEmbedder: the contract's SequenceEmbedder over a torch network or a checkpoint."""

import numpy as np
import pytest
import torch

from gaitid.contract import ModelInput, SequenceEmbedder, model_id
from model.depthgait import build_model
from model.embedder import UNSAVED_MODEL_ID, TorchEmbedder
from tests.model.conftest import contract_inputs, tiny_model_config


def sequences_of(lengths, variant="silhouette", seed=0):
    out = []
    for i, t in enumerate(lengths):
        sils, depths = contract_inputs(1, t, seed + i)
        out.append(ModelInput(sils=sils[0].numpy(), depths=depths[0].numpy() if variant != "silhouette" else None))
    return out


@pytest.mark.parametrize("variant", ["silhouette", "mcf"])
def test_embeds_mixed_lengths_in_order_like_the_network_one_by_one(variant):
    torch.manual_seed(0)
    net = build_model(tiny_model_config(variant)).eval()
    embedder = TorchEmbedder(net, "cpu")
    assert isinstance(embedder, SequenceEmbedder)
    assert embedder.model_id == UNSAVED_MODEL_ID
    assert embedder.metadata.inputs == net.cfg.modalities and embedder.metadata.embedding_shape == (256, 16)
    sequences = sequences_of([5, 9, 5, 3, 9], variant)
    got = embedder.embed(sequences)
    assert got.shape == (5, 256, 16) and got.dtype == np.float32
    with torch.no_grad():
        for seq, emb in zip(sequences, got):
            feeds = {n: torch.from_numpy(getattr(seq, n))[None] for n in net.cfg.modalities}
            np.testing.assert_allclose(emb, net(**feeds)["embedding"][0].numpy(), rtol=1e-4, atol=1e-5)


def test_batches_hold_equal_lengths_and_at_most_max_frames(monkeypatch):
    net = build_model(tiny_model_config()).eval()
    calls = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda **kw: calls.append(tuple(kw["sils"].shape[:2])) or forward(**kw))
    TorchEmbedder(net, "cpu", max_frames=10).embed(sequences_of([5, 5, 5, 7, 4]))
    assert sorted(calls) == [(1, 4), (1, 5), (1, 7), (2, 5)]


def test_leaves_a_training_network_in_training_mode_and_refuses_missing_depth():
    net = build_model(tiny_model_config("mcf")).train()
    embedder = TorchEmbedder(net, "cpu")
    embedder.embed(sequences_of([3], "mcf"))
    assert net.training
    with pytest.raises(ValueError, match="needs depths"):
        embedder.embed(sequences_of([3], "silhouette"))


def test_from_checkpoint_has_the_file_id_and_the_config(tiny_checkpoint):
    path, net = tiny_checkpoint("silhouette")
    embedder = TorchEmbedder.from_checkpoint(path, "cpu")
    assert embedder.model_id == model_id(path)
    assert embedder.config.model.variant == "silhouette"
    assert embedder.description == "checkpoint silhouette on cpu"
    sequences = sequences_of([6])
    with torch.no_grad():
        want = net(sils=torch.from_numpy(sequences[0].sils)[None])["embedding"].numpy()
    np.testing.assert_allclose(embedder.embed(sequences), want, rtol=1e-5, atol=1e-6)

"""The DepthGait network: every variant's shapes, gradients, fusion weights, variable lengths, losses."""

import pytest
import torch

from model.config import LossConfig, ModelConfig, load_config
from model.depthgait import build_model
from model.losses import GaitLoss, batch_all_triplet_loss

VARIANTS = ["silhouette", "depth", "plus", "concat", "attention", "mcf"]


def tiny(variant: str, **kw) -> ModelConfig:
    return ModelConfig(variant=variant, width=8, layers=[1, 1, 1, 1], num_classes=5, **kw)


def inputs(n: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, 64, 44, generator=g) > 0.5).float(), torch.rand(n, t, 64, 44, generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("frames", [1, 7, 30])
def test_every_variant_gives_part_embeddings_for_any_length(variant, frames):
    model = build_model(tiny(variant)).eval()
    sils, depths = inputs(2, frames)
    with torch.no_grad():
        out = model(sils=sils, depths=depths)
    assert out["embedding"].shape == (2, 256, 16)
    assert out["bn_embedding"].shape == (2, 256, 16)
    assert out["logits"].shape == (2, 5, 16)
    assert torch.isfinite(out["embedding"]).all()


@pytest.mark.parametrize("width", [32, 64])
def test_paper_widths_build(width):
    cfg = ModelConfig(variant="mcf", width=width, layers=[1, 4, 4, 1])
    model = build_model(cfg)
    assert model.fcs.weight.shape == (16, 8 * width, 256)
    # c, 2c, 4c, 8c channels, fused at every one of the four stages
    assert [f.weights.branches[0][-1].out_channels for f in model.fusions] == [2 * c for c in cfg.channels]


def test_single_modality_variants_refuse_missing_input():
    with pytest.raises(ValueError, match="needs sils"):
        build_model(tiny("silhouette"))(depths=inputs(1, 3)[1])
    with pytest.raises(ValueError, match="needs depths"):
        build_model(tiny("mcf"))(sils=inputs(1, 3)[0])


def test_single_modality_ignores_the_other_modality():
    model = build_model(tiny("silhouette")).eval()
    sils, depths = inputs(1, 5)
    with torch.no_grad():
        a = model(sils=sils)["embedding"]
        b = model(sils=sils, depths=depths * 0)["embedding"]
    torch.testing.assert_close(a, b)


def test_batched_equals_one_by_one():
    model = build_model(tiny("mcf")).eval()
    sils, depths = inputs(3, 9)
    with torch.no_grad():
        batched = model(sils=sils, depths=depths)["embedding"]
        single = torch.cat([model(sils=sils[i:i + 1], depths=depths[i:i + 1])["embedding"] for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_gradients_reach_both_encoders_fusion_and_fused_stream():
    model = build_model(tiny("mcf")).train()
    sils, depths = inputs(4, 6)
    out = model(sils=sils, depths=depths)
    loss, _ = GaitLoss(LossConfig())(out, torch.tensor([0, 0, 1, 1]))
    loss.backward()

    def grad_norm(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.encoders["sils"].stem) > 0
    assert grad_norm(model.encoders["depths"].stem) > 0
    for fusion in model.fusions:
        assert grad_norm(fusion.weights) > 0  # both the local and global branch take part
        assert all(grad_norm(branch) > 0 for branch in fusion.weights.branches)
    assert grad_norm(model.fused_stages) > 0


@pytest.mark.parametrize("variant", ["mcf", "attention"])
def test_modality_weights_sum_to_one_per_position(variant):
    model = build_model(tiny(variant)).eval()
    sils, depths = inputs(2, 4)
    with torch.no_grad():
        f_s = model.encoders["sils"].stages[0](model.encoders["sils"].stem(sils.unsqueeze(1)))
        f_d = model.encoders["depths"].stages[0](model.encoders["depths"].stem(depths.unsqueeze(1)))
        weights = model.fusions[0].modality_weights(f_s, f_d)
    assert weights.shape == (2 * 4, 2, 8, 64, 44)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones_like(weights[:, 0]))
    assert (weights >= 0).all() and (weights.std() > 0)  # real, position-dependent weights


def test_mcf_has_local_and_global_branches_attention_only_local():
    mcf, att = build_model(tiny("mcf")), build_model(tiny("attention"))
    kernels = lambda f: [b[3].kernel_size for b in f.weights.branches]
    assert kernels(mcf.fusions[0]) == [(3, 3), (5, 5)]
    assert kernels(att.fusions[0]) == [(3, 3)]


def test_cross_level_switch_removes_the_fused_stream():
    assert not hasattr(build_model(tiny("mcf", cross_level=False)), "fused_stages")


def test_triplet_loss_known_answer():
    # Two parts, one channel. Subject 0 at 0 and 1, subject 1 at 3: d(a,p)=1, d(a,n)=3 or 2.
    emb = torch.tensor([[0.0], [1.0], [3.0]]).reshape(3, 1, 1).expand(3, 1, 2)
    labels = torch.tensor([0, 0, 1])
    # margin 2: triplets (0,1,2): 1-3+2=0 ; (1,0,2): 1-2+2=1 -> one active, mean 1.
    loss, active = batch_all_triplet_loss(emb, labels, margin=2.0)
    assert loss.item() == pytest.approx(1.0)
    assert active.item() == pytest.approx(0.5)
    loss, _ = batch_all_triplet_loss(emb, labels, margin=0.5)
    assert loss.item() == 0.0


def test_config_overrides_and_strictness(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  variant: mcf\n")
    cfg = load_config(path, ["model.width=32", "data.frames=12", "optim.milestones=[5, 9]"])
    assert (cfg.model.variant, cfg.model.width, cfg.data.frames, cfg.optim.milestones) == ("mcf", 32, 12, [5, 9])
    with pytest.raises(ValueError):
        load_config(path, ["model.widht=32"])  # typo is an error, not silently ignored

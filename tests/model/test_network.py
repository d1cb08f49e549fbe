"""The DepthGait network: every variant's shapes, gradients, fusion weights, the cross-level term,
variable lengths, input scaling, checkpoint compatibility, losses."""

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_model, save_checkpoint
from model.config import ExperimentConfig, LossConfig, ModelConfig, load_config
from model.depthgait import CrossLevelStream, build_model, unit_range
from model.losses import GaitLoss, batch_all_triplet_loss
from tests.model.conftest import contract_inputs as inputs
from tests.model.conftest import tiny_model_config as tiny

VARIANTS = ["silhouette", "depth", "plus", "concat", "attention", "mcf"]
DATA = Path(__file__).parent / "data"


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


@pytest.mark.parametrize("variant", ["silhouette", "mcf"])
def test_the_network_scales_raw_inputs_itself(variant):
    """uint8 and float 0..255 inputs give the same embedding; scaling is x / 255 before the encoders."""
    model = build_model(tiny(variant)).eval()
    sils, depths = inputs(2, 6)
    with torch.no_grad():
        from_uint8 = model(sils=sils, depths=depths)["embedding"]
        from_float = model(sils=sils.float(), depths=depths.float())["embedding"]
        by_hand = model.fcs(model.hpp(model.encode(sils.float() / 255, depths.float() / 255).max(dim=2).values))
    torch.testing.assert_close(from_uint8, from_float, rtol=0, atol=0)
    torch.testing.assert_close(from_uint8, by_hand)
    torch.testing.assert_close(unit_range(torch.tensor([0, 51, 255], dtype=torch.uint8)), torch.tensor([0.0, 0.2, 1.0]))
    assert unit_range(None) is None


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
    assert grad_norm(model.cross_level) > 0
    assert all(grad_norm(stage) > 0 for stage in model.cross_level.stages)


@pytest.mark.parametrize("variant", ["mcf", "attention"])
def test_modality_weights_sum_to_one_per_position(variant):
    model = build_model(tiny(variant)).eval()
    sils, depths = (unit_range(x) for x in inputs(2, 4))
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


def test_cross_level_term_is_chosen_by_config():
    fused = build_model(tiny("mcf"))
    assert isinstance(fused.cross_level, CrossLevelStream) and len(fused.cross_level.stages) == 3
    ablated = build_model(tiny("mcf", cross_level="none"))
    assert ablated.cross_level is None
    assert not any(k.startswith("cross_level.") for k in ablated.state_dict())
    # configs and checkpoints written before the term had a name say true / false
    assert ModelConfig(cross_level=True).cross_level == "fused-stream"
    assert ModelConfig(cross_level=False).cross_level == "none"
    with pytest.raises(ValueError):
        ModelConfig(cross_level="sideways")


def test_cross_level_term_changes_the_embedding_and_carries_the_fused_stream():
    model = build_model(tiny("mcf")).eval()
    sils, depths = inputs(1, 4)
    with torch.no_grad():
        with_term = model(sils=sils, depths=depths)["embedding"]
        term, model.cross_level = model.cross_level, None  # the same weights without F_sd
        without = model(sils=sils, depths=depths)["embedding"]
        model.cross_level = term
    assert not torch.allclose(with_term, without)
    # F_sd at level i is level i's own stage applied to Y_f(i-1): same shape as X_f(i)
    y0 = torch.rand(1, 8, 4, 64, 44)
    assert term(1, y0).shape == (1, 16, 4, 32, 22)


def test_single_modality_state_dict_keys_are_those_of_existing_checkpoints():
    """Checkpoints trained before the renovation (the lead's runs) must keep loading."""
    golden = json.loads((DATA / "silhouette_state_dict_keys.json").read_text())["keys"]
    assert list(build_model(tiny("silhouette", num_classes=74)).state_dict()) == golden


def test_fused_checkpoint_with_the_old_key_names_loads(tmp_path):
    cfg = ExperimentConfig.model_validate({"model": tiny("mcf").model_dump() | {"cross_level": True}})
    torch.manual_seed(0)
    net = build_model(cfg.model).eval()
    old_names = {k.replace("cross_level.stages.", "fused_stages."): v for k, v in net.state_dict().items()}
    assert any(k.startswith("fused_stages.") for k in old_names)
    config = cfg.model_dump(mode="json")
    config["model"]["cross_level"] = True  # as configs were saved then
    save_checkpoint(tmp_path / "old.pt", {"model": old_names, "config": config})
    loaded, loaded_cfg = load_model(tmp_path / "old.pt", device="cpu")
    assert loaded_cfg.model.cross_level == "fused-stream"
    sils, depths = inputs(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sils=sils, depths=depths)["embedding"], net(sils=sils, depths=depths)["embedding"])


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
    cfg = load_config(path, ["model.width=32", "data.frames=12", "optim.milestones=[5, 9]",
                             "model.cross_level=none"])
    assert (cfg.model.variant, cfg.model.width, cfg.data.frames, cfg.optim.milestones) == ("mcf", 32, 12, [5, 9])
    assert cfg.model.cross_level == "none"
    with pytest.raises(ValueError):
        load_config(path, ["model.widht=32"])  # typo is an error, not silently ignored

"""OpenGait conversion (model/opengait): our key table against the names OpenGait's own networks use,
conversion of every architecture (ONNX output == our torch network's), errors that name the key,
YAML checks, seeding DepthGait (init_from), the zoo entry and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gaitid.contract import read_metadata
from model.config import ModelConfig
from model.depthgait import DepthGait
from model.opengait.architectures import ARCHITECTURES, OpenGaitModelConfig, OpenGaitNet, opengait_key_table
from model.opengait.convert import build_converted, convert_opengait, map_state
from model.opengait.init_from import init_from
from model.opengait.source import OpenGaitSourceError, detect_architecture, read_source
from tests.model.conftest import contract_inputs, write_checkpoint

RECORDED = json.loads((Path(__file__).parent / "test_opengait_recorded_keys.json").read_text())
# What OpenGait's released CASIA-B configs build (configs/deepgaitv2/DeepGaitV2_casiab.yaml,
# configs/gaitbase/gaitbase_da_casiab.yaml): width 64, one block per stage, 74 classes.
CASIAB = {"width": 64, "layers": [1, 1, 1, 1], "embedding_dim": 256, "num_classes": 74}
TOLERANCE = 1e-4


def arch_config(architecture: str, **kw) -> OpenGaitModelConfig:
    block = "2d" if architecture == "gaitbase" else architecture.split("-")[1]
    fields = {"width": 8, "layers": [1, 2, 1, 1], "num_classes": 6, **kw}
    fields.setdefault("embedding_dim", 4 * fields["width"])
    return OpenGaitModelConfig(architecture=architecture, block=block, **fields)


def randomised(cfg: OpenGaitModelConfig, seed: int = 0) -> OpenGaitNet:
    """Our network with random weights and BatchNorm statistics far from identity."""
    torch.manual_seed(seed)
    net = OpenGaitNet(cfg).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1234)
    return net


def opengait_state(net: OpenGaitNet) -> dict[str, torch.Tensor]:
    """`net`'s weights under OpenGait's key names (our table)."""
    ours_to_theirs = {ours: theirs for theirs, (ours, _) in opengait_key_table(net.cfg).items()}
    return {ours_to_theirs[k]: v.clone() for k, v in net.state_dict().items()}


def save_opengait_checkpoint(path: Path, state: dict, *, fp16: bool = False, ddp: bool = False) -> Path:
    """OpenGait's BaseModel.save_ckpt layout."""
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if ddp:
        state = {"module." + k: v for k, v in state.items()}
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {},
                "iteration": 60000}, path)
    return path


def onnx_embedding(path: Path, sils: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["embedding"], {"sils": sils.numpy()})
    return out


# -- the key table is OpenGait's ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECORDED["networks"]))
def test_key_table_matches_the_names_and_shapes_opengait_uses(name):
    recorded = RECORDED["networks"][name]
    architecture = name.removesuffix("-gait3d")
    layers = [1, 4, 4, 1] if name.endswith("gait3d") else [1, 1, 1, 1]
    cfg = arch_config(architecture, width=64, layers=layers, num_classes=recorded["keys"]["BNNecks.fc_bin"][2])
    table = {key: list(shape) for key, (_, shape) in opengait_key_table(cfg).items()}
    assert sorted(set(table) ^ set(recorded["keys"])) == []
    assert table == recorded["keys"]


# -- conversion -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("architecture", "fp16", "ddp"), [
    ("deepgaitv2-2d", True, False),
    ("deepgaitv2-p3d", False, True),
    ("deepgaitv2-3d", False, False),
    ("gaitbase", True, True),
])
def test_every_architecture_converts_and_onnx_equals_torch(tmp_path, architecture, fp16, ddp):
    cfg = arch_config(architecture)
    ckpt = save_opengait_checkpoint(tmp_path / "ckpt.pt", opengait_state(randomised(cfg)), fp16=fp16, ddp=ddp)
    source = read_source(ckpt, architecture)
    # Everything the network needs was read from the weights' shapes.
    assert (source.config.layers, source.config.width, source.config.num_classes) == ([1, 2, 1, 1], 8, 6)
    torch_net = build_converted(source.config, source.state)
    metadata = convert_opengait(ckpt, tmp_path / "model.onnx", architecture)

    sils, _ = contract_inputs(2, 13, seed=1)
    with torch.inference_mode():
        expected = torch_net(sils=sils)["embedding"].numpy()
    got = onnx_embedding(tmp_path / "model.onnx", sils)
    assert got.shape == (2, 32, 16)
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.abs(expected).max() > 1e-3  # a real signal, not zeros on both sides
    stored = read_metadata(tmp_path / "model.onnx")
    assert stored == metadata and stored.inputs == ["sils"]
    assert stored.architecture == ("GaitBase" if architecture == "gaitbase" else "DeepGaitV2")
    assert stored.provenance["source_dtypes"] == (["float16"] if fp16 else ["float32"])
    assert stored.provenance["source_ddp_prefix"] is ddp
    assert len(stored.provenance["source_checkpoint_sha256"]) == 64
    assert stored.provenance["source_metric"] == "euclidean"  # OpenGait's default (metric: euc)


def test_fp16_checkpoint_gives_the_network_of_its_rounded_weights(tmp_path):
    net = randomised(arch_config("deepgaitv2-p3d"))
    ckpt = save_opengait_checkpoint(tmp_path / "half.pt", opengait_state(net), fp16=True)
    converted = build_converted(net.cfg, read_source(ckpt, "deepgaitv2-p3d").state)
    for key, value in net.state_dict().items():
        rounded = value.half().float() if value.is_floating_point() else value
        assert torch.equal(converted.state_dict()[key], rounded), key


def test_casiab_width_converts_with_its_config(tmp_path):
    """The real CASIA-B DeepGaitV2 (width 64), with OpenGait's YAML: dataset and metric recorded."""
    cfg = arch_config("deepgaitv2-p3d", **CASIAB)
    ckpt = save_opengait_checkpoint(tmp_path / "DeepGaitV2-60000.pt", opengait_state(randomised(cfg)))
    config = tmp_path / "DeepGaitV2_casiab.yaml"
    config.write_text(yaml.safe_dump({
        "data_cfg": {"dataset_name": "CASIA-B", "test_dataset_name": "CASIA-B"},
        "evaluator_cfg": {"metric": "euc", "transform": [{"type": "BaseSilCuttingTransform"}]},
        "model_cfg": {"model": "DeepGaitV2", "Backbone": {"mode": "p3d", "in_channels": 1, "layers": [1, 1, 1, 1],
                                                         "channels": [64, 128, 256, 512]},
                      "SeparateBNNecks": {"class_num": 74}},
    }))
    metadata = convert_opengait(ckpt, tmp_path / "casiab.onnx", "deepgaitv2-p3d", config)
    assert metadata.training_data == "CASIA-B"
    assert metadata.embedding_shape == (256, 16) and metadata.variant == "p3d"
    assert metadata.provenance["source_config"] == config.name
    assert "assumed_without_config" not in metadata.provenance

    net = build_converted(cfg, read_source(ckpt, "deepgaitv2-p3d").state)
    sils, _ = contract_inputs(1, 30, seed=2)
    with torch.inference_mode():
        expected = net(sils=sils)["embedding"].numpy()
    assert np.abs(onnx_embedding(tmp_path / "casiab.onnx", sils) - expected).max() <= TOLERANCE


def test_use_emb2_returns_the_normalised_bnneck_feature(tmp_path):
    cfg = arch_config("deepgaitv2-2d", inference_feature="bnneck-normalised")
    net = randomised(cfg)
    sils, _ = contract_inputs(2, 7)
    with torch.inference_mode():
        out = net(sils=sils)
    assert torch.allclose(out["embedding"], torch.nn.functional.normalize(out["bn_embedding"], dim=1))
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(2, 16))

    ckpt = save_opengait_checkpoint(tmp_path / "c.pt", opengait_state(net))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model_cfg": {"model": "DeepGaitV2", "use_emb2": True,
                                                    "Backbone": {"mode": "2d"}}}))
    assert read_source(ckpt, "deepgaitv2-2d", config).config.inference_feature == "bnneck-normalised"
    assert read_source(ckpt, "deepgaitv2-2d").config.inference_feature == "pre-bnneck"


# -- errors name the key ---------------------------------------------------------------------------------


@pytest.fixture
def p3d_state() -> tuple[OpenGaitModelConfig, dict]:
    cfg = arch_config("deepgaitv2-p3d")
    return cfg, opengait_state(randomised(cfg))


def test_unmapped_key_is_named(p3d_state):
    cfg, state = p3d_state
    state["layer2.0.extra_attention.weight"] = torch.zeros(3)
    with pytest.raises(OpenGaitSourceError, match=r"1 unmapped key.*layer2\.0\.extra_attention\.weight"):
        map_state(cfg, state)


def test_missing_key_is_named(p3d_state):
    cfg, state = p3d_state
    del state["layer3.0.sbn.running_var"]
    with pytest.raises(OpenGaitSourceError, match=r"1 key\(s\) missing.*layer3\.0\.sbn\.running_var"):
        map_state(cfg, state)


def test_wrong_shape_is_named(p3d_state):
    cfg, state = p3d_state
    state["layer4.0.shortcut3d.weight"] = torch.zeros(64, 64, 5, 1, 1)
    with pytest.raises(OpenGaitSourceError, match=r"layer4\.0\.shortcut3d\.weight has shape"):
        map_state(cfg, state)


def test_missing_key_in_a_checkpoint_file_is_named(tmp_path, p3d_state):
    _, state = p3d_state
    del state["layer2.1.conv2.forward_block.1.weight"]
    ckpt = save_opengait_checkpoint(tmp_path / "c.pt", state)
    with pytest.raises(OpenGaitSourceError, match=r"missing.*layer2\.1\.conv2\.forward_block\.1\.weight"):
        convert_opengait(ckpt, tmp_path / "c.onnx", "deepgaitv2-p3d")
    assert not (tmp_path / "c.onnx").exists()


def test_wrong_architecture_names_the_right_one(tmp_path, p3d_state):
    _, state = p3d_state
    ckpt = save_opengait_checkpoint(tmp_path / "c.pt", state)
    assert detect_architecture(read_source(ckpt, None).state) == "deepgaitv2-p3d"
    with pytest.raises(OpenGaitSourceError, match="mode p3d.*--arch deepgaitv2-p3d"):
        read_source(ckpt, "deepgaitv2-3d")
    with pytest.raises(OpenGaitSourceError, match="Backbone.forward_block"):
        read_source(ckpt, "gaitbase")


@pytest.mark.parametrize(("model_cfg", "evaluator", "message"), [
    ({"model": "DeepGaitV2", "SeparateBNNecks": {"class_num": 74}}, {}, "class"),
    ({"model": "DeepGaitV2", "Backbone": {"layers": [1, 1, 1, 1]}}, {}, r"layers = \[1, 1, 1, 1\]"),
    ({"model": "DeepGaitV2", "Backbone": {"mode": "3d"}}, {}, "mode is '3d'"),
    ({"model": "Baseline"}, {}, "model_cfg.model is 'Baseline'"),
    ({"model": "DeepGaitV2"}, {"transform": [{"type": "BaseParsingCuttingTransform"}]}, "BaseParsingCuttingTransform"),
])
def test_config_that_contradicts_the_checkpoint_is_refused(tmp_path, p3d_state, model_cfg, evaluator, message):
    _, state = p3d_state
    ckpt = save_opengait_checkpoint(tmp_path / "c.pt", state)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model_cfg": model_cfg, "evaluator_cfg": evaluator}))
    with pytest.raises(OpenGaitSourceError, match=message):
        read_source(ckpt, "deepgaitv2-p3d", config)


def test_gaitbase_config_facts_and_unsupported_backbones(tmp_path):
    cfg = arch_config("gaitbase", stem_maxpool=True, strides=[1, 2, 2, 1])
    ckpt = save_opengait_checkpoint(tmp_path / "g.pt", opengait_state(randomised(cfg)))
    backbone = {"type": "ResNet9", "block": "BasicBlock", "channels": [8, 16, 32, 64], "layers": [1, 2, 1, 1],
                "strides": [1, 2, 2, 1], "maxpool": True}
    config = tmp_path / "g.yaml"
    model_cfg = {"model": "Baseline", "backbone_cfg": backbone, "bin_num": [16],
                 "SeparateFCs": {"in_channels": 64, "out_channels": 32, "parts_num": 16},
                 "SeparateBNNecks": {"class_num": 6, "in_channels": 32, "parts_num": 16}}
    config.write_text(yaml.safe_dump({"model_cfg": model_cfg, "data_cfg": {"dataset_name": "Gait3D"}}))
    source = read_source(ckpt, "gaitbase", config)
    assert source.config.stem_maxpool is True and source.training_data == "Gait3D"
    # The maxpool flag changes what the network computes (same weights, different output).
    sils, _ = contract_inputs(1, 5)
    with_pool = build_converted(source.config, source.state)
    without = build_converted(source.config.model_copy(update={"stem_maxpool": False}), source.state)
    with torch.inference_mode():
        assert not torch.allclose(with_pool(sils=sils)["embedding"], without(sils=sils)["embedding"])

    for change, message in [({"type": "Plain"}, "only GaitBase's ResNet9"), ({"block": "Bottleneck"}, "BasicBlock")]:
        config.write_text(yaml.safe_dump({"model_cfg": {**model_cfg, "backbone_cfg": {**backbone, **change}}}))
        with pytest.raises(OpenGaitSourceError, match=message):
            read_source(ckpt, "gaitbase", config)


# -- DepthGait from converted weights (gaitid train --init-from) -------------------------------------------


def test_init_from_makes_a_silhouette_depthgait_compute_the_deepgaitv2(tmp_path):
    source = randomised(arch_config("deepgaitv2-p3d"))
    ckpt = save_opengait_checkpoint(tmp_path / "og.pt", opengait_state(source), ddp=True)
    net = DepthGait(ModelConfig(variant="silhouette", block="p3d", width=8, layers=[1, 2, 1, 1],
                                embedding_dim=32, num_classes=6)).eval()
    report = init_from(net, ckpt)
    assert report.encoders == ["sils"] and len(report.head) == 3 and not report.skipped
    sils, _ = contract_inputs(2, 9)
    with torch.inference_mode():
        assert torch.equal(net(sils=sils)["embedding"], source(sils=sils)["embedding"])


def test_init_from_seeds_both_encoders_and_skips_what_does_not_fit(tmp_path):
    source = randomised(arch_config("deepgaitv2-p3d"))
    ckpt = save_opengait_checkpoint(tmp_path / "og.pt", opengait_state(source))
    net = DepthGait(ModelConfig(variant="mcf", block="p3d", width=8, layers=[1, 2, 1, 1], embedding_dim=32,
                                num_classes=3))
    fused_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("fusions.")}
    report = init_from(net, ckpt)
    assert report.encoders == ["sils", "depths"]
    assert report.head == ["separate FCs", "BNNeck batch norm"]
    assert "BNNeck classifier" in report.skipped and "(16, 32, 6)" in report.skipped["BNNeck classifier"]
    ours = net.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("encoders.sils."):
            for modality in ("sils", "depths"):
                assert torch.equal(ours[key.replace("encoders.sils.", f"encoders.{modality}.")], value), key
    assert torch.equal(ours["fcs.weight"], source.state_dict()["fcs.weight"])
    assert all(torch.equal(ours[k], v) for k, v in fused_before.items())  # fusion modules untouched

    only_depth = DepthGait(ModelConfig(variant="mcf", block="p3d", width=8, layers=[1, 2, 1, 1], embedding_dim=32))
    sils_before = only_depth.state_dict()["encoders.sils.stem.module.0.weight"].clone()
    assert init_from(only_depth, ckpt, encoders=["depths"], head=False).encoders == ["depths"]
    assert torch.equal(only_depth.state_dict()["encoders.sils.stem.module.0.weight"], sils_before)


def test_init_from_refuses_a_different_encoder_naming_the_weight(tmp_path):
    ckpt = save_opengait_checkpoint(tmp_path / "og.pt", opengait_state(randomised(arch_config("deepgaitv2-p3d"))))
    three_d = DepthGait(ModelConfig(variant="silhouette", block="3d", width=8, layers=[1, 2, 1, 1], embedding_dim=32))
    with pytest.raises(OpenGaitSourceError, match=r"stages\.1\.0\.conv1\.weight.*block 3d"):
        init_from(three_d, ckpt)
    fewer_layers = DepthGait(ModelConfig(variant="silhouette", block="p3d", width=8, layers=[1, 1, 1, 1],
                                         embedding_dim=32))
    with pytest.raises(OpenGaitSourceError, match=r"stages\.1\.1\..*layers \[1, 1, 1, 1\]"):
        init_from(fewer_layers, ckpt)


def test_init_from_takes_our_own_silhouette_checkpoint(tmp_path):
    path, trained = write_checkpoint(tmp_path / "sil.pt", "silhouette")
    net = DepthGait(trained.cfg.model_copy(update={"variant": "attention"}))
    report = init_from(net, path)
    assert report.encoders == ["sils", "depths"] and "separate FCs" in report.head
    assert torch.equal(net.state_dict()["encoders.depths.stem.module.0.weight"],
                       trained.state_dict()["encoders.sils.stem.module.0.weight"])
    fused, _ = write_checkpoint(tmp_path / "mcf.pt", "mcf")
    with pytest.raises(OpenGaitSourceError, match="mcf DepthGait"):
        init_from(net, fused)


# -- zoo and command line ------------------------------------------------------------------------------------


def test_zoo_fetch_offline_says_what_to_download_and_how_to_convert(tmp_path, monkeypatch):
    import huggingface_hub

    from model.opengait import zoo

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(zoo.OpenGaitZooError) as error:
        zoo.fetch_opengait("deepgaitv2-p3d-sustech1k", tmp_path)
    message = str(error.value)
    assert zoo.ZOO["deepgaitv2-p3d-sustech1k"].checkpoint_url in message
    assert "gaitid models convert-opengait DeepGaitV2_30_DA-50000.pt" in message and "--arch deepgaitv2-p3d" in message
    with pytest.raises(zoo.OpenGaitZooError, match="deepgaitv2-p3d-sustech1k"):
        zoo.fetch_opengait("gaitset-casiab", tmp_path)

    from gaitid.cli import app

    result = CliRunner().invoke(app, ["models", "fetch", "deepgaitv2-p3d-sustech1k", "--dest", str(tmp_path)])
    assert result.exit_code == 1 and "convert-opengait" in result.output and "Traceback" not in result.output


def test_zoo_fetch_downloads_the_documented_file_and_converts_it(tmp_path, monkeypatch):
    import huggingface_hub

    from model.opengait import zoo

    ckpt = save_opengait_checkpoint(tmp_path / "DeepGaitV2_30_DA-50000.pt",
                                    opengait_state(randomised(arch_config("deepgaitv2-p3d"))))
    requested = {}

    def download(repo_id, filename, revision=None, local_dir=None):
        requested.update(repo_id=repo_id, filename=filename, revision=revision)
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    out = zoo.fetch_opengait("deepgaitv2-p3d-sustech1k", tmp_path / "models")
    assert requested == {"repo_id": "opengait/OpenGait", "revision": "main",
                         "filename": "SUSTech1K/DeepGaitV2/DeepGaitV2/checkpoints/DeepGaitV2_30_DA-50000.pt"}
    metadata = read_metadata(out)
    assert out.name == "deepgaitv2-p3d-sustech1k.onnx" and metadata.training_data == "SUSTech1K"
    assert metadata.provenance["zoo_entry"] == "deepgaitv2-p3d-sustech1k"


def test_cli_convert_opengait(tmp_path):
    from gaitid.cli import app

    ckpt = save_opengait_checkpoint(tmp_path / "g.pt", opengait_state(randomised(arch_config("gaitbase"))))
    runner = CliRunner()
    result = runner.invoke(app, ["models", "convert-opengait", str(ckpt), str(tmp_path / "g.onnx"), "--arch", "gaitbase"])
    assert result.exit_code == 0, result.output
    assert "GaitBase resnet9" in result.output and read_metadata(tmp_path / "g.onnx").architecture == "GaitBase"

    wrong = runner.invoke(app, ["models", "convert-opengait", str(ckpt), str(tmp_path / "x.onnx"), "--arch", "deepgaitv2-2d"])
    assert wrong.exit_code == 2 and "Baseline" in wrong.output and not (tmp_path / "x.onnx").exists()
    unknown = runner.invoke(app, ["models", "convert-opengait", str(ckpt), str(tmp_path / "x.onnx"), "--arch", "gaitset"])
    assert unknown.exit_code == 2 and all(a in unknown.output for a in ARCHITECTURES)

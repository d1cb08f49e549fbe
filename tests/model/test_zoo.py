"""`gaitid models import | fetch | list`: ONNX files, manifest.json with sha256 and provenance, and the
clear errors when weights (or the Ultralytics environment) are missing.

Weights here are randomly initialised and saved by the tests themselves: a YOLOv8n-seg checkpoint
written by Ultralytics in .venv-ultra, and a small Depth Anything folder written by transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gaitid.cli import app
from model import zoo
from service.pipeline.config import DEPTH_MODEL_FILE, YOLO_MODEL_FILE, PipelineSettings


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_depth_anything_folder(folder: Path) -> Path:
    """A Hugging Face folder (config.json + model.safetensors) of a small, random Depth Anything: the
    V2 layout (DINOv2 backbone read at 4 layers, DPT neck) at a fraction of the size, for speed."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, patch_size=14,
                            image_size=518, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 64],
                                 reassemble_hidden_size=64, fusion_hidden_size=16, head_hidden_size=8)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    return folder


def random_yolo_checkpoint(path: Path) -> Path:
    """yolov8n-seg.yaml, randomly initialised and saved as a checkpoint by Ultralytics (.venv-ultra)."""
    try:
        python = zoo.ultralytics_python()
    except zoo.UltralyticsEnvError as exc:
        pytest.skip(f"no Ultralytics environment (.venv-ultra): {str(exc).splitlines()[0]}")
    code = ("import torch; torch.manual_seed(0); from ultralytics import YOLO; "
            f"YOLO('yolov8n-seg.yaml').save({str(path)!r})")
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(path.parent.parent / "ultralytics-cfg")}
    subprocess.run([str(python), "-c", code], check=True, capture_output=True, cwd=path.parent, env=env, timeout=300)
    return path


def test_models_are_installed_where_the_pipeline_looks_for_them(tmp_path, monkeypatch):
    monkeypatch.setenv("GAITID_DATA_DIR", str(tmp_path / "data"))
    settings = PipelineSettings(_env_file=None)
    dest = zoo.default_dest(None)
    assert dest == settings.models_dir
    assert (dest / YOLO_MODEL_FILE, dest / DEPTH_MODEL_FILE) == (settings.yolo_path, settings.depth_path)


def test_import_depth_folder_writes_onnx_and_manifest_with_sha256(tmp_path, capsys):
    source = small_depth_anything_folder(tmp_path / "source" / "Depth-Anything-V2-Small-hf")
    dest = tmp_path / "models"
    installed = zoo.import_models(tmp_path / "source", dest)

    assert [m.file for m in installed] == [DEPTH_MODEL_FILE]
    onnx_file = dest / DEPTH_MODEL_FILE
    manifest = json.loads((dest / "manifest.json").read_text())
    entry = manifest["models"][DEPTH_MODEL_FILE]
    assert entry["sha256"] == sha256(onnx_file) and entry["bytes"] == onnx_file.stat().st_size
    assert entry["kind"] == "depth"
    provenance = entry["provenance"]
    assert provenance["origin"] == str(source.resolve()) and provenance["method"] == "import"
    assert provenance["weights_sha256"] == sha256(source / "model.safetensors")
    assert provenance["libraries"]["transformers"] and provenance["export"]["output"] == "disparity"
    assert provenance["parity_relative"] < 1e-3 and provenance["date"]

    listed = zoo.list_models(dest)
    assert [(m.file, m.status) for m in listed] == [(DEPTH_MODEL_FILE, "ok")]
    assert DEPTH_MODEL_FILE in capsys.readouterr().out
    with open(onnx_file, "ab") as fh:
        fh.write(b"\0")  # any change to the file shows up
    assert [m.status for m in zoo.list_models(dest, echo=False)] == ["modified"]


def test_import_yolo_checkpoint_and_depth_folder_together(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    checkpoint = random_yolo_checkpoint(source / "yolov8n-seg.pt")
    small_depth_anything_folder(source / "Depth-Anything-V2-Small-hf")
    dest = tmp_path / "models"

    installed = zoo.import_models(source, dest, imgsz=320)

    assert sorted(m.file for m in installed) == sorted([YOLO_MODEL_FILE, DEPTH_MODEL_FILE])
    manifest = json.loads((dest / "manifest.json").read_text())
    entry = manifest["models"][YOLO_MODEL_FILE]
    assert entry["sha256"] == sha256(dest / YOLO_MODEL_FILE) and entry["kind"] == "segmenter"
    provenance = entry["provenance"]
    assert provenance["origin"] == str(checkpoint.resolve())
    assert provenance["weights_sha256"] == sha256(checkpoint)
    assert provenance["export"]["imgsz"] == 320 and provenance["export"]["dynamic"] is True
    assert provenance["libraries"]["ultralytics"]
    assert max(provenance["parity_relative_max_abs_diff"].values()) < 1e-4
    assert manifest["models"][DEPTH_MODEL_FILE]["sha256"] == sha256(dest / DEPTH_MODEL_FILE)
    assert sorted(os.listdir(source)) == ["Depth-Anything-V2-Small-hf", "yolov8n-seg.pt"]  # nothing written there


def test_missing_weights_name_the_command_that_fixes_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(zoo.WeightsUnavailableError, match="gaitid models import DIR"):
        zoo.import_models(empty, tmp_path / "models")
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text(json.dumps({"model_type": "depth_anything"}))
    with pytest.raises(zoo.WeightsUnavailableError, match="model.safetensors"):
        zoo.import_models(config_only, tmp_path / "models")
    assert not (tmp_path / "models" / "manifest.json").exists()


def test_fetch_offline_fails_with_the_import_command(tmp_path, monkeypatch):
    import huggingface_hub.constants

    zoo_python = zoo.ultralytics_python  # skips below when the Ultralytics env is absent
    try:
        zoo_python()
    except zoo.UltralyticsEnvError as exc:
        pytest.skip(f"no Ultralytics environment (.venv-ultra): {str(exc).splitlines()[0]}")
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(zoo.WeightsUnavailableError) as caught:
        zoo.fetch_models(tmp_path / "models")
    message = str(caught.value)
    assert "YOLO-seg" in message and "Depth Anything" in message and "gaitid models import DIR" in message


def test_missing_ultralytics_env_says_how_to_create_it(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "yolov8n-seg.pt").write_bytes(b"not used")
    monkeypatch.setenv(zoo.ULTRALYTICS_PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(zoo.UltralyticsEnvError, match="python3 -m venv"):
        zoo.import_models(tmp_path / "src", tmp_path / "models")


def test_cli_reports_errors_without_a_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["models", "import", str(empty), "--dest", str(tmp_path / "models")])
    assert result.exit_code == 1
    assert "gaitid models import DIR" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["models", "list", "--dest", str(tmp_path / "models")])
    assert result.exit_code == 0 and "no models" in result.output

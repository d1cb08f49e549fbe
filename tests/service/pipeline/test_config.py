"""service/pipeline/config.py: the pipeline's settings take their defaults from the stages' own
dataclasses; model files have one name and one "is it there?" check."""

from __future__ import annotations

import inspect

import pytest

from service.pipeline.config import (
    DEPTH_MODEL_FILE,
    MODEL_FIX,
    SHIPPED_EMBEDDING_MODEL,
    YOLO_MODEL_FILE,
    DecodeLimits,
    PipelineConfig,
    PipelineSettings,
    TrackerConfig,
    missing_model,
    require_model,
)
from service.pipeline.depth import DepthEstimator
from service.pipeline.errors import ModelNotFoundError
from service.pipeline.segment_yolo import YoloSegmenter


def test_defaults_are_the_stages_own(tmp_path):
    settings = PipelineSettings(_env_file=None, data_dir=tmp_path)
    assert settings.decode_limits() == DecodeLimits()
    assert settings.tracker_config() == TrackerConfig()
    assert settings.pipeline_config() == PipelineConfig()
    depth = inspect.signature(DepthEstimator).parameters
    assert (settings.depth_size, settings.depth_input) == (depth["input_size"].default, depth["mode"].default)
    assert settings.yolo_imgsz == inspect.signature(YoloSegmenter).parameters["imgsz"].default
    assert settings.embedding_model == SHIPPED_EMBEDDING_MODEL


def test_model_paths_resolve_in_the_data_folder(tmp_path):
    settings = PipelineSettings(_env_file=None, data_dir=tmp_path, embedding_model=tmp_path / "abs.onnx")
    assert settings.yolo_path == tmp_path / "models" / YOLO_MODEL_FILE
    assert settings.depth_path == tmp_path / "models" / DEPTH_MODEL_FILE
    assert settings.embedding_path == tmp_path / "abs.onnx"


def test_the_model_file_check_says_how_to_get_the_file(tmp_path):
    present = tmp_path / "here.onnx"
    present.write_bytes(b"x")
    assert missing_model(present, "depth") is None and require_model(present, "depth") == present
    for kind in ("embedding", "yolo", "depth"):
        error = missing_model(tmp_path / "absent.onnx", kind)
        assert isinstance(error, ModelNotFoundError) and str(tmp_path / "absent.onnx") in error.message
        assert MODEL_FIX[kind] in error.message
    assert "GAITID_SEGMENTER=bgsub" in missing_model(tmp_path / "absent.onnx", "yolo").message
    with pytest.raises(ModelNotFoundError, match="gaitid models fetch"):
        require_model(tmp_path / "absent.onnx", "depth")
    assert missing_model(tmp_path, "depth") is not None  # a folder is not a model file


def test_the_stages_refuse_a_missing_file_the_same_way(tmp_path):
    for stage, kind in ((DepthEstimator, "depth"), (YoloSegmenter, "yolo")):
        with pytest.raises(ModelNotFoundError) as info:
            stage(tmp_path / "absent.onnx")
        assert info.value.message == missing_model(tmp_path / "absent.onnx", kind).message

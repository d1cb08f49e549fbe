"""model/prepare.py: labelled RGB footage -> silhouette and depth trees in OpenGait layout, through
the service's clip pipeline (moved here from the pipeline's tests)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from model.dataset import load_sequence
from model.prepare import compile_pattern, find_labelled_videos, prepare_dataset
from service.pipeline import pipeline as pipeline_module
from service.pipeline.config import PipelineSettings
from tests.conftest import RecordingDepth, write_synthetic_walk


def test_pattern_needs_the_three_groups():
    with pytest.raises(ValueError, match="view"):
        compile_pattern(r"(?P<subject>\d+)-(?P<condition>\w+)")


def test_labels_from_casia_names_and_custom_patterns(tmp_path):
    for name in ["001-bkgrd-090.avi", "002-nm-01-090.avi", "017-cl-02-162.mp4", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "p07" / "walk-a").mkdir(parents=True)
    (tmp_path / "p07" / "walk-a" / "front.mov").write_bytes(b"")
    labelled, unlabelled = find_labelled_videos(tmp_path, compile_pattern(None))
    assert [v.key for v in labelled] == ["002/nm-01/090", "017/cl-02/162"]
    assert {p.name for p in unlabelled} == {"001-bkgrd-090.avi", "front.mov"}
    custom = compile_pattern(r"(?P<subject>[^/]+)/(?P<condition>[^/]+)/(?P<view>[^/.]+)\.mov$")
    labelled, _ = find_labelled_videos(tmp_path, custom)
    assert [v.key for v in labelled] == ["p07/walk-a/front"]


def test_prepare_writes_parallel_trees_and_resumes(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_synthetic_walk(videos / "101-nm-01-090.mp4")
    write_synthetic_walk(videos / "101-nm-02-090.mp4", frames=8)  # too short: reported, not fatal
    # Depth Anything is not installed in tests: a stand-in with the DepthEstimator interface.
    monkeypatch.setattr(pipeline_module, "make_depth_estimator", lambda settings: RecordingDepth())
    settings = PipelineSettings(_env_file=None, data_dir=tmp_path / "gaitid", min_track_frames=15)
    out = tmp_path / "out"
    report = prepare_dataset(videos, out, segmenter="bgsub", settings=settings)
    assert report.written == ["101/nm-01/090"] and list(report.failed) == ["101/nm-02/090"]
    with open(out / "sil" / "101" / "nm-01" / "090" / "090.pkl", "rb") as fh:
        sils = pickle.load(fh)
    depth = load_sequence(out / "depth" / "101" / "nm-01" / "090")
    assert sils.shape[1:] == (64, 64) and sils.dtype == np.uint8 and len(sils) >= 30
    assert depth.shape == sils.shape and depth.dtype == np.uint8
    assert np.all(depth[sils > 0] == 128) and not depth[sils == 0].any()  # 0.5 * 255, rounded

    again = prepare_dataset(videos, out, segmenter="bgsub", settings=settings)
    assert again.skipped == ["101/nm-01/090"] and again.written == []


@pytest.mark.data
def test_prepare_casia_clips_with_background(videos_dir, tmp_path):
    root = videos_dir / "casia-b"
    report = prepare_dataset(root, tmp_path, pattern=r"(?P<subject>003)-(?P<condition>nm-\d\d)-(?P<view>\d{3})",
                             segmenter="bgsub", background=root / "001-bkgrd-090.avi", with_depth=False,
                             settings=PipelineSettings(_env_file=None, data_dir=tmp_path / "gaitid"))
    assert report.written == ["003/nm-01/090"]
    assert not (tmp_path / "depth").exists()
    assert load_sequence(tmp_path / "sil" / "003" / "nm-01" / "090").shape[1:] == (64, 64)

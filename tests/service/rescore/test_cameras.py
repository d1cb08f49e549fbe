"""Re-scoring with cameras: archive folders mapped to camera ids, and each camera's processing
settings (service.cameras: here a region of interest) applied to its videos only."""

from __future__ import annotations

import pytest

from gaitid.cli.rescore import RescoreCommand
from gallery import Gallery
from service.cameras import CameraRegistry, CameraSettings, cameras_dir
from service.pipeline.types import ClipOverrides
from service.rescore import LocalRunner, RescoreOptions, read_results, run_rescore
from service.settings import load_settings
from tests.service.rescore.conftest import CASIA, relative


def test_the_command_reads_the_cameras_of_its_gallery(tmp_path):
    registry = CameraRegistry(cameras_dir(tmp_path))
    registry.put("default", "camB", CameraSettings(rotation=90, roi=(0.0, 0.0, 0.5, 0.5)))
    registry.put("other", "camC", CameraSettings(rotation=180))
    settings = load_settings(env_file=None, data_dir=tmp_path, unknown_threshold=0.5)
    command = RescoreCommand(archive=tmp_path, cameras=("gate=camB",))
    assert command.camera_overrides(settings) == {"camB": ClipOverrides(rotation=90, roi=(0.0, 0.0, 0.5, 0.5))}
    options = command.rescore_options(settings, settings.pipeline)
    assert options.cameras == ("gate=camB",) and "camB" in options.extraction_settings["cameras"]
    assert RescoreCommand(archive=tmp_path, namespace="other").camera_overrides(settings) == {
        "camC": ClipOverrides(rotation=180)}


@pytest.mark.data
def test_a_cameras_region_of_interest_applies_to_its_videos_only(tmp_path, extractor):
    archive = tmp_path / "archive"
    clips = {"camA/2024-01-02/10-00-00.avi": "002-nm-01-090.avi", "camB/2024-01-03/09-30-15.avi": "004-nm-01-090.avi",
             "gate/walk.avi": "003-nm-01-090.avi"}
    for name, clip in clips.items():
        (archive / name).parent.mkdir(parents=True, exist_ok=True)
        (archive / name).symlink_to(CASIA / clip)
    corner = ClipOverrides(roi=(0.0, 0.0, 0.05, 0.05))  # nobody walks in the top-left corner
    options = RescoreOptions(out=tmp_path / "results.jsonl", progress=False, cameras=("gate=camB",),
                             camera_overrides={"camB": corner})
    with Gallery(tmp_path / "gallery") as gallery:
        run_rescore(archive, options, LocalRunner(extractor, workers=1), gallery)
    records = {name: [(r["camera"], r["error_code"]) for r in found]
               for name, found in relative(read_results(options.out), archive).items()}
    assert records == {"camA/2024-01-02/10-00-00.avi": [("camA", None)],
                       "camB/2024-01-03/09-30-15.avi": [("camB", "no_person")],
                       "gate/walk.avi": [("camB", "no_person")]}  # camB by the folder mapping

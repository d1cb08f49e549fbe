"""`gaitid rescore` and `gaitid rescore-report`: the options become one typed RescoreCommand, and the
commands run a job end to end on the CASIA-B clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gaitid.cli import app
from gaitid.cli.rescore import RayOptions, RescoreCommand
from service.pipeline.config import PipelineSettings
from service.rescore import DEFAULT_PATH_PATTERNS, LocalRunner, RayRunner, read_results
from service.settings import load_settings
from tests.conftest import require_shared
from tests.service.rescore.conftest import BACKGROUND, CASIA


def test_the_command_overrides_only_what_was_given(tmp_path, tiny_model):
    base = PipelineSettings(_env_file=None, data_dir=tmp_path, segmenter="bgsub", max_frames=300, providers="cpu")
    plain = RescoreCommand(archive=tmp_path)
    assert plain.pipeline_settings(base) == base
    command = RescoreCommand(archive=tmp_path, model=Path("rel.onnx"), max_frames=50, max_duration=9.5,
                             background=Path("bg.avi"), top_k=3)
    settings = command.pipeline_settings(base)
    assert settings.embedding_model == Path("rel.onnx").resolve() and settings.background_clip.is_absolute()
    assert (settings.max_frames, settings.max_duration_s, settings.segmenter) == (50, 9.5, "bgsub")
    options = command.rescore_options(load_settings(env_file=None, unknown_threshold=0.7), settings)
    assert options.top_k == 3 and options.threshold == 0.7 and options.path_patterns == DEFAULT_PATH_PATTERNS
    assert options.extraction_settings == settings.extraction_fingerprint()
    assert options.extraction_settings["max_frames"] == "50"


def test_the_command_picks_its_runner(tmp_path, tiny_model):
    settings = PipelineSettings(_env_file=None, data_dir=tmp_path, segmenter="bgsub", embedding_model=tiny_model,
                                providers="cpu")
    local = RescoreCommand(archive=tmp_path, workers=3).runner(settings)
    assert isinstance(local, LocalRunner) and local.workers == 3
    ray = RescoreCommand(archive=tmp_path, ray=RayOptions(actors=4, gpus=0.25)).runner(settings)
    assert isinstance(ray, RayRunner) and (ray.actors, ray.num_gpus, ray.model_id) == (4, 0.25, local.model_id)


@pytest.mark.data
def test_cli_rescore_and_report(tmp_path, monkeypatch, tiny_model):
    walk = tmp_path / "camA" / "2024-01-02" / "10-00-00.avi"
    walk.parent.mkdir(parents=True)
    walk.symlink_to(require_shared(CASIA / "002-nm-01-090.avi"))
    corrupt = tmp_path / "camB" / "2024-01-03" / "09-45-00.mp4"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    listing = tmp_path / "tonight.txt"
    listing.write_text(f"{corrupt}\n{walk}\n")
    for key, value in {"DATA_DIR": tmp_path / "data", "EMBEDDING_MODEL": tiny_model, "SEGMENTER": "bgsub",
                       "PROVIDERS": "cpu", "BACKGROUND_CLIP": BACKGROUND}.items():
        monkeypatch.setenv(f"GAITID_{key}", str(value))
    cli = CliRunner()
    out = tmp_path / "results.csv"
    done = cli.invoke(app, ["rescore", str(listing), "--out", str(out), "--no-progress", "--workers", "1"])
    assert done.exit_code == 0, done.output
    assert "2 processed" in done.output and "1 tracks" in done.output
    assert [r["decision"] for r in read_results(out)] == ["error", "unknown"]  # empty gallery
    changed = cli.invoke(app, ["rescore", str(listing), "--out", str(out), "--no-progress", "--max-frames", "50"])
    assert changed.exit_code == 0 and "2 already done" in changed.output
    assert "other settings" in changed.output and "--force" in changed.output  # kept, with a warning
    report = cli.invoke(app, ["rescore-report", str(out), "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0 and (tmp_path / "r.html").exists(), report.output
    missing = cli.invoke(app, ["rescore", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_top_k = cli.invoke(app, ["rescore", str(listing), "--out", str(out), "--no-progress", "--top-k", "0"])
    assert bad_top_k.exit_code == 2 and "--top-k" in bad_top_k.output

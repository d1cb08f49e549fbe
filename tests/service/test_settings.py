"""service/settings.py: every part's settings from the environment, in one place, flat names."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.pipeline.config import PipelineSettings
from service.settings import GallerySettings, HttpSettings, load_settings


def test_environment_variables_reach_the_part_that_holds_them(monkeypatch, tmp_path):
    monkeypatch.setenv("GAITID_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GAITID_MAX_FRAMES", "77")
    monkeypatch.setenv("GAITID_API_KEYS", "k1, ,k2")
    monkeypatch.setenv("GAITID_UNKNOWN_THRESHOLD", "0.62")
    settings = load_settings(env_file=None)
    assert settings.pipeline.max_frames == 77 and settings.pipeline.decode_limits().max_frames == 77
    assert settings.http.api_key_bytes == (b"k1", b"k2")
    assert settings.gallery.unknown_threshold == 0.62
    # data_dir belongs to two parts: both read the same variable.
    assert settings.pipeline.models_dir == tmp_path / "models" and settings.gallery.gallery_dir == tmp_path / "gallery"


def test_overrides_go_to_every_part_that_has_the_field(tmp_path):
    settings = load_settings(env_file=None, data_dir=tmp_path, top_k=3, max_upload_mb=1.5, segmenter="bgsub")
    assert settings.pipeline.data_dir == settings.gallery.data_dir == tmp_path
    assert settings.gallery.top_k == 3 and settings.http.max_upload_mb == 1.5 and settings.pipeline.segmenter == "bgsub"
    with pytest.raises(TypeError, match="no_such_field"):
        load_settings(env_file=None, no_such_field=1)


def test_a_dotenv_file_is_read(tmp_path):
    env = tmp_path / ".env"
    env.write_text("GAITID_TOP_K=9\nGAITID_THREADS=3\n")
    settings = load_settings(env_file=env)
    assert settings.gallery.top_k == 9 and settings.pipeline.threads == 3


def test_invalid_values_are_refused():
    with pytest.raises(ValueError):
        load_settings(env_file=None, threads=0)
    with pytest.raises(ValueError):
        load_settings(env_file=None, segmenter="magic")


def test_each_field_has_one_home():
    """A field in two parts would be two defaults for one fact; data_dir is the one shared on purpose."""
    parts = [PipelineSettings, GallerySettings, HttpSettings]
    seen: dict[str, str] = {}
    for part in parts:
        for name in part.model_fields:
            assert name not in seen or name == "data_dir", f"{name} in {seen.get(name)} and {part.__name__}"
            seen[name] = part.__name__
    assert PipelineSettings.model_fields["data_dir"].default == GallerySettings.model_fields["data_dir"].default
    assert PipelineSettings.model_fields["data_dir"].default == Path(".gaitid")

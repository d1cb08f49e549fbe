"""GAITID_INDEX_KIND selects the service gallery's index kind, "compact" included, and rejects others."""

from __future__ import annotations

import pydantic
import pytest

from service.settings import load_settings


def test_index_kind_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(env_file=None).gallery.index_kind == "flat"
    monkeypatch.setenv("GAITID_INDEX_KIND", "compact")
    assert load_settings(env_file=None).gallery.index_kind == "compact"
    monkeypatch.setenv("GAITID_INDEX_KIND", "pq")
    with pytest.raises(pydantic.ValidationError, match="index_kind"):
        load_settings(env_file=None)

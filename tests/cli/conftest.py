"""Fixtures of the CLI tests: a fresh settings cache around each test (commands read GAITID_*)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()

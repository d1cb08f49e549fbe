"""Fixtures shared by the gallery tests: a seeded generator and a fresh gallery in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    g = Gallery(tmp_path / "gallery", threshold=0.5)
    yield g
    g.close()

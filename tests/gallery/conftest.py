"""Fixtures shared by the gallery tests: a seeded generator, the index backend under test, and a fresh
gallery in a temporary folder.

Every test that opens its gallery through `gallery` or `open_gallery` runs once per backend: FAISS
(embedded) and Milvus (milvus-lite: an embedded Milvus in a folder of the test's own, so the tests
need no server). The Milvus runs skip, saying why, only where pymilvus or milvus-lite is not
installed (the `test` extra, which CI installs, has both).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gallery import Gallery

OpenGallery = Callable[..., Gallery]  # open_gallery(root, **Gallery keyword arguments)

MILVUS_MISSING = [name for name in ("pymilvus", "milvus_lite") if importlib.util.find_spec(name) is None]
MILVUS_SKIP_REASON = (f"the Milvus backend's tests need {' and '.join(MILVUS_MISSING)} "
                      "(the `test` extra installs them: pip install -e '.[test]')")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "milvus" and MILVUS_MISSING:
        pytest.skip(MILVUS_SKIP_REASON)
    return request.param


@pytest.fixture
def open_gallery(backend: str) -> OpenGallery:
    """Gallery(root, ...) on the backend under test (milvus: milvus-lite at <root>/milvus.db)."""

    def open_(root: Path, **kwargs: Any) -> Gallery:
        return Gallery(root, backend=backend, **kwargs)  # type: ignore[arg-type]

    return open_


@pytest.fixture
def gallery(tmp_path: Path, open_gallery: OpenGallery) -> Iterator[Gallery]:
    g = open_gallery(tmp_path / "gallery", threshold=0.5)
    yield g
    g.close()

"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

# One thread per library: faster on a loaded 2-core machine, and reproducible.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
VIDEOS = SHARED_DATA / "videos"
CASIA_TARBALL = SHARED_DATA / "casia-b-sil-001-074.tar.xz"
# Where `.ci/run` (and the README) unpack the CASIA-B silhouettes.
CASIA_ROOT = REPO / "data" / "casia-b"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the checkout)")
    return path


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return require_shared(VIDEOS)


@pytest.fixture(scope="session")
def casia_root() -> Path:
    """CASIA-B silhouettes 001-074 in OpenGait layout; unpacked once if only the tarball is there."""
    if (CASIA_ROOT / "074").exists():
        return CASIA_ROOT
    require_shared(CASIA_TARBALL)
    CASIA_ROOT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "xJf", str(CASIA_TARBALL), "-C", str(CASIA_ROOT)], check=True)
    return CASIA_ROOT

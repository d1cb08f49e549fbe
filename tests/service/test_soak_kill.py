"""bench/soak_kill.py, small: the real server (uvicorn subprocess, tiny model, background subtraction)
killed with SIGKILL 5 times during enrollments, deletions and a re-embedding; after each kill store,
index and audit log agree and nothing acknowledged is lost (the full run: `python bench/soak_kill.py`)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def load_soak():
    spec = importlib.util.spec_from_file_location("soak_kill", REPO / "bench" / "soak_kill.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_five_kills_lose_nothing_acknowledged(tmp_path):
    soak = load_soak()
    report = soak.soak(kills=5, seed=0, workdir=tmp_path, log=False)
    print("\n" + report.summary())
    assert report.problems == []
    assert report.kills == 5 and set(report.kills_by_kind) == {"enroll", "delete", "reembed"}
    assert sum(report.acknowledged.values()) >= 5  # the warm-up changes, each then checked after the kill

"""Crash safety: a process killed inside or right after an enrollment's transaction leaves the
gallery as before or as after, consistent and writable (the database, the index, the search)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import embedding, sequence

REPO = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import gallery.store
    from gallery import Gallery, SequenceInput

    root, point, action, backend = sys.argv[1:5]

    def hook(name):
        if name == point:
            if action == "exit":
                os._exit(17)
            open(os.path.join(root, "inside"), "w").close()
            time.sleep(60)  # the parent SIGKILLs us here

    gallery.store.FAULT_HOOK = hook
    g = Gallery(root, backend=backend)
    rng = np.random.default_rng(7)
    seqs = [SequenceInput(np.full((3, 64, 44), 255, np.uint8), rng.standard_normal((256, 16)).astype(np.float32))
            for _ in range(3)]
    g.enroll("victim", seqs, model_id="m")
    print("enrollment returned", flush=True)
""")


def _run_child(root: Path, point: str, action: str, backend: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), point, action, backend], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if action == "kill":
        deadline = time.monotonic() + 60
        while not (root / "inside").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "child never reached the fault point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return proc.returncode


def _assert_consistent(open_gallery: OpenGallery, root: Path, expected_subjects: list[str],
                       rng: np.random.Generator) -> None:
    with sqlite3.connect(root / "gallery.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with open_gallery(root) as g:
        assert g.check() == []  # store, index and audit log agree
        status = g.status()
        assert [s.subject_id for s in g.list_subjects()] == expected_subjects
        assert status.index.vectors == status.sequences == sum(g.get_subject(s).sequence_count for s in expected_subjects)
        _, subjects, embs = g.export_embeddings()
        assert sorted(set(subjects)) == expected_subjects
        for e, subject in zip(embs, subjects):
            assert g.search(e, model_id="m")[0].best.subject_id == subject
        g.enroll("after-crash", [sequence(rng, embedding(rng))], model_id="m")  # still writable


@pytest.mark.parametrize("point,action,survives", [
    ("enroll:written", "exit", False),  # died inside the transaction
    ("enroll:written", "kill", False),  # SIGKILLed inside the transaction
    ("enroll:committed", "exit", True),  # died after COMMIT, before the index update
])
def test_crash_during_enrollment_leaves_before_or_after(open_gallery: OpenGallery, backend: str, tmp_path: Path,
                                                        rng: np.random.Generator,
                                                        point: str, action: str, survives: bool) -> None:
    root = tmp_path / "g"
    with open_gallery(root) as g:
        g.enroll("existing", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m")
    code = _run_child(root, point, action, backend)
    assert code == (17 if action == "exit" else -signal.SIGKILL)
    _assert_consistent(open_gallery, root, ["existing", "victim"] if survives else ["existing"], rng)



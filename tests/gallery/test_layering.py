"""The gallery stands on gaitid.contract alone: importing every gallery module loads nothing of the
service, the training code or torch (import-linter checks the imports statically; this checks what
actually loads, third-party packages included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.gallery.conftest import MILVUS_MISSING

REPO = Path(__file__).resolve().parents[2]


def test_gallery_loads_nothing_of_service_model_or_torch() -> None:
    modules = sorted(".".join(p.relative_to(REPO / "gallery").with_suffix("").parts)
                     for p in (REPO / "gallery").rglob("*.py") if p.stem != "__init__")
    if MILVUS_MISSING:  # the optional backend's client library (the `milvus` extra)
        modules.remove("backends.milvus")
    code = (
        "import importlib, json, sys\n"
        "import gallery\n"
        f"for name in {modules!r}: importlib.import_module('gallery.' + name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert {"gallery", "gaitid", "faiss"} <= loaded  # the probe sees real imports
    forbidden = loaded & {"service", "model", "torch", "onnxruntime", "fastapi"}
    assert not forbidden, forbidden

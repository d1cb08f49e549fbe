"""The GPU script's dry run: every step of `bash bench/gpu_run.sh` on the CPU with tiny sizes, so a lent
GPU is never spent on a bug. Checks the summary's measured figures and that the returned checkpoint and
ONNX parts join into files that load."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gaitid.contract import read_metadata
from model.checkpoint import load_model
from model.dataset import parse_subject_range

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN_LIMIT_S = 240  # the dry run takes ~30 s on an idle core; the limit only catches a hang
RETURNABLE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device tool brings back from $OUT


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path_factory.mktemp("work"))}
    done = subprocess.run(["bash", "bench/gpu_run.sh", "--dry-run"], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=DRY_RUN_LIMIT_S)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return out, json.loads((out / "summary.json").read_text()), log


def joined(out: Path, record: dict, into: Path) -> Path:
    """The parts joined as the summary says, checked against the recorded sha256."""
    data = b"".join((out / name).read_bytes() for name in record["parts"])
    assert len(data) == record["bytes"]
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    into.write_bytes(data)
    return into


@pytest.mark.slow
def test_dry_run_measures_every_step(dry_run):
    out, summary, _ = dry_run
    steps = summary["steps"]
    assert (out / "summary.md").read_text().startswith("# GPU run (dry run")
    assert not [n for n, s in steps.items() if s["status"] not in ("ok", "skipped")], steps
    for required in ("environment", "data", "train_speed", "serving_embedding", "train", "export"):
        assert steps[required]["status"] == "ok", (required, steps[required])
    for skipped in (s for s in steps.values() if s["status"] == "skipped"):
        assert skipped["reason"], "a skipped step says why"

    speed = steps["train_speed"]["results"]
    assert speed["steps"][0]["mode"] == "eager" and speed["steps"][0]["frames_per_s"] > 0
    assert speed["batch_sampling_ms"] > 0
    assert speed["acceleration"]["channels_last_conv2d"] > 0
    rows = steps["serving_embedding"]["results"]["rows"]
    assert rows and all(r["frames_per_s"] > 0 and r["sequences_per_s"] > 0 for r in rows)
    assert {r["dtype"] for r in rows} == {"bfloat16", "float16"}
    assert "not ONNX Runtime" in steps["serving_embedding"]["results"]["note"]
    for name in ("serving_depth", "serving_yolo"):
        if steps[name]["status"] == "ok":
            assert all(r["images_per_s"] > 0 for r in steps[name]["results"]["rows"])
    if steps["serving_faiss"]["status"] == "ok":
        assert steps["serving_faiss"]["results"]["queries_per_s"] > 0
    if steps["clip_path"]["status"] == "ok":
        assert steps["clip_path"]["results"]["frames_per_s"] > 0

    trained = steps["train"]["results"]
    assert trained["this_run_iterations"] > 0 and trained["frames_per_s"] > 0
    assert trained["curve"] and all(np.isfinite(p["loss"]) for p in trained["curve"])
    trained_on = parse_subject_range(summary["config"]["data"]["train_subjects"])
    assert trained_on and not trained_on & {f"{i:03d}" for i in range(1, 7)}, "001-006 are never trained on"


@pytest.mark.slow
def test_returned_files_join_into_a_resumable_checkpoint_and_a_contract_onnx(dry_run, tmp_path):
    out, summary, _ = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert all(RETURNABLE_NAME.match(name) for name in files), files
    assert all((out / name).is_file() for name in files), "OUT stays flat"

    record = summary["steps"]["train"]["results"]["checkpoint"]
    assert len(record["parts"]) > 1, "the dry run's small parts exercise the split"
    checkpoint = joined(out, record, tmp_path / "checkpoint.pt")
    net, cfg = load_model(checkpoint, device="cpu")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "scheduler", "scaler", "iteration", "config", "subjects"} <= set(state)
    assert state["iteration"] == summary["steps"]["train"]["results"]["iterations"]
    assert len(state["subjects"]) == cfg.model.num_classes
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    optimizer.load_state_dict(state["optimizer"])  # resumable on a CPU (no fused/foreach left in it)

    import onnxruntime as ort

    record = summary["steps"]["export"]["results"]["onnx"]
    assert len(record["parts"]) > 1
    model = joined(out, record, tmp_path / "model.onnx")
    assert read_metadata(model).inputs == ["sils"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    sils = np.zeros((1, 12, 64, 44), np.uint8)
    sils[:, :, 10:60, 15:30] = 255
    (embedding,) = session.run(["embedding"], {"sils": sils})
    with torch.inference_mode():
        expected = net(sils=torch.from_numpy(sils))["embedding"].numpy()
    assert embedding.shape == expected.shape == (1, 256, 16)
    assert np.abs(embedding - expected).max() <= 1e-2 * max(1.0, np.abs(expected).max()), "fp16 weights: 1 % of scale"

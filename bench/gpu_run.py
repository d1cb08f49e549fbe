"""One prepared run for a lent GPU machine, where time is scarce: `bash bench/gpu_run.sh` runs this
(read that file's header for how to prepare and launch it).

In at most ~9 minutes, each step time-boxed, with a JSON + markdown summary written after every step:
  environment   what this machine has (torch, GPU, optional packages);
  data          CASIA-B unpacked from the carried tarball, subjects 007-074 loaded (never 001-006);
  train_speed   training frames/s of paper-scale DeepGaitV2 (OpenGait's CASIA-B recipe: P3D, layers
                [1, 1, 1, 1], channels 64-512, 8x16 sequences x 30 frames) with DeviceBatches and
                accelerate(): eager, then compiled; whether batch sampling is free of host syncs;
  serving_*     PyTorch on the GPU (not ONNX Runtime: its GPU wheels cannot travel): the embedding
                network (bf16 / fp16, several batch sizes), YOLO-seg and Depth Anything V2 Small with
                random weights (speed only), FAISS on the GPU, the whole clip path on a real clip;
                each only where its packages import, saying plainly what it skipped;
  train         training until the time budget, checkpoints into $OUT (our format, model/checkpoint.py);
  export        the final checkpoint to ONNX through model.export.export_onnx.
Files back from the machine must be at most 16 MiB each and 8 in all: the checkpoint and the ONNX
file come as parts, with the command that joins them in the summary.

`--dry-run` runs every step on the CPU with tiny sizes (width 8, 2-3 iterations, a few subjects of
data/casia-b or a synthetic tree, small parts so the split is exercised, torch.compile with the
"eager" backend so tracing is exercised without a compiler), in well under two minutes: a lent GPU is
never spent on a bug. Written for torch 2.11 (the GPU image) and later.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from model.checkpoint import save_checkpoint
from model.config import ExperimentConfig, load_config
from model.dataset import parse_subject_range, save_sequence
from model.depthgait import build_model
from model.device_batches import DeviceBatches
from model.speed import Accelerated, channels_last_conv2d
from model.train import Trainer, build_trainer, train_step
from model.training_data import SequenceBank

CONFIG = ROOT / "model/configs/deepgaitv2_sil_casiab.yaml"
TARBALL = ROOT / "data/casia-b-sil-001-074.tar.xz"
CLIP_DIRS = (ROOT / "data/clips", ROOT.parent / "shared/data/videos/casia-b")
CLIP, BACKGROUND = "002-nm-01-090.avi", "001-bkgrd-090.avi"
RESERVED_SUBJECTS = {f"{i:03d}" for i in range(1, 7)}  # end-to-end video checks: never trained on
CHECKPOINT_NAME, ONNX_NAME = "deepgaitv2-casiab.pt", "deepgaitv2-casiab.onnx"
PYTORCH_NOTE = ("PyTorch figures on this device (eager, autocast), not ONNX Runtime's: the service's "
                "onnxruntime-gpu wheels are too large to travel to this machine.")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the GPU's, or the dry run's tiny ones."""

    device: str
    budget_s: float  # the whole run, from the shell script's start
    overrides: list[str] = field(default_factory=list)  # on top of CONFIG
    speed_warmup: int = 3
    speed_iterations: int = 10
    compile_backend: str = "inductor"
    compile_min_left_s: float = 330  # compiling (about a minute or two) only when this much time is left
    train_max_iterations: int | None = None  # None: until the deadline
    log_every: int = 25
    checkpoint_every_s: float = 90
    checkpoint_every_iterations: int | None = None
    export_reserve_s: float = 60  # kept for the final checkpoint and the ONNX export
    part_bytes: int = 16 * 1024 * 1024
    serve_widths: tuple[int, ...] = (64, 8)  # the paper-scale network, the shipped CPU one
    serve_batches: tuple[int, ...] = (1, 8, 32, 128)
    serve_frames: int = 60
    serve_dtypes: tuple[str, ...] = ("bfloat16", "float16")
    yolo_imgsz: int = 640
    yolo_batches: tuple[int, ...] = (1, 8, 32)
    depth_sizes: tuple[tuple[int, int, tuple[int, ...]], ...] = ((518, 238, (1, 8, 32)), (518, 924, (1, 4)))
    faiss_gallery: int = 100_000
    faiss_queries: int = 1024
    measure_s: float = 0.5  # per measured configuration
    step_budget_s: float = 30  # per serving step


GPU_PLAN = Plan(device="cuda", budget_s=520)
DRY_PLAN = Plan(
    device="cpu", budget_s=110,
    overrides=["model.width=8", "data.frames=8", "data.batch_subjects=2", "data.batch_per_subject=2",
               "data.train_subjects=007-010"],
    speed_warmup=1, speed_iterations=2, compile_backend="eager", compile_min_left_s=0,
    train_max_iterations=3, log_every=1, checkpoint_every_iterations=2, export_reserve_s=20,
    part_bytes=512 * 1024, serve_widths=(8,), serve_batches=(1, 2), serve_frames=8, yolo_imgsz=64,
    yolo_batches=(1,), depth_sizes=((98, 56, (1, 2)), (70, 126, (1,))), faiss_gallery=2000, faiss_queries=16,
    measure_s=0.05, step_budget_s=30,
)


# -- the report ------------------------------------------------------------------------------------


class Skip(Exception):
    """A step that cannot run on this machine; the message says why."""


class Report:
    """summary.json and summary.md under OUT, rewritten after every step, so a run cut short still
    returns everything finished before the cut."""

    def __init__(self, out: Path, mode: str, started: float, budget_s: float):
        self.out, self.started, self.budget_s = out, started, budget_s
        self.data: dict = {"mode": mode, "note": PYTORCH_NOTE, "steps": {}}
        self.step_deadline = float("inf")

    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def step_time_left(self) -> float:
        return min(self.step_deadline - time.time(), self.left())

    @contextlib.contextmanager
    def step(self, name: str, title: str, budget_s: float | None = None) -> Iterator[dict]:
        results: dict = {}
        record = {"title": title, "status": "running", "results": results}
        self.data["steps"][name] = record
        began = time.time()
        self.step_deadline = began + budget_s if budget_s else float("inf")
        print(f"[{self.elapsed():6.1f}s] {name}: {title}", flush=True)
        try:
            yield results
            record["status"] = "ok"
        except Skip as why:
            record["status"], record["reason"] = "skipped", str(why)
        except Exception as exc:  # noqa: BLE001 - a failed step must not stop the others
            record["status"], record["error"] = "failed", f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc().splitlines()[-30:]
        finally:
            if record["status"] == "running":
                record["status"] = "interrupted"
            record["seconds"] = round(time.time() - began, 2)
            self.step_deadline = float("inf")
            self.write()
            detail = record.get("reason") or record.get("error") or ""
            print(f"[{self.elapsed():6.1f}s] {name}: {record['status']} ({record['seconds']} s) {detail}", flush=True)

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        text = json.dumps(self.data, indent=2, default=str)
        (self.out / "summary.json").write_text(text)
        (self.out / "summary.md").write_text(markdown(json.loads(text)))


def markdown(data: dict) -> str:
    lines = [f"# GPU run ({data['mode']}), {data.get('elapsed_s')} s", "", f"> {data['note']}", ""]
    for name, step in data["steps"].items():
        lines += [f"## {name}: {step['title']}", "", f"**{step['status']}** in {step.get('seconds')} s", ""]
        for key in ("reason", "error"):
            if key in step:
                lines += [f"{key}: `{step[key]}`", ""]
        lines += _render(step.get("results", {}))
    return "\n".join(lines) + "\n"


def _render(results: dict) -> list[str]:
    lines = []
    for key, value in results.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for row in value for k in row))
            lines += [f"**{key}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in value]
            lines.append("")
        elif isinstance(value, dict):
            lines += [f"- {key}:"] + [f"  - {k}: {_cell(v)}" for k, v in value.items()]
        else:
            lines.append(f"- {key}: {_cell(value)}")
    return lines + [""]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


# -- small helpers ---------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, min_s: float, max_reps: int = 200) -> float:
    """Seconds per call of `fn`, after a warm-up call (allocations, cuDNN autotuning), with one sync
    at the end of the timed calls."""
    fn()
    synchronize(device)
    began = time.perf_counter()
    fn()
    synchronize(device)
    once = time.perf_counter() - began
    reps = int(min(max_reps, max(2, min_s / max(once, 1e-6))))
    began = time.perf_counter()
    for _ in range(reps):
        fn()
    synchronize(device)
    return (time.perf_counter() - began) / reps


def split_file(path: Path, out: Path, part_bytes: int) -> dict:
    """Copy `path` into OUT as NAME.part00, NAME.part01, ... of at most part_bytes each (stale parts
    of an earlier save removed); returns the parts, sha256 and the command that joins them."""
    for stale in out.glob(path.name + ".part*"):
        stale.unlink()
    digest, names = hashlib.sha256(), []
    with open(path, "rb") as src:
        while chunk := src.read(part_bytes):
            digest.update(chunk)
            name = f"{path.name}.part{len(names):02d}"
            (out / (name + ".tmp")).write_bytes(chunk)
            (out / (name + ".tmp")).replace(out / name)
            names.append(name)
    return {"parts": names, "bytes": path.stat().st_size, "sha256": digest.hexdigest(),
            "join": f"cat {' '.join(names)} > {path.name} && sha256sum {path.name}"}


def importable(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure to import means "not here"
        return f"missing ({type(exc).__name__}: {str(exc)[:120]})"
    return str(getattr(module, "__version__", "present"))


# -- steps -----------------------------------------------------------------------------------------


def environment(results: dict, device: torch.device) -> None:
    results.update(python=platform.python_version(), torch=torch.__version__, cpus=os.cpu_count(),
                   cuda_available=torch.cuda.is_available(), wheels_from_whl=os.environ.get("GAITID_WHEELS", "no"))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        results.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                       bf16=torch.cuda.is_bf16_supported())
    results["packages"] = {name: importable(name) for name in (
        "pydantic", "pydantic_settings", "yaml", "cv2", "onnx", "onnxruntime", "av", "supervision",
        "transformers", "ultralytics", "faiss")}
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this is the GPU run but torch sees no CUDA device; on a CPU use --dry-run")


def casia_b_root(cfg: ExperimentConfig, results: dict) -> Path:
    """The silhouette tree: already unpacked, or unpacked from the carried tarball (parallel xz)."""
    root = cfg.data.silhouette_root = ROOT / cfg.data.silhouette_root
    if next(root.glob("0*/*/*/*.pkl"), None) is not None:
        results["casia_b"] = f"{root} (already unpacked)"
        return root
    if not TARBALL.is_file():
        raise FileNotFoundError(f"neither {root} nor {TARBALL}: run `bash bench/gpu_run.sh --prepare` first")
    root.mkdir(parents=True, exist_ok=True)
    began = time.time()
    if shutil.which("xz"):
        # CASIA-B's tarball has 110 xz blocks, so xz -T0 decompresses on every core.
        subprocess.run(f"xz -T0 -dc '{TARBALL}' | tar -x -C '{root}'", shell=True, check=True)
        how = "xz -T0 | tar"
    else:
        import tarfile
        with tarfile.open(TARBALL, "r:xz") as tar:
            tar.extractall(root)
        how = "python tarfile (no xz on PATH)"
    results["casia_b"] = f"{root} unpacked from {TARBALL.name} in {time.time() - began:.1f} s with {how}"
    return root


def synthetic_tree(root: Path, subjects: set[str]) -> None:
    """A few sequences per subject in the CASIA-B layout (dry runs without CASIA-B): moving blobs."""
    rng = np.random.default_rng(0)
    for s in sorted(subjects):
        for condition in ("nm-01", "nm-02", "bg-01"):
            for view in ("000", "090"):
                length = int(rng.integers(6, 30))
                frames = np.zeros((length, 64, 64), np.uint8)
                for t in range(length):
                    x = 20 + int(s) % 10 + t % 5
                    frames[t, 8:60, x: x + 10] = 255
                save_sequence(root, s, condition, view, frames)


def load_data(cfg: ExperimentConfig, plan: Plan, results: dict, work: Path):
    subjects = parse_subject_range(cfg.data.train_subjects) or set()
    if subjects & RESERVED_SUBJECTS:
        raise ValueError(f"train_subjects {cfg.data.train_subjects} include 001-006, which are never trained on")
    try:
        casia_b_root(cfg, results)
    except FileNotFoundError:
        if plan.device != "cpu":
            raise
        synthetic = work / "synthetic-casia-b"
        synthetic_tree(synthetic, subjects)
        cfg.data.silhouette_root = synthetic
        results["casia_b"] = f"not here: a synthetic tree of {len(subjects)} subjects in {synthetic} (dry run)"
    began = time.time()
    bank = SequenceBank.load(cfg.data, cfg.data.train_subjects, need_depth=False)
    cfg.model.num_classes = len(bank.subjects)
    frames = sum(len(s) for s in bank.sils)
    results.update(subjects=f"{cfg.data.train_subjects} ({len(bank.subjects)})", sequences=len(bank.sils),
                   frames=frames, load_s=round(time.time() - began, 1))
    return bank


@dataclass
class TrainingRun:
    """model.train's trainer over device batches, stepped by hand so each phase can be timed: one
    `step()` per iteration (the same `train_step` as `gaitid train`)."""

    cfg: ExperimentConfig
    trainer: Trainer
    batches: DeviceBatches
    subjects: list[str]
    iteration: int = 0

    @classmethod
    def build(cls, cfg: ExperimentConfig, bank, device: torch.device) -> TrainingRun:
        torch.manual_seed(cfg.trainer.seed)
        cfg.trainer.compile = False  # compiled separately (train_speed), so its cost and gain are measured
        trainer = build_trainer(cfg, device)
        batches = DeviceBatches(bank, cfg.data, device, seed=cfg.trainer.seed)
        return cls(cfg, trainer, batches, list(bank.subjects))

    @property
    def fast(self) -> Accelerated:
        return self.trainer.fast

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.MultiStepLR:
        return self.trainer.scheduler

    @property
    def forward(self) -> Callable:
        return self.trainer.fast.forward

    @forward.setter
    def forward(self, module: Callable) -> None:
        self.trainer.fast.forward = module

    def step(self) -> dict[str, float]:
        stats = train_step(self.trainer, self.batches.batch())
        self.iteration += 1
        return stats

    def checkpoint(self) -> dict:
        """`gaitid train`'s checkpoint (what it resumes from), on the CPU. The momentum buffers are
        left out: with them the file would double (2 x 33 MB at c=64), past what can come back from
        the machine; a resumed run rebuilds momentum within a few iterations."""
        state = self.trainer.state(self.cfg, self.iteration, self.subjects, self.batches)
        state["model"] = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
        state["optimizer"]["state"] = {}
        state["momentum_dropped"] = True
        return state


def measure_steps(run: TrainingRun, warmup: int, iterations: int, device: torch.device) -> dict:
    for _ in range(warmup):
        run.step()
    synchronize(device)
    began = time.perf_counter()
    for _ in range(iterations):
        stats = run.step()
    synchronize(device)
    seconds = (time.perf_counter() - began) / iterations
    return {"frames_per_s": run.batches.frames_per_batch / seconds, "iterations_per_s": 1 / seconds,
            "loss": float(stats["loss"])}


def check_sync_free(batches: DeviceBatches, device: torch.device) -> str:
    """Whether drawing a batch makes any device-to-host sync (CUDA's sync debug mode raises on one)."""
    if device.type != "cuda":
        return "not checked on a CPU (there is no device to wait for)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches.batch()
        return "yes"
    except RuntimeError as exc:
        return f"no: {exc}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def train_speed(cfg: ExperimentConfig, bank, plan: Plan, device: torch.device, report: Report, results: dict):
    run = TrainingRun.build(cfg, bank, device)
    results.update(network=f"DeepGaitV2 {cfg.model.block} c={cfg.model.width} layers {cfg.model.layers}",
                   batch=f"{cfg.data.batch_subjects}x{cfg.data.batch_per_subject}x{cfg.data.frames} frames",
                   device_bank_gib=round(run.batches.nbytes / 2**30, 3), acceleration=run.fast.describe())
    results["batch_sampling_sync_free"] = check_sync_free(run.batches, device)
    results["batch_sampling_ms"] = round(1000 * time_call(run.batches.batch, device, plan.measure_s), 3)
    rows = [{"mode": "eager", **measure_steps(run, plan.speed_warmup, plan.speed_iterations, device)}]
    results["steps"] = rows
    if report.left() < plan.compile_min_left_s:
        results["compiled"] = f"not tried: {report.left():.0f} s left, compiling needs ~{plan.compile_min_left_s:.0f}"
        return run
    try:
        compiled = torch.compile(run.fast.model, backend=plan.compile_backend)
        began = time.time()
        run.forward = compiled
        run.step()  # compiles forward and backward
        synchronize(device)
        compile_s = time.time() - began
        rows.append({"mode": f"compiled ({plan.compile_backend})", "compile_s": round(compile_s, 1),
                     **measure_steps(run, plan.speed_warmup - 1, plan.speed_iterations, device)})
        if rows[-1]["frames_per_s"] < rows[0]["frames_per_s"]:
            run.forward = run.fast.model
        results["compiled"] = "kept" if run.forward is compiled else "measured, slower: training runs eager"
    except Exception as exc:  # noqa: BLE001 - a compiler failure leaves the eager run going
        run.forward = run.fast.model
        results["compiled"] = f"failed, training runs eager: {type(exc).__name__}: {str(exc)[:300]}"
    return run


def train(run: TrainingRun, plan: Plan, device: torch.device, report: Report, out: Path, work: Path,
          results: dict) -> Path:
    deadline = report.started + plan.budget_s - plan.export_reserve_s
    local = work / CHECKPOINT_NAME
    start, began, last_save = run.iteration, time.time(), time.time()
    curve = []

    def save() -> None:
        save_checkpoint(local, run.checkpoint())
        results["checkpoint"] = {"iteration": run.iteration, **split_file(local, out, plan.part_bytes)}
        report.write()

    while time.time() < deadline:
        if plan.train_max_iterations is not None and run.iteration - start >= plan.train_max_iterations:
            break
        stats = run.step()
        if run.iteration % plan.log_every == 0:
            stats = {key: float(value) for key, value in stats.items()}  # the one host sync, when logging
            rate = (run.iteration - start) * run.batches.frames_per_batch / (time.time() - began)
            curve.append({"iteration": run.iteration, "loss": round(stats["loss"], 4), "ce": round(stats["ce"], 4),
                          "triplet": round(stats["triplet"], 4), "train_acc": round(stats["train_acc"], 3),
                          "frames_per_s": round(rate), "minutes": round((time.time() - began) / 60, 2)})
            results["curve"] = curve
            print(f"  iteration {run.iteration}: loss {stats['loss']:.3f} acc {stats['train_acc']:.2f} "
                  f"{rate:.0f} frames/s", flush=True)
        due_iterations = plan.checkpoint_every_iterations and run.iteration % plan.checkpoint_every_iterations == 0
        if due_iterations or time.time() - last_save > plan.checkpoint_every_s:
            save()
            last_save = time.time()
    synchronize(device)
    seconds = time.time() - began
    results.update(iterations=run.iteration, this_run_iterations=run.iteration - start,
                   minutes=round(seconds / 60, 2), lr=run.scheduler.get_last_lr()[0],
                   frames_per_s=round((run.iteration - start) * run.batches.frames_per_batch / max(seconds, 1e-9)))
    save()
    return local


EXPORT_RELATIVE_TOLERANCE = 1e-4  # of the largest embedding value; export_onnx allows 100x that with fp16 weights


def export(checkpoint: Path, cfg: ExperimentConfig, plan: Plan, out: Path, work: Path, results: dict) -> None:
    """export_onnx, then our own parity check of the file on ONNX Runtime (CPU), relative to the
    embedding's scale: export_onnx's tolerance is absolute, and a young network's pre-BNNeck
    embeddings reach the thousands, where fp16 weights alone move them by more than that."""
    import onnxruntime as ort

    from model.checkpoint import load_model
    from model.export import export_onnx

    net, _ = load_model(checkpoint, device="cpu")
    sils = (torch.rand(2, 40, 64, 44, generator=torch.Generator().manual_seed(1)) > 0.5).to(torch.uint8) * 255
    with torch.inference_mode():
        expected = net(sils=sils)["embedding"].numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    onnx_path = work / ONNX_NAME
    metadata = export_onnx(checkpoint, onnx_path, fp16=True, tolerance=EXPORT_RELATIVE_TOLERANCE * scale,
                           training_data=f"CASIA-B silhouettes, subjects {cfg.data.train_subjects} (bench/gpu_run.py)")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], {"sils": sils.numpy()})
    diff = float(np.abs(got - expected).max())
    results.update(embedding_abs_max=scale, onnxruntime_max_abs_diff=diff, relative_diff=diff / scale)
    results["metadata"] = json.loads(metadata.model_dump_json())
    results["onnx"] = {"fp16_weights": True, **split_file(onnx_path, out, plan.part_bytes)}


def serving_embedding(cfg: ExperimentConfig, plan: Plan, device: torch.device, report: Report, results: dict) -> None:
    results["note"] = PYTORCH_NOTE + " Random weights (speed does not depend on them)."
    rows = []
    results["rows"] = rows
    for width in plan.serve_widths:
        net = build_model(cfg.model.model_copy(update={"width": width})).to(device).eval()
        channels_last_conv2d(net)
        for dtype_name in plan.serve_dtypes:
            for batch in plan.serve_batches:
                if report.step_time_left() <= 0:
                    results["stopped"] = "step budget reached"
                    return
                sils = (torch.rand(batch, plan.serve_frames, 64, 44, device=device) > 0.5).to(torch.uint8) * 255
                with torch.inference_mode(), torch.autocast(device.type, dtype=getattr(torch, dtype_name)):
                    seconds = time_call(lambda net=net, sils=sils: net(sils=sils)["embedding"], device, plan.measure_s)
                rows.append({"width": width, "dtype": dtype_name, "batch": batch, "frames": plan.serve_frames,
                             "sequences_per_s": round(batch / seconds, 1),
                             "frames_per_s": round(batch * plan.serve_frames / seconds),
                             "ms_per_batch": round(1000 * seconds, 3)})


def serving_yolo(plan: Plan, device: torch.device, report: Report, results: dict) -> None:
    try:
        from ultralytics import YOLO
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"ultralytics does not import here ({type(exc).__name__}: {exc})") from None
    results["note"] = PYTORCH_NOTE + " yolov8n-seg (the service's) built from its YAML: random weights."
    net = YOLO("yolov8n-seg.yaml").model
    with contextlib.suppress(Exception):
        net = net.fuse(verbose=False)  # conv+BN folded, as in the exported model
    half = device.type == "cuda"
    net = net.to(device).eval()
    net = net.half() if half else net
    rows = []
    results["rows"] = rows
    for batch in plan.yolo_batches:
        if report.step_time_left() <= 0:
            results["stopped"] = "step budget reached"
            return
        images = torch.rand(batch, 3, plan.yolo_imgsz, plan.yolo_imgsz, device=device,
                            dtype=torch.float16 if half else torch.float32)
        with torch.inference_mode():
            seconds = time_call(lambda images=images: net(images), device, plan.measure_s)
        rows.append({"imgsz": plan.yolo_imgsz, "dtype": "float16" if half else "float32", "batch": batch,
                     "images_per_s": round(batch / seconds, 1), "ms_per_batch": round(1000 * seconds, 3)})


def serving_depth(plan: Plan, device: torch.device, report: Report, results: dict) -> None:
    try:
        import transformers  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"transformers does not import here ({type(exc).__name__}: {exc})") from None
    from model.export_depth import random_model

    results["note"] = PYTORCH_NOTE + " Depth Anything V2 Small's architecture with random weights."
    net = random_model().to(device).eval()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    rows = []
    results["rows"] = rows
    for height, width, batches in plan.depth_sizes:
        for batch in batches:
            if report.step_time_left() <= 0:
                results["stopped"] = "step budget reached"
                return
            pixels = torch.rand(batch, 3, height, width, device=device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                seconds = time_call(lambda pixels=pixels: net(pixel_values=pixels).predicted_depth, device,
                                    plan.measure_s)
            rows.append({"input": f"{height}x{width}", "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                         "images_per_s": round(batch / seconds, 1), "ms_per_batch": round(1000 * seconds, 3)})


def serving_faiss(plan: Plan, device: torch.device, results: dict) -> None:
    try:
        import faiss
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"faiss does not import here ({type(exc).__name__}: {exc})") from None
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0 and device.type == "cuda":
        raise Skip("faiss imports but has no GPU support here (faiss.get_num_gpus() == 0)")
    dims = 256 * 16  # the embedding's search vector: 256 channels x 16 parts
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((plan.faiss_gallery, dims), dtype=np.float32)
    queries = rng.standard_normal((plan.faiss_queries, dims), dtype=np.float32)
    faiss.normalize_L2(gallery)
    faiss.normalize_L2(queries)
    index = faiss.IndexFlatIP(dims)
    where = "cpu (dry run: exercises the code only)"
    if gpus:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        where = "gpu"
    index.add(gallery)
    seconds = time_call(lambda: index.search(queries, 10), torch.device("cpu"), plan.measure_s, max_reps=20)
    results.update(index=f"IndexFlatIP on {where}", gallery=plan.faiss_gallery, dims=dims, k=10,
                   queries_per_s=round(plan.faiss_queries / seconds, 1),
                   ms_per_query_batch=round(1000 * seconds, 3), query_batch=plan.faiss_queries)


def clip_path(cfg: ExperimentConfig, device: torch.device, results: dict) -> None:
    try:
        import av  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"PyAV does not import here ({type(exc).__name__}); its ~36 MB wheel cannot travel beside "
                   "the 55 MB CASIA-B tarball within the 64 MiB limit") from None
    folder = next((d for d in CLIP_DIRS if (d / CLIP).is_file()), None)
    if folder is None:
        raise Skip(f"no real clip: {CLIP} is in none of {[str(d) for d in CLIP_DIRS]}")
    from model.embedder import TorchEmbedder
    from service.pipeline.config import PipelineSettings
    from service.pipeline.pipeline import build_pipeline

    net = build_model(cfg.model).eval()
    pipeline = build_pipeline(PipelineSettings(segmenter="bgsub"), TorchEmbedder(net, device),
                              background=folder / BACKGROUND)
    pipeline.process(folder / CLIP)  # warm-up: kernel selection, allocations
    result = pipeline.process(folder / CLIP)
    total = result.timings["total"]
    results.update(clip=str(folder / CLIP), segmenter="background subtraction (CPU)",
                   embedder=f"torch on {device} (fp32), random weights",
                   frames=result.frame_count, tracks=len(result.sequences),
                   frames_per_s=round(result.frame_count / total, 1),
                   stage_ms={k: round(1000 * v, 1) for k, v in result.timings.items()})


# -- the run -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/out/gpu"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--started", type=float, default=None, help="epoch seconds the run began (the shell's)")
    parser.add_argument("--budget-s", type=float, default=None, help="override the plan's time budget")
    args = parser.parse_args(argv)

    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    budget = args.budget_s or plan.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gaitid-gpu-run-"))
    work.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, "dry run (CPU, tiny sizes)" if args.dry_run else "GPU", args.started or time.time(), budget)
    # The shell's timeout sends SIGTERM: unwind through the steps' `finally`, so the summary is written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    device = torch.device(plan.device)
    cfg = load_config(CONFIG, plan.overrides)
    report.data["config"] = {"file": str(CONFIG.relative_to(ROOT)), "overrides": plan.overrides,
                             "model": cfg.model.model_dump(), "data": cfg.data.model_dump(mode="json")}

    with report.step("environment", "what this machine has") as results:
        environment(results, device)
    if report.data["steps"]["environment"]["status"] != "ok":
        return 1

    bank = run = checkpoint = None
    with report.step("data", "CASIA-B training subjects, loaded for the device") as results:
        bank = load_data(cfg, plan, results, work)
    if bank is not None:
        with report.step("train_speed", "training frames/s: DeviceBatches + accelerate(), eager and compiled") as results:
            run = train_speed(cfg, bank, plan, device, report, results)
    with report.step("serving_embedding", "embedding network, batched", plan.step_budget_s) as results:
        serving_embedding(cfg, plan, device, report, results)
    with report.step("serving_yolo", "YOLO-seg (random weights)", plan.step_budget_s) as results:
        serving_yolo(plan, device, report, results)
    with report.step("serving_depth", "Depth Anything V2 Small (random weights)", plan.step_budget_s) as results:
        serving_depth(plan, device, report, results)
    with report.step("serving_faiss", "FAISS search on the GPU") as results:
        serving_faiss(plan, device, results)
    with report.step("clip_path", "the whole clip path on a real clip") as results:
        clip_path(cfg, device, results)
    if run is not None:
        with report.step("train", "training until the time budget, checkpoints into OUT") as results:
            checkpoint = train(run, plan, device, report, args.out, work, results)
    if checkpoint is not None:
        with report.step("export", "final checkpoint -> ONNX (model.export.export_onnx)") as results:
            export(checkpoint, cfg, plan, args.out, work, results)
    failed = [name for name, step in report.data["steps"].items() if step["status"] in ("failed", "interrupted")]
    print(f"[{report.elapsed():6.1f}s] done; summary in {args.out}/summary.md" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of `gaitid rescore` on CPU: files/s and frames/s, local threads vs Ray Data actors.

    python bench/rescore.py [--copies 4] [--workers 1 2] [--ray-actors 2] [--ray-cpus 2]
                            [--model models/deepgaitv2-sil-casiab.onnx] [--no-ray]

The archive is synthetic: each CASIA-B clip of ../shared/data/videos/casia-b (three 320x240 walks of
116-139 frames and the 55-frame empty scene) copied `--copies` times under camera/date/time names.
Every copy gets a few distinct trailing bytes (FFmpeg ignores them) so that its content hash
differs: otherwise the re-scorer would rightly process identical copies once.

Each configuration runs from an empty state (every file decoded), against a gallery holding one
enrolled walk, segmenting by background subtraction seeded with the empty-scene clip, one ONNX
Runtime / OpenCV / FFmpeg thread per worker. The embedding model is --model, or the shipped one
when present, else a tiny randomly initialised DeepGaitV2 exported here (the network is a small
part of the cost; its output is meaningless). Ray's own start (ray.init) is reported apart; the
Ray row includes starting the actors and loading their pipelines. Wall times depend on the
machine and its load: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # after the thread settings above

from gallery import Gallery, SequenceInput
from service.pipeline.config import SHIPPED_EMBEDDING_MODEL, PipelineSettings
from service.rescore import ExtractorSpec, LocalRunner, RayRunner, RescoreOptions, run_rescore

cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parent.parent
CASIA = REPO.parent / "shared" / "data" / "videos" / "casia-b"
BACKGROUND = CASIA / "001-bkgrd-090.avi"
OUT = REPO / "bench" / "out"


@dataclass
class Row:
    runner: str
    files: int
    frames: int
    tracks: int
    seconds: float

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds


def make_archive(root: Path, copies: int) -> int:
    clips = sorted(CASIA.glob("*.avi"))
    if not clips:
        raise SystemExit(f"no CASIA-B clips in {CASIA}")
    count = 0
    for copy in range(copies):
        for number, clip in enumerate(clips):
            target = root / f"cam{number}" / f"2024-01-{copy + 1:02d}" / f"10-{number:02d}-00.avi"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, target)
            with open(target, "ab") as handle:
                handle.write(f"gaitid-bench-copy-{copy}".encode())
            count += 1
    return count


def tiny_model(path: Path) -> Path:
    import torch

    from model.config import ModelConfig
    from model.depthgait import build_model
    from model.embedder import network_metadata
    from model.export import export_module

    torch.manual_seed(0)
    config = ModelConfig(width=8, layers=[1, 1, 1, 1])
    export_module(build_model(config), path, network_metadata(config, training_data="random"))
    return path


def enroll_one(gallery: Gallery, spec: ExtractorSpec) -> None:
    extractor = spec.build()
    (sequence,) = extractor.pipeline.process(CASIA / "002-nm-01-090.avi").sequences
    (embedding,) = extractor.embedder.embed([sequence.model_input()])
    gallery.enroll("002", [SequenceInput.from_aligned(sequence, embedding)], model_id=extractor.model_id)


def run_once(name: str, archive: Path, work: Path, runner, gallery: Gallery) -> Row:
    out = work / name / "results.jsonl"
    started = time.perf_counter()
    summary = run_rescore(archive, RescoreOptions(out=out, progress=False), runner, gallery)
    seconds = time.perf_counter() - started
    if summary.processed != summary.files:
        raise RuntimeError(f"{name}: processed {summary.processed} of {summary.files} files")
    return Row(name, summary.processed, summary.frames, summary.tracks, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local producer thread counts")
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=2, help="num_cpus of the local Ray instance")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gaitid-bench-rescore-"))
    try:
        archive = work / "archive"
        files = make_archive(archive, args.copies)
        model = args.model or (SHIPPED_EMBEDDING_MODEL if SHIPPED_EMBEDDING_MODEL.exists() else None)
        model_note = str(model) if model else "tiny random DeepGaitV2 (width 8, layers 1-1-1-1)"
        model = model or tiny_model(work / "tiny.onnx")
        settings = PipelineSettings(data_dir=work / "gaitid", segmenter="bgsub", embedding_model=model, providers="cpu",
                                    threads=1, background_clip=BACKGROUND)
        spec = ExtractorSpec(settings)
        rows: list[Row] = []
        extra: dict[str, float] = {}
        with Gallery(work / "gallery") as gallery:
            enroll_one(gallery, spec)
            extractor = spec.build()
            for workers in args.workers:
                rows.append(run_once(f"local, {workers} decode thread(s)", archive, work,
                                     LocalRunner(extractor, workers=workers), gallery))
            if not args.no_ray:
                import ray

                started = time.perf_counter()
                ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
                extra["ray_init_s"] = time.perf_counter() - started
                try:
                    runner = RayRunner(spec, spec.model_id(), actors=args.ray_actors, num_cpus=1)
                    rows.append(run_once(f"ray data, {args.ray_actors} actors", archive, work, runner, gallery))
                finally:
                    ray.shutdown()
        print_table(rows, files, model_note, extra)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "rescore.json").write_text(json.dumps({
            "files": files, "model": model_note, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "rows": [{**asdict(r), "files_per_s": r.files_per_s, "frames_per_s": r.frames_per_s} for r in rows],
            **extra}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(rows: list[Row], files: int, model_note: str, extra: dict[str, float]) -> None:
    print(f"\narchive: {files} CASIA-B copies (320x240); model: {model_note}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"| {'runner':<28} | {'files':>5} | {'frames':>6} | {'tracks':>6} | {'wall s':>7} | {'files/s':>7} | "
          f"{'frames/s':>8} |")
    print(f"|{'-' * 30}|{'-' * 7}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    for r in rows:
        print(f"| {r.runner:<28} | {r.files:>5} | {r.frames:>6} | {r.tracks:>6} | {r.seconds:>7.1f} | "
              f"{r.files_per_s:>7.2f} | {r.frames_per_s:>8.1f} |")
    if "ray_init_s" in extra:
        print(f"ray.init (not in the Ray row): {extra['ray_init_s']:.1f} s")


if __name__ == "__main__":
    main()

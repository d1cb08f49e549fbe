"""Throughput of `gaitid rescore` on CPU: files/s and frames/s with 1 and 2 local workers (and Ray
Data actors), in one run.

    python bench/rescore.py [--clips shared|casia] [--copies 4] [--workers 1 2] [--rounds 2]
                            [--ray-actors 2] [--ray-cpus 2] [--model models/deepgaitv2-sil-casiab.onnx] [--no-ray]

The archive is synthetic: the shared clips of ../shared/data/videos copied `--copies` times under
camera/date/time names: `shared` = the six 720x1280 phone clips and the four 320x240 CASIA-B clips
(three walks and the empty scene), each file segmented on its own (no empty-scene clip); `casia` =
the CASIA-B clips only, seeded with their camera's empty scene. Every copy gets a few distinct
trailing bytes (FFmpeg ignores them) so that its content hash differs: otherwise the re-scorer would
rightly process identical copies once.

A local worker is one producer thread (hash, decode, segment, track, align: one file at a time, each
library at one thread); the consumer embeds what the producers hand over, so with two workers two
files are decoded and segmented at once while a third is embedded. Every configuration runs from
an empty state (every file decoded) against a gallery holding one enrolled walk; the worker counts
take turns over `--rounds` rounds so that a change in the machine's load hits each alike, and the
median is reported. The embedding model is --model, or the shipped one when present, else a tiny
randomly initialised DeepGaitV2 exported here (the network is a small part of the cost; its output
is meaningless). Ray's own start (ray.init) is reported apart; the Ray row includes starting the
actors and loading their pipelines. Wall times depend on the machine and its load: compare rows of
one run; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
VIDEOS = REPO.parent / "shared" / "data" / "videos"
CASIA = VIDEOS / "casia-b"
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


def archive_clips(which: str) -> list[Path]:
    clips = sorted(CASIA.glob("*.avi"))
    if which == "shared":
        clips = sorted((VIDEOS / "phone").glob("demo*.mp4")) + clips
    if not clips:
        raise SystemExit(f"no clips in {VIDEOS} (the shared data folder beside the checkout)")
    return clips


def make_archive(root: Path, clips: list[Path], copies: int) -> int:
    count = 0
    for copy in range(copies):
        for number, clip in enumerate(clips):
            target = root / f"cam{number}" / f"2024-01-{copy + 1:02d}" / f"10-{number:02d}-00{clip.suffix}"
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
    out = Path(tempfile.mkdtemp(prefix="run-", dir=work)) / "results.jsonl"  # an empty state each time
    started = time.perf_counter()
    summary = run_rescore(archive, RescoreOptions(out=out, progress=False), runner, gallery)
    seconds = time.perf_counter() - started
    if summary.processed != summary.files:
        raise RuntimeError(f"{name}: processed {summary.processed} of {summary.files} files")
    return Row(name, summary.processed, summary.frames, summary.tracks, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", choices=["shared", "casia"], default="shared")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local producer thread counts")
    parser.add_argument("--rounds", type=int, default=2, help="times each worker count runs, taking turns")
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=2, help="num_cpus of the local Ray instance")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gaitid-bench-rescore-"))
    try:
        archive = work / "archive"
        clips = archive_clips(args.clips)
        files = make_archive(archive, clips, args.copies)
        model = args.model or (SHIPPED_EMBEDDING_MODEL if SHIPPED_EMBEDDING_MODEL.exists() else None)
        model_note = str(model) if model else "tiny random DeepGaitV2 (width 8, layers 1-1-1-1)"
        model = model or tiny_model(work / "tiny.onnx")
        settings = PipelineSettings(data_dir=work / "gaitid", segmenter="bgsub", embedding_model=model, providers="cpu",
                                    threads=1, background_clip=BACKGROUND if args.clips == "casia" else None)
        spec = ExtractorSpec(settings)
        runs: dict[int, list[Row]] = {workers: [] for workers in args.workers}
        rows: list[Row] = []
        extra: dict[str, float] = {}
        with Gallery(work / "gallery") as gallery:
            enroll_one(gallery, spec)
            extractor = spec.build()
            for _ in range(args.rounds):
                for workers in args.workers:
                    runs[workers].append(run_once(f"local, {workers} worker(s)", archive, work,
                                                  LocalRunner(extractor, workers=workers), gallery))
            rows += [median_row(found) for found in runs.values()]
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
        print_table(rows, files, model_note, extra, args)
        if 1 in runs and 2 in runs:
            extra["two_over_one_worker"] = rows[args.workers.index(1)].seconds / rows[args.workers.index(2)].seconds
            print(f"2 workers / 1 worker: {extra['two_over_one_worker']:.2f}x files/s "
                  f"(each run: 1 worker {[round(r.seconds, 1) for r in runs[1]]} s, "
                  f"2 workers {[round(r.seconds, 1) for r in runs[2]]} s)")
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "rescore.json").write_text(json.dumps({
            "files": files, "clips": args.clips, "model": model_note, "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "rows": [{**asdict(r), "files_per_s": r.files_per_s, "frames_per_s": r.frames_per_s} for r in rows],
            "runs": {str(w): [asdict(r) for r in found] for w, found in runs.items()},
            **extra}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median_row(runs: list[Row]) -> Row:
    """The run of median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    middle = ordered[(len(ordered) - 1) // 2]
    return Row(middle.runner + (f", median of {len(runs)}" if len(runs) > 1 else ""), middle.files, middle.frames,
               middle.tracks, statistics.median_low([r.seconds for r in runs]))


def print_table(rows: list[Row], files: int, model_note: str, extra: dict[str, float], args) -> None:
    what = "phone (720x1280) and CASIA-B (320x240) clips" if args.clips == "shared" else "CASIA-B clips (320x240)"
    print(f"\narchive: {files} files, {args.copies} copies of the shared {what}; model: {model_note}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"| {'runner':<36} | {'files':>5} | {'frames':>6} | {'tracks':>6} | {'wall s':>7} | {'files/s':>7} | "
          f"{'frames/s':>8} |")
    print(f"|{'-' * 38}|{'-' * 7}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    for r in rows:
        print(f"| {r.runner:<36} | {r.files:>5} | {r.frames:>6} | {r.tracks:>6} | {r.seconds:>7.1f} | "
              f"{r.files_per_s:>7.2f} | {r.frames_per_s:>8.1f} |")
    if "ray_init_s" in extra:
        print(f"ray.init (not in the Ray row): {extra['ray_init_s']:.1f} s")


if __name__ == "__main__":
    main()

"""Frames/s of each clip-pipeline stage and of the whole path, CPU at one thread.

    python bench/pipeline.py [--clips casia 720p | PATH ...] [--repeat 3] [--max-frames 120]
                             [--segmenter bgsub|yolo|auto] [--data-dir .gaitid]

Stages are a list of `Stage`s run in order on one shared `BenchState`; each returns how many frames
it processed. YOLO-seg and Depth Anything stages run when their ONNX models are installed
(GAITID_DATA_DIR/models, see `gaitid models`) and are reported as skipped otherwise. To add a
stage (e.g. a naive-torch baseline), append a `Stage` in `build_stages` or pass `extra_stages` to
`run_benchmark`; a stage may read what earlier stages left in `state` (clip, detections, tracks).

Also writes bench/out/aligned_<clip>.png: a strip of aligned silhouettes (and depth, when computed)
of the longest track, for a person to look at. Absolute figures depend on the machine and its
load; compare stages within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from service.pipeline.align import align_sequence
from service.pipeline.config import DecodeLimits, PipelineConfig, PipelineSettings
from service.pipeline.decode import decode_video
from service.pipeline.errors import ModelNotFoundError, PipelineError
from service.pipeline.pipeline import (
    ClipPipeline,
    effective_fps,
    make_depth_estimator,
    make_segmenter,
    subset_track,
    touches_border,
)
from service.pipeline.segment_bgsub import BackgroundSubtractionSegmenter
from service.pipeline.track import track_people
from service.pipeline.types import Clip, FrameDetections, Track

# One thread: OpenCV here, FFmpeg via decode_video(threads=1), ONNX Runtime via settings.threads=1.
cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"
OUT = REPO / "bench" / "out"
NAMED_CLIPS = {
    # name: (video, empty-scene clip for background subtraction or None)
    "casia": (VIDEOS / "casia-b" / "002-nm-01-090.avi", VIDEOS / "casia-b" / "001-bkgrd-090.avi"),  # 320x240
    "720p": (VIDEOS / "phone" / "demo1.mp4", None),  # 720x1280 H.264, hand-held phone
}


@dataclass
class BenchState:
    """What the stages share: inputs, then each stage's outputs for the next."""

    name: str
    path: Path
    settings: PipelineSettings
    limits: DecodeLimits
    background: np.ndarray | None = None
    primary: str = "bgsub"  # the segmenter whose detections the track stage uses
    clip: Clip | None = None
    detections: dict[str, list[FrameDetections]] = field(default_factory=dict)  # segmenter -> per frame
    tracks: list[Track] | None = None
    depth: dict[int, np.ndarray] = field(default_factory=dict)  # track_id -> (T, H, W) disparity
    aligned: dict[int, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)


@dataclass
class Stage:
    name: str
    run: Callable[[BenchState], int]  # does the work once, returns frames processed
    # Returns why the stage cannot run here (missing model, no tracks), or None when it can.
    skip_reason: Callable[[BenchState], str | None] = lambda state: None


@dataclass
class StageTiming:
    clip: str
    stage: str
    frames: int
    seconds: list[float]
    skipped: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def fps(self) -> float:
        return self.frames / self.median if self.seconds and self.median > 0 else float("nan")


# --- stages ---------------------------------------------------------------------------------


def stage_decode(state: BenchState) -> int:
    state.clip = decode_video(state.path, state.limits, threads=1)
    return len(state.clip.frames)


def stage_segment_bgsub(state: BenchState) -> int:
    segmenter = BackgroundSubtractionSegmenter(background=state.background)
    state.detections["bgsub"] = segmenter.segment(state.clip.frames)
    return len(state.clip.frames)


def _yolo_segmenter(state: BenchState):
    settings = state.settings.model_copy(update={"segmenter": "yolo"})
    return make_segmenter(settings)


def _yolo_missing(state: BenchState) -> str | None:
    path = state.settings.yolo_path
    return None if path.exists() else f"no YOLO-seg model at {path}"


def stage_segment_yolo(state: BenchState) -> int:
    # Hook for the YOLO-seg helper: model loading is outside the timed work on purpose.
    segmenter = _cached(state, "yolo", _yolo_segmenter)
    state.detections["yolo"] = segmenter.segment(state.clip.frames)
    return len(state.clip.frames)


def stage_track(state: BenchState) -> int:
    config = state.settings.tracker_config()
    detections = state.detections[state.primary]
    tracks = track_people(detections, state.clip.frame_indices, effective_fps(state.clip), config)
    # As the pipeline does: frames cut by the image border never reach depth or alignment.
    state.tracks = [subset_track(t, ~touches_border(t.boxes, state.clip.size)) for t in tracks]
    return len(state.clip.frames)


def _depth_missing(state: BenchState) -> str | None:
    path = state.settings.depth_path
    if not path.exists():
        return f"no depth model at {path}"
    return None if state.tracks else "no track to estimate depth for"


def stage_depth(state: BenchState) -> int:
    # Hook for the Depth Anything helper: frames/s counts track frames (one crop per frame).
    estimator = _cached(state, "depth", lambda s: make_depth_estimator(s.settings))
    state.depth = {t.track_id: estimator.track_disparity(state.clip.frames, t) for t in state.tracks}
    return sum(len(t.positions) for t in state.tracks)


def stage_align(state: BenchState) -> int:
    state.aligned = {}
    for track in state.tracks:
        sils, depth, _ = align_sequence(track.masks, state.depth.get(track.track_id))
        state.aligned[track.track_id] = (sils, depth)
    return sum(len(t.positions) for t in state.tracks)


def _no_tracks(state: BenchState) -> str | None:
    return None if state.tracks else "no track"


def _whole_path(segmenter_choice: str) -> Callable[[BenchState], int]:
    def run(state: BenchState) -> int:
        settings = state.settings.model_copy(update={"segmenter": segmenter_choice})
        pipeline = _cached(state, f"pipeline-{segmenter_choice}", lambda s: ClipPipeline(
            PipelineConfig(decode=s.limits, tracker=settings.tracker_config()),
            make_segmenter(settings, background=s.background),
        ))
        return pipeline.process(state.path).frame_count

    return run


def build_stages(segmenter: str) -> list[Stage]:
    stages = [Stage("decode", stage_decode)]
    if segmenter in ("bgsub", "auto"):
        stages.append(Stage("segment (bgsub)", stage_segment_bgsub))
    if segmenter in ("yolo", "auto"):
        stages.append(Stage("segment (yolo)", stage_segment_yolo, _yolo_missing))
    # track, depth and align run on the detections of the segmenter the pipeline would pick.
    stages += [
        Stage("track", stage_track, lambda state: None if state.primary in state.detections else "no detections"),
        Stage("depth", stage_depth, _depth_missing),
        Stage("align", stage_align, _no_tracks),
        Stage(f"whole path ({segmenter}, no depth)", _whole_path(segmenter)),
    ]
    return stages


_CACHE: dict[tuple[str, str], object] = {}


def _cached(state: BenchState, key: str, make: Callable[[BenchState], object]):
    """Models are loaded once per clip, outside the timed repeats that follow the first."""
    slot = (state.name, key)
    if slot not in _CACHE:
        _CACHE[slot] = make(state)
    return _CACHE[slot]


# --- running ---------------------------------------------------------------------------------


def run_benchmark(
    clips: dict[str, tuple[Path, Path | None]],
    settings: PipelineSettings,
    limits: DecodeLimits,
    segmenter: str = "bgsub",
    repeat: int = 3,
    extra_stages: list[Stage] | None = None,
) -> list[StageTiming]:
    timings = []
    for name, (path, background_path) in clips.items():
        background = None
        if background_path is not None and background_path.exists():
            background = decode_video(background_path, DecodeLimits(max_frames=200)).frames
        state = BenchState(name, path, settings, limits, background, primary=_primary_segmenter(segmenter, settings))
        for stage in build_stages(segmenter) + list(extra_stages or []):
            timings.append(_time_stage(stage, state, repeat))
        _save_strip(state)
    return timings


def _primary_segmenter(choice: str, settings: PipelineSettings) -> str:
    if choice == "auto":
        return "yolo" if settings.yolo_path.exists() else "bgsub"
    return choice


def _time_stage(stage: Stage, state: BenchState, repeat: int) -> StageTiming:
    reason = stage.skip_reason(state)
    if reason:
        return StageTiming(state.name, stage.name, 0, [], skipped=reason)
    try:
        stage.run(state)  # warm-up: model loading, allocator, codec init
    except ModelNotFoundError as exc:
        return StageTiming(state.name, stage.name, 0, [], skipped=exc.message)
    except PipelineError as exc:  # e.g. nobody found: a result about the clip, not a crash
        return StageTiming(state.name, stage.name, 0, [], skipped=f"failed: {exc.message}")
    seconds, frames = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        frames = stage.run(state)
        seconds.append(time.perf_counter() - started)
    return StageTiming(state.name, stage.name, frames, seconds)


def _save_strip(state: BenchState, count: int = 24) -> Path | None:
    if not state.aligned:
        return None
    track_id = max(state.aligned, key=lambda k: len(state.aligned[k][0]))
    sils, depth = state.aligned[track_id]
    picks = np.linspace(0, len(sils) - 1, min(count, len(sils))).round().astype(int)
    rows = [np.concatenate(list(sils[picks]), axis=1)]
    if depth is not None:
        rows.append(np.concatenate([(d * 255).astype(np.uint8) for d in depth[picks]], axis=1))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"aligned_{state.name}.png"
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))
    return path


def format_table(timings: list[StageTiming]) -> str:
    lines = [
        "| clip | stage | frames | median s | frames/s |",
        "|---|---|---:|---:|---:|",
    ]
    for t in timings:
        if t.skipped:
            lines.append(f"| {t.clip} | {t.stage} | – | – | skipped: {t.skipped} |")
        else:
            lines.append(f"| {t.clip} | {t.stage} | {t.frames} | {t.median:.3f} | {t.fps:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=["casia", "720p"], help="casia, 720p, or video paths")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-frames", type=int, default=120, help="frames decoded per clip")
    parser.add_argument("--segmenter", choices=["bgsub", "yolo", "auto"], default="bgsub")
    parser.add_argument("--data-dir", type=Path, default=None, help="GAITID data dir holding models/")
    args = parser.parse_args()

    update = {"threads": 1, "providers": "cpu"}
    if args.data_dir is not None:
        update["data_dir"] = args.data_dir
    settings = PipelineSettings().model_copy(update=update)
    clips = {}
    for name in args.clips:
        if name in NAMED_CLIPS:
            clips[name] = NAMED_CLIPS[name]
        else:
            clips[Path(name).stem] = (Path(name), None)
    missing = [str(p) for p, _ in clips.values() if not p.exists()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)} (the shared data folder beside the checkout)")
    limits = DecodeLimits(max_frames=args.max_frames, max_duration_s=3600.0, max_side=settings.max_side,
                          on_too_long="truncate")
    timings = run_benchmark(clips, settings, limits, args.segmenter, args.repeat)
    print(f"CPU, 1 thread, median of {args.repeat} runs after one warm-up run")
    print(format_table(timings))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline.json").write_text(json.dumps(
        [{"clip": t.clip, "stage": t.stage, "frames": t.frames, "seconds": t.seconds, "fps": t.fps,
          "skipped": t.skipped} for t in timings], indent=2))
    print(f"strips and pipeline.json in {OUT}")


if __name__ == "__main__":
    main()

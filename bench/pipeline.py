"""Frames/s of the clip path at 320x240 and 720p, CPU at one thread: the decode-only floor, the path
before issue 16 ("today", bench/legacy_pipeline.py) and the current one, side by side in one run,
plus how far their aligned silhouettes agree.

    python bench/pipeline.py [--clips casia 720p | PATH ...] [--repeat 5] [--max-frames 120]
                             [--agreement shared|timed|none] [--yolo-model PATH] [--data-dir .gaitid]
                             [--bgsub KEY=VALUE ...]   # a variant of the current path's BgSubConfig

Rows per clip (each run once as a warm-up, then `--repeat` times, interleaved round by round so that
a change in the machine's load hits every row alike; the median is reported):
- decode only: FFmpeg decoding the frames the path needs, no pixel conversion (the floor);
- decode to RGB, today / now: full-size RGB frames / RGB at the segmenter's working size;
- whole path, today / now / now with the background model on whole frames / now in exact mode
  (full-size decoding and whole frames: today's silhouettes): decode, segment (background
  subtraction), track, align, and whatever else `ClipPipeline.process` does; no depth, no embedding;
- the current path's stages one by one on its own decoded clip (segment, track, align), and YOLO-seg
  when a model is installed or given (`--yolo-model`; a random-weight export times the work only,
  its detections mean nothing);
- a lower bound for any path that keeps today's silhouettes: each pixel that ends in a person's mask
  was judged by a background model that learnt that pixel's whole warm-up and classified it in that
  frame, so two rows time MOG2 on those pixels alone (packed into one row: the same per-pixel work,
  tested): the warm-up, and as many classifications as the masks hold pixels. The summary adds
  decoding, tracking and alignment as they now run, then the persons' share of converting frames to
  working-size RGB; it counts nothing for clean-up.
Agreement: per clip, the mean IoU of the aligned silhouettes of the frames both paths aligned (tracks
paired by shared frames) and the share of frames both aligned; `shared` runs it on every shared clip.
Beside it, two yardsticks: today's path against itself when only the YUV->RGB conversion of the same
decoded pictures changes (OpenCV's instead of swscale's, about a grey level apart at full size,
equally correct), and when +-1 grey level of uniform noise is added to the frames at the working size
(mean |change| 0.67, less than the 0.5-1.1 between the two paths' shrinks there): how far background
subtraction's silhouettes move for changes nobody would call a change.

Wall and CPU time are both reported: on a shared machine wall time inflates with the load, the
process's CPU time much less (every row runs on one thread, so CPU time is the work done).

Also writes bench/out/pipeline.json and bench/out/aligned_<clip>.png (a strip of the longest track's
aligned silhouettes, today's row above the current one). Absolute figures depend on the machine and
its load; compare rows of one run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python bench/pipeline.py` from anywhere: bench.* and service.* import

from bench.legacy_pipeline import Agreement, agreement, legacy_decode, legacy_process
from service.pipeline.align import align_sequence
from service.pipeline.config import DecodeLimits, PipelineConfig, PipelineSettings
from service.pipeline.decode import decode_video, even_sample
from service.pipeline.errors import PipelineError
from service.pipeline.pipeline import ClipPipeline, effective_fps, subset_track, touches_border
from service.pipeline.segment_bgsub import BackgroundSubtractionSegmenter, BgSubConfig, _spread
from service.pipeline.track import track_people
from service.pipeline.types import AlignedSequence, FrameDetections

# One thread: OpenCV here, FFmpeg and swscale via the pipeline's decoder_threads=1, ONNX Runtime threads=1.
cv2.setNumThreads(1)

VIDEOS = REPO.parent / "shared" / "data" / "videos"
OUT = REPO / "bench" / "out"
CASIA_BACKGROUND = VIDEOS / "casia-b" / "001-bkgrd-090.avi"
# The current path's background subtraction; `--bgsub KEY=VALUE` tries variants (e.g. warmup_frames=16).
CURRENT_BGSUB = BgSubConfig()
NAMED_CLIPS = {"casia": VIDEOS / "casia-b" / "002-nm-01-090.avi", "720p": VIDEOS / "phone" / "demo1.mp4"}


def shared_clips() -> list[Path]:
    """Every shared clip with a walk: the phone clips (720x1280) and the CASIA-B walks (320x240)."""
    return sorted((VIDEOS / "phone").glob("demo*.mp4")) + sorted((VIDEOS / "casia-b").glob("00[2-9]-*.avi"))


def background_for(path: Path) -> np.ndarray | None:
    """The empty-scene frames of CASIA-B's camera for its clips (as the service's background_clip)."""
    if path.parent.name == "casia-b" and CASIA_BACKGROUND.exists():
        return decode_video(CASIA_BACKGROUND, DecodeLimits(max_frames=200)).frames
    return None


@dataclass
class Row:
    clip: str
    name: str
    run: Callable[[], int]  # does the work once, returns frames processed
    seconds: list[float] = field(default_factory=list)  # wall time per run
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time of this process per run
    frames: int = 0
    skipped: str | None = None
    share: float | None = None  # the bound's warm-up row: share of the frame the persons' pixels cover

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else float("nan")

    @property
    def fps(self) -> float:
        return self.frames / self.median if self.seconds and self.median > 0 else float("nan")

    @property
    def cpu_fps(self) -> float:
        return self.frames / self.cpu_median if self.cpu_seconds and self.cpu_median > 0 else float("nan")


# --- what is timed ------------------------------------------------------------------------------


def ffmpeg_decode_only(path: Path, limits: DecodeLimits) -> int:
    """Decode every frame up to the last one sampling keeps, converting none: what no path can beat."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        total = stream.frames or 0
        last = int(even_sample(total, limits.max_frames)[-1]) if total else limits.max_frames - 1
        for index, _ in enumerate(container.decode(stream)):
            if index >= last:
                break
    return min(total or limits.max_frames, limits.max_frames)


def new_pipeline(config: PipelineConfig, background: np.ndarray | None, *, full_size: bool = False,
                 whole_frames: bool = False) -> ClipPipeline:
    """The current path; `full_size` and `whole_frames` together: exact mode (today's silhouettes)."""
    config = replace(config, decode_at_working_size=not full_size)
    bgsub = replace(CURRENT_BGSUB, tile_side=None) if whole_frames else CURRENT_BGSUB
    return ClipPipeline(config, BackgroundSubtractionSegmenter(bgsub, background=background))


def persons_pixels(detections: list[FrameDetections], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) at the working resolution of every cell that any frame's person mask holds."""
    union = np.zeros(shape, bool)
    for frame in detections:
        for mask in frame.masks:
            h, w = mask.pixels.shape
            union[mask.top:mask.top + h, mask.left:mask.left + w] |= mask.pixels
    return np.nonzero(union)


def rows_for(name: str, path: Path, config: PipelineConfig, background: np.ndarray | None,
             yolo_model: Path | None) -> list[Row]:
    limits = config.decode
    pipeline = new_pipeline(config, background)
    whole = new_pipeline(config, background, whole_frames=True)
    exact = new_pipeline(config, background, full_size=True, whole_frames=True)
    segmenter = pipeline.segmenter
    clip = decode_video(path, limits, frame_side=pipeline.frame_side)
    detections = segmenter.segment(clip.frames, clip.size)
    tracks = [subset_track(t, ~touches_border(t.boxes, clip.size))
              for t in track_people(detections, clip.frame_indices, effective_fps(clip), config.tracker)]

    def segment() -> int:
        segmenter.segment(clip.frames, clip.size)
        return len(clip.frames)

    def track() -> int:
        track_people(detections, clip.frame_indices, effective_fps(clip), config.tracker)
        return len(clip.frames)

    def align() -> int:
        for t in tracks:
            align_sequence(t.masks, None, min_pixels=config.min_mask_pixels)
        return sum(len(t.positions) for t in tracks)

    # Today's silhouettes come from a background model per pixel; each pixel that ends up in a person's
    # mask was judged by a model that had learnt that pixel's whole warm-up, and was classified in that
    # frame. So any path giving today's silhouettes must at least warm up a model on those pixels and
    # classify each mask pixel once: MOG2 on them alone, packed into one row (it models each pixel from
    # its own history, so packing changes no work; tested), is a lower bound for that part.
    # The default BgSubConfig regardless of --bgsub: without a variant, the current segmenter's own run.
    if segmenter.config == BgSubConfig():
        default, default_detections = segmenter, detections
    else:
        default = BackgroundSubtractionSegmenter(BgSubConfig(), background=background)
        default_detections = default.segment(clip.frames, clip.size)
    rows_, cols_ = persons_pixels(default_detections, clip.frames.shape[1:3])
    packed = np.ascontiguousarray(clip.frames[:, rows_, cols_][:, None])
    packed_background = np.ascontiguousarray(
        default._background_at(clip.frames.shape[2], clip.frames.shape[1])[:, rows_, cols_][:, None])
    warm = np.ascontiguousarray(packed[_spread(len(clip.frames), default.config.warmup_frames)])
    share = len(rows_) / (clip.frames.shape[1] * clip.frames.shape[2])
    # As many pixel-frames as the masks hold: that many pixels of the packed row, classified every frame.
    mask_pixel_frames = sum(int(m.pixels.sum()) for frame in default_detections for m in frame.masks)
    per_frame = max(1, -(-mask_pixel_frames // len(clip.frames)))
    classifier = default._warmed_up_subtractor(packed_background[:, :, :per_frame], warm[:, :, :per_frame])
    to_classify = np.ascontiguousarray(packed[:, :, :per_frame])

    def warm_up_persons_pixels() -> int:
        default._warmed_up_subtractor(packed_background, warm)
        return len(clip.frames)

    def classify_mask_pixels() -> int:
        for frame in to_classify:
            classifier.apply(frame, learningRate=default.config.learning_rate)
        return len(clip.frames)

    rows = [
        Row(name, "decode only (FFmpeg, no conversion)", lambda: ffmpeg_decode_only(path, limits)),
        Row(name, "decode to RGB, today (full size)", lambda: len(legacy_decode(path, config).frames)),
        Row(name, f"decode to RGB, now (working size {clip.pixel_size[0]}x{clip.pixel_size[1]})",
            lambda: len(decode_video(path, limits, frame_side=pipeline.frame_side).frames)),
        Row(name, "whole path, today", lambda: legacy_process(path, config, background)[1]),
        Row(name, "whole path, now", lambda: pipeline.process(path).frame_count),
        Row(name, "whole path, now, model on whole frames", lambda: whole.process(path).frame_count),
        Row(name, "whole path, now, exact mode (today's silhouettes)", lambda: exact.process(path).frame_count),
        Row(name, "  now: segment (bgsub)", segment),
        Row(name, "  now: track", track),
        Row(name, "  now: align (track frames)", align),
        Row(name, f"  bound: warm-up on the persons' pixels only ({share:.0%} of the frame)", warm_up_persons_pixels,
            share=share),
        Row(name, f"  bound: classifying the persons' mask pixels ({mask_pixel_frames / 1e6:.2f} M pixel-frames)",
            classify_mask_pixels),
    ]
    if yolo_model is not None:
        rows += yolo_rows(name, path, config, yolo_model)
    return rows


def yolo_rows(name: str, path: Path, config: PipelineConfig, model: Path) -> list[Row]:
    """YOLO-seg's whole segment step, today (full-size RGB frames, a letterbox resize per frame, frame-
    sized masks from the whole prototype map) and now (frames decoded at its input size, masks from the
    prototype cells under each box, kept as the box's crop), decoding included. A tiny confidence keeps
    up to 3 'persons' a frame so that masks are decoded even with random weights (their detections are
    meaningless: only the time counts)."""
    from bench.legacy_pipeline import LegacyYolo
    from service.pipeline.segment_yolo import YoloSegmenter

    def segmenter() -> YoloSegmenter:
        return YoloSegmenter(model, providers="cpu", threads=1, conf=1e-7, max_detections=3)

    now_yolo, today_yolo = segmenter(), LegacyYolo(segmenter())

    def today() -> int:
        return len(today_yolo.segment(legacy_decode(path, config).frames))

    def now() -> int:
        clip = decode_video(path, config.decode, frame_side=now_yolo.input_side)
        return len(now_yolo.segment(clip.frames, clip.size))

    return [Row(name, "decode + YOLO-seg, today", today), Row(name, "decode + YOLO-seg, now", now)]


def time_rows(rows: list[Row], repeat: int) -> None:
    """One warm-up each, then `repeat` rounds over all rows (interleaved)."""
    for row in rows:
        try:
            row.frames = row.run()
        except PipelineError as exc:
            row.skipped = f"failed: {exc.message}"
    for _ in range(repeat):
        for row in rows:
            if row.skipped:
                continue
            started, cpu_started = time.perf_counter(), time.process_time()
            row.frames = row.run()
            row.seconds.append(time.perf_counter() - started)
            row.cpu_seconds.append(time.process_time() - cpu_started)


# --- agreement ---------------------------------------------------------------------------------


@dataclass
class ClipAgreement:
    clip: str
    yardstick: Agreement | None = None  # today vs today with OpenCV's YUV->RGB: the method's own wobble
    noise_yardstick: Agreement | None = None  # today vs today with +-1 grey level at the working size
    now: Agreement | None = None
    whole_frames: Agreement | None = None  # now, the background model on whole frames
    exact: Agreement | None = None  # exact mode: full-size decoding and whole frames
    note: str = ""


def compare(path: Path, config: PipelineConfig) -> tuple[ClipAgreement, list[AlignedSequence], list[AlignedSequence]]:
    background = background_for(path)
    try:
        today, _ = legacy_process(path, config, background)
    except PipelineError as exc:
        return ClipAgreement(path.name, note=f"today's path: {exc.message}"), [], []
    result = ClipAgreement(path.name)
    for name, change in (("yardstick", {"opencv_rgb": True}), ("noise_yardstick", {"noise": 1})):
        try:
            setattr(result, name, agreement(today, legacy_process(path, config, background, **change)[0]))
        except PipelineError:  # today's path finds nobody after the change: it agrees on nothing
            setattr(result, name, agreement(today, []))
    try:
        now = new_pipeline(config, background).process(path).sequences
        result.now = agreement(today, now)
        result.whole_frames = agreement(today, new_pipeline(config, background, whole_frames=True).process(path).sequences)
        exact = new_pipeline(config, background, full_size=True, whole_frames=True).process(path).sequences
        result.exact = agreement(today, exact)
    except PipelineError as exc:
        result.note = f"current path: {exc.message}"
        return result, today, []
    return result, today, now


def save_strip(name: str, today: list[AlignedSequence], now: list[AlignedSequence], count: int = 24) -> None:
    if not today or not now:
        return
    rows = []
    for sequences in (today, now):
        sils = max(sequences, key=lambda s: len(s.silhouettes)).silhouettes
        picks = np.linspace(0, len(sils) - 1, min(count, len(sils))).round().astype(int)
        rows.append(np.concatenate(list(sils[picks]), axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows]
    OUT.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT / f"aligned_{name}.png"), np.concatenate(rows, axis=0))


# --- report ------------------------------------------------------------------------------------


def format_rows(rows: list[Row]) -> str:
    lines = ["| clip | what | frames | wall s | frames/s (wall) | CPU s | frames/s (CPU) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.clip} | {r.name} | – | – | – | – | skipped: {r.skipped} |")
        else:
            lines.append(f"| {r.clip} | {r.name} | {r.frames} | {r.median:.3f} | {r.fps:.1f} | {r.cpu_median:.3f} | "
                         f"{r.cpu_fps:.1f} |")
    return "\n".join(lines)


def summary(rows: list[Row]) -> list[str]:
    lines = []
    for clip in dict.fromkeys(r.clip for r in rows):
        by_name = {r.name: r for r in rows if r.clip == clip and not r.skipped}
        floor = by_name.get("decode only (FFmpeg, no conversion)")
        today, now = by_name.get("whole path, today"), by_name.get("whole path, now")
        if not (floor and today and now):
            continue
        decode_now = next((r for n, r in by_name.items() if n.startswith("decode to RGB, now")), None)
        for clock, fps, median in (("wall", "fps", "median"), ("CPU", "cpu_fps", "cpu_median")):
            ratio = getattr(now, fps) / getattr(today, fps)
            over_floor = getattr(now, median) / getattr(floor, median)
            over_decode = getattr(now, median) / getattr(decode_now, median) if decode_now else float("nan")
            lines.append(f"{clip} ({clock} time): now / today = {ratio:.2f}x frames/s; the whole path now takes "
                         f"{over_floor:.2f}x the decode-only time ({over_decode:.2f}x decoding to working-size RGB)")
            bound = bound_seconds(by_name, median, floor, decode_now)
            if bound is not None:
                lines.append(f"{clip} ({clock} time): least a path with today's silhouettes can take (decoding, the "
                             f"background model on the persons' pixels only, track and align as now): "
                             f"{bound[0] / getattr(floor, median):.2f}x the decode-only time; converting the persons' "
                             f"share of each frame too: {bound[1] / getattr(floor, median):.2f}x")
    return lines


def bound_seconds(by_name: dict[str, Row], median: str, floor: Row, decode_now: Row | None) -> tuple[float, float] | None:
    """Lower bounds (seconds) for today's silhouettes: decoding (`floor`), the persons'-pixels warm-up
    and the classification of their mask pixels, tracking and alignment as they now run; and the same
    plus converting only the persons' share of each frame (that share of what decoding to working-size
    RGB, `decode_now`, costs over decoding alone). Nothing for clean-up (morphology, blobs)."""
    def row(prefix: str) -> Row | None:
        return next((r for n, r in by_name.items() if n.startswith(prefix)), None)

    warm_up, classify, track, align = (row(p) for p in ("  bound: warm-up", "  bound: classifying", "  now: track",
                                                        "  now: align"))
    if decode_now is None or warm_up is None or warm_up.share is None or any(r is None for r in (classify, track, align)):
        return None
    decode_s, decode_rgb_s, warm_up_s, classify_s, track_s, align_s = (
        getattr(r, median) for r in (floor, decode_now, warm_up, classify, track, align))
    least = decode_s + warm_up_s + classify_s + track_s + align_s
    return least, least + warm_up.share * max(0.0, decode_rgb_s - decode_s)


def format_agreement(results: list[ClipAgreement]) -> str:
    """Mean IoU (share of frames both aligned) per clip and comparison, all against today's path."""
    header = ("| clip | yardstick: today, other YUV->RGB | yardstick: today, +-1 at working size | now "
              "| now, model on whole frames | exact mode |")
    lines = [header, "|---|---:|---:|---:|---:|---:|"]

    def cell(result: Agreement | None) -> str:
        return "–" if result is None else f"{result.mean_iou:.3f} ({result.coverage:.0%})"

    for r in results:
        cells = [cell(r.yardstick), cell(r.noise_yardstick), cell(r.now), cell(r.whole_frames), cell(r.exact)]
        lines.append(f"| {r.clip} | {' | '.join(cells)} |" + (f" {r.note}" if r.note else ""))
    return "\n".join(lines)


def bgsub_field(item: str) -> tuple[str, object]:
    """'warmup_frames=16' -> ('warmup_frames', 16); a number, None, or a string."""
    key, _, text = item.partition("=")
    if key not in BgSubConfig.__dataclass_fields__:
        raise SystemExit(f"--bgsub: {key!r} is not a BgSubConfig field")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=["casia", "720p"], help="casia, 720p, or video paths")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-frames", type=int, default=120, help="frames sampled per clip")
    parser.add_argument("--agreement", choices=["shared", "timed", "none"], default="shared",
                        help="agreement on every shared clip, on the timed clips only, or not at all")
    parser.add_argument("--yolo-model", default=None,
                        help="a YOLO-seg ONNX export, or 'random' for a random-weight export (bench/pipeline_models.py); "
                             "default: the installed one, if any")
    parser.add_argument("--data-dir", type=Path, default=None, help="GAITID data dir holding models/")
    parser.add_argument("--bgsub", nargs="+", default=[], metavar="KEY=VALUE",
                        help="BgSubConfig fields of the current path, e.g. warmup_frames=16 (agreement shows the cost)")
    args = parser.parse_args()
    global CURRENT_BGSUB
    CURRENT_BGSUB = replace(CURRENT_BGSUB, **dict(bgsub_field(item) for item in args.bgsub))

    settings = PipelineSettings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    yolo_model = settings.yolo_path if settings.yolo_path.exists() else None
    if args.yolo_model == "random":
        from bench.pipeline_models import random_yolo_onnx

        yolo_model = random_yolo_onnx()
    elif args.yolo_model:
        yolo_model = Path(args.yolo_model)
    clips = {name: NAMED_CLIPS.get(name, Path(name)) for name in args.clips}
    missing = [str(p) for p in clips.values() if not p.exists()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)} (the shared data folder beside the checkout)")
    limits = DecodeLimits(max_frames=args.max_frames, max_duration_s=3600.0, max_side=settings.max_side,
                          on_too_long="truncate")
    config = PipelineConfig(decode=limits, tracker=settings.tracker_config(), decoder_threads=1)

    rows: list[Row] = []
    for name, path in clips.items():
        rows += rows_for(name if name in NAMED_CLIPS else path.stem, path, config, background_for(path), yolo_model)
    time_rows(rows, args.repeat)
    print(f"CPU, 1 thread, median of {args.repeat} interleaved runs after a warm-up; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(format_rows(rows))
    for line in summary(rows):
        print(line)

    agreements: list[ClipAgreement] = []
    if args.agreement != "none":
        targets = shared_clips() if args.agreement == "shared" else list(clips.values())
        for path in targets:
            result, today, now = compare(path, config)
            agreements.append(result)
            save_strip(path.stem, today, now)
        print("\nAligned silhouettes against today's path: mean IoU over the frames both aligned (tracks paired by "
              "shared frames), and the share of frames both aligned:")
        print(format_agreement(agreements))

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline.json").write_text(json.dumps({
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "rows": [{"clip": r.clip, "what": r.name, "frames": r.frames, "seconds": r.seconds, "fps": r.fps,
                  "cpu_seconds": r.cpu_seconds, "cpu_fps": r.cpu_fps, "skipped": r.skipped} for r in rows],
        "summary": summary(rows),
        "agreement": [{"clip": a.clip, "note": a.note,
                       **{f"{what}_{field}": getattr(getattr(a, what), field)
                          for what in ("yardstick", "noise_yardstick", "now", "whole_frames", "exact")
                          if getattr(a, what) is not None
                          for field in ("mean_iou", "coverage")}} for a in agreements],
    }, indent=2))
    print(f"pipeline.json and strips in {OUT}")


if __name__ == "__main__":
    main()

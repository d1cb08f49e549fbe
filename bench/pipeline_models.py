"""Stage timings of the two pipeline networks, ours vs the naive way, CPU at one thread, one run.

    python bench/pipeline_models.py [--clip 720p | casia | PATH] [--frames 8] [--skip-naive]

Ours (ONNX Runtime, service.pipeline): YOLOv8n-seg at 640 and at 320 (rectangular letterbox, and
640 square for comparison), frames in batches of 8; Depth Anything V2 Small at 518 on person crops
(the default) and on full frames (shorter side 518).
Naive (torch eager, frame by frame): Ultralytics `YOLO.predict` at 640 (in .venv-ultra, its own
process) and transformers `DepthAnythingForDepthEstimation` with its image processor on the full
frame at 518, then upsampled to the frame, the way its model card shows.

WEIGHTS ARE RANDOM (no pretrained weights can be downloaded here): only the speed is meaningful.
The random YOLO finds no one, so both sides skip mask assembly; the person track that depth runs on
is synthetic (a walker-shaped box, 70% of the frame height, drifting across the frame).
Times are per frame, one timed run after a warm-up; CPU time (process_time) is reported
beside wall time because the machine may be shared: under load wall time inflates, CPU time much less.
Ratios are naive / ours (> 1 = ours faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import cv2
import numpy as np

from service.pipeline.config import DecodeLimits
from service.pipeline.decode import decode_video
from service.pipeline.depth import DepthEstimator
from service.pipeline.segment_yolo import YoloSegmenter
from service.pipeline.types import Track

cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"
OUT = REPO / "bench" / "out"
MODELS = OUT / "models-random"
NAMED_CLIPS = {"720p": VIDEOS / "phone" / "demo1.mp4", "casia": VIDEOS / "casia-b" / "002-nm-01-090.avi"}

NAIVE_YOLO = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from ultralytics import YOLO
frames = np.load(sys.argv[1])
torch.manual_seed(0)
model = YOLO("yolov8n-seg.yaml")
kwargs = dict(imgsz=int(sys.argv[2]), conf=0.25, iou=0.45, classes=[0], retina_masks=True, device="cpu", verbose=False)
model.predict(np.ascontiguousarray(frames[0][..., ::-1]), **kwargs)  # warm-up
wall, cpu = time.perf_counter(), time.process_time()
for frame in frames:  # one frame at a time, BGR as Ultralytics expects from OpenCV
    model.predict(np.ascontiguousarray(frame[..., ::-1]), **kwargs)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""


@dataclass
class Row:
    stage: str
    how: str
    network_input: str
    frames: int
    wall_s: float
    cpu_s: float

    @property
    def wall_ms(self) -> float:
        return 1000 * self.wall_s / self.frames

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / self.frames


def measure(fn: Callable[[], object], warmup: Callable[[], object] | None = None) -> tuple[float, float]:
    (warmup or fn)()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


# -- models (random weights, cached in bench/out/models-random) ---------------------------------------


def random_yolo_onnx() -> Path:
    out = MODELS / "yolov8n-seg-random.onnx"
    if out.exists():
        return out
    from model.zoo import EXPORT_YOLO_SCRIPT, ultralytics_python

    MODELS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": tmp}
        subprocess.run([str(ultralytics_python()), str(EXPORT_YOLO_SCRIPT), "--weights", "yolov8n-seg.yaml",
                        "--out", str(out)], check=True, cwd=tmp, env=env, capture_output=True)
    return out


def random_depth_onnx() -> Path:
    out = MODELS / "depth-anything-v2-small-random.onnx"
    if out.exists():
        return out
    from model.export_depth import export_depth_onnx, random_model

    export_depth_onnx(random_model(seed=0), out, source="random init (benchmark)", check_shapes=((1, 112, 84),))
    return out


# -- inputs ---------------------------------------------------------------------------------------------


def load_frames(clip: str, count: int) -> tuple[np.ndarray, str]:
    path = NAMED_CLIPS.get(clip, Path(clip))
    if path.exists():
        frames = decode_video(path, DecodeLimits(max_frames=count, max_duration_s=3600, max_side=1280)).frames
        return frames[:count], str(path)
    print(f"({path} not found: using random 720x1280 frames)")
    return np.random.default_rng(0).integers(0, 256, (count, 1280, 720, 3), dtype=np.uint8), "random frames"


def synthetic_track(frames: np.ndarray) -> Track:
    """A walker-shaped box (height 70% of the frame, width 40% of its height) drifting sideways, with an
    elliptical silhouette: depth cost depends on the crop size, not on what is in it."""
    count, height, width = frames.shape[:3]
    box_h = 0.7 * height
    box_w = min(0.4 * box_h, 0.8 * width)
    y1 = 0.15 * height
    boxes, masks = [], np.zeros((count, height, width), bool)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        x1 = (width - box_w) * (0.2 + 0.6 * i / max(count - 1, 1))
        boxes.append((x1, y1, x1 + box_w, y1 + box_h))
        cx, cy = x1 + box_w / 2, y1 + box_h / 2
        masks[i] = ((xx - cx) / (box_w / 2)) ** 2 + ((yy - cy) / (box_h / 2)) ** 2 <= 1
    positions = np.arange(count)
    return Track(1, positions, positions, np.asarray(boxes, np.float32), masks)


# -- stages ---------------------------------------------------------------------------------------------


def ours_yolo(path: Path, frames: np.ndarray, imgsz: int, rect: bool) -> Row:
    segmenter = YoloSegmenter(path, providers="cpu", threads=1, imgsz=imgsz, batch=8, rect=rect)
    wall, cpu = measure(lambda: segmenter.segment(frames), lambda: segmenter.segment(frames[:8]))
    from service.pipeline.segment_yolo import Letterbox

    box = Letterbox.fit(frames.shape[1], frames.shape[2], imgsz, 32, segmenter.rect)
    how = "ORT, batch 8, " + ("rect letterbox" if segmenter.rect else "square letterbox")
    return Row("YOLOv8n-seg", how, f"{box.input_height}x{box.input_width}", len(frames), wall, cpu)


def ours_depth(path: Path, frames: np.ndarray, track: Track, mode: str) -> Row:
    estimator = DepthEstimator(path, providers="cpu", threads=1, input_size=518, mode=mode, batch=4)
    warm = Track(1, track.positions[:1], track.frame_indices[:1], track.boxes[:1], track.masks[:1])

    def run():
        estimator.reset()  # full mode must not be served from the warm-up's cache
        estimator.track_disparity(frames, track)

    wall, cpu = measure(run, lambda: estimator.track_disparity(frames, warm))
    if mode == "crop":
        from service.pipeline.depth import crop_input_size, crop_windows

        _, aspect = crop_windows(track.boxes.astype(float), np.asarray(track.masks), estimator.margin)
        size = crop_input_size(aspect, 518)
    else:
        from service.pipeline.depth import full_frame_input_size

        size = full_frame_input_size(frames.shape[1], frames.shape[2], 518)
    how = "ORT, batch 4, " + ("person crop (box + 10%)" if mode == "crop" else "full frame")
    return Row("Depth Anything V2 S", how, f"{size[0]}x{size[1]}", len(track.positions), wall, cpu)


def naive_yolo(frames: np.ndarray, imgsz: int) -> Row | None:
    from model.zoo import UltralyticsEnvError, ultralytics_python

    try:
        python = ultralytics_python()
    except UltralyticsEnvError as exc:
        print(f"(naive YOLO skipped: {str(exc).splitlines()[0]})")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "frames.npy", frames)
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": tmp,
               "OMP_NUM_THREADS": "1"}
        done = subprocess.run([str(python), "-c", NAIVE_YOLO, str(Path(tmp) / "frames.npy"), str(imgsz)],
                              check=True, capture_output=True, text=True, cwd=tmp, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Row("YOLOv8n-seg", "naive: torch eager, YOLO.predict per frame", f"{imgsz} (auto rect)",
               len(frames), result["wall"], result["cpu"])


def naive_depth(frames: np.ndarray) -> tuple[Row, Row]:
    """transformers' own way, one frame at a time: image processor -> model -> upsample to the frame."""
    import torch
    from transformers import DPTImageProcessor  # what Depth-Anything-V2-Small-hf names

    from model.export_depth import random_model

    torch.set_num_threads(1)
    model = random_model(seed=0)
    # Depth-Anything-V2-Small-hf's preprocessor_config.json: 518 lower bound, multiple of 14, bicubic.
    processor = DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                                            ensure_multiple_of=14, resample=3, do_pad=False)
    network = {"wall": 0.0, "cpu": 0.0}
    shape = []

    def one(frame: np.ndarray) -> np.ndarray:
        inputs = processor(images=frame, return_tensors="pt")
        shape[:] = inputs["pixel_values"].shape[2:]
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            depth = model(**inputs).predicted_depth
        network["wall"] += time.perf_counter() - wall
        network["cpu"] += time.process_time() - cpu
        with torch.inference_mode():
            return torch.nn.functional.interpolate(depth[:, None], size=frame.shape[:2], mode="bicubic",
                                                   align_corners=False)[0, 0].numpy()

    one(frames[0])
    network.update(wall=0.0, cpu=0.0)
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        one(frame)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = f"{shape[0]}x{shape[1]}"
    return (Row("Depth Anything V2 S", "naive: torch eager per frame, processor + model + upsample",
                size, len(frames), wall, cpu),
            Row("Depth Anything V2 S", "  of which the network alone (torch eager)", size, len(frames),
                network["wall"], network["cpu"]))


# -- report ---------------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print(f"\n{'stage':21} {'how':58} {'input HxW':>13} {'frames':>6} {'ms/frame wall':>14} {'ms/frame CPU':>13}")
    for r in rows:
        print(f"{r.stage:21} {r.how:58} {r.network_input:>13} {r.frames:>6} {r.wall_ms:>14.1f} {r.cpu_ms:>13.1f}")


def ratio_line(label: str, naive: Row | None, ours: Row | None) -> dict | None:
    if naive is None or ours is None:
        return None
    wall, cpu = naive.wall_ms / ours.wall_ms, naive.cpu_ms / ours.cpu_ms
    print(f"  {label:64} x{cpu:5.2f} CPU   x{wall:5.2f} wall")
    return {"comparison": label, "ratio_cpu": cpu, "ratio_wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="720p", help="720p | casia | a video path")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    print("NOTE: randomly initialised weights (YOLOv8n-seg, Depth Anything V2 Small): only speed is meaningful.")
    frames, source = load_frames(args.clip, args.frames)
    print(f"clip: {source}, {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} (w x h); "
          f"CPU, 1 thread everywhere (ORT intra-op 1, torch 1, OpenCV 1)")
    yolo_path, depth_path = random_yolo_onnx(), random_depth_onnx()
    track = synthetic_track(frames)

    rows: dict[str, Row | None] = {}
    rows["yolo640"] = ours_yolo(yolo_path, frames, 640, rect=True)
    rows["yolo640sq"] = ours_yolo(yolo_path, frames, 640, rect=False)
    rows["yolo320"] = ours_yolo(yolo_path, frames, 320, rect=True)
    rows["depth_crop"] = ours_depth(depth_path, frames, track, "crop")
    rows["depth_full"] = ours_depth(depth_path, frames, track, "full")
    if not args.skip_naive:
        rows["naive_yolo"] = naive_yolo(frames, 640)
        rows["naive_depth"], rows["naive_depth_net"] = naive_depth(frames)
    present = [r for r in rows.values() if r is not None]
    print_table(present)

    ratios = []
    if not args.skip_naive:
        print("\nratios naive / ours (> 1: ours faster):")
        g = rows.get
        ratios = [
            ratio_line("YOLO: torch predict 640 per frame / ORT 640 rect batched", g("naive_yolo"), g("yolo640")),
            ratio_line("YOLO: torch predict 640 per frame / ORT 320 rect batched", g("naive_yolo"), g("yolo320")),
            ratio_line("depth: torch full-frame per frame / ORT full-frame batched", g("naive_depth"), g("depth_full")),
            ratio_line("depth: torch full-frame per frame / ORT person crop batched", g("naive_depth"), g("depth_crop")),
            ratio_line("depth network only: torch full frame / ORT full frame (incl. pre/post)",
                       g("naive_depth_net"), g("depth_full")),
        ]
        if all(rows.get(k) for k in ("naive_yolo", "naive_depth", "yolo640", "depth_crop")):
            naive_total = rows["naive_yolo"].cpu_ms + rows["naive_depth"].cpu_ms
            ours_total = rows["yolo640"].cpu_ms + rows["depth_crop"].cpu_ms
            naive_wall = rows["naive_yolo"].wall_ms + rows["naive_depth"].wall_ms
            ours_wall = rows["yolo640"].wall_ms + rows["depth_crop"].wall_ms
            print(f"  {'both networks, one person: naive / ours (YOLO 640 + depth crop)':64} "
                  f"x{naive_total / ours_total:5.2f} CPU   x{naive_wall / ours_wall:5.2f} wall "
                  f"({naive_total:.0f} vs {ours_total:.0f} ms CPU per frame)")
            ratios.append({"comparison": "both networks", "ratio_cpu": naive_total / ours_total,
                           "ratio_wall": naive_wall / ours_wall})
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"weights": "random (speed only)", "clip": source, "frames": len(frames),
              "frame_size": [int(frames.shape[2]), int(frames.shape[1])], "python": sys.version.split()[0],
              "rows": [{**asdict(r), "wall_ms_per_frame": r.wall_ms, "cpu_ms_per_frame": r.cpu_ms} for r in present],
              "ratios": [r for r in ratios if r]}
    (OUT / "pipeline_models.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {OUT / 'pipeline_models.json'}")


if __name__ == "__main__":
    main()

"""Per-track disparity maps from Depth Anything V2 (Small) on ONNX Runtime (paper §3.2).

What comes out of `track_disparity` for each frame of a track: a frame-sized float32 map that is
zero outside the person's silhouette and, inside it, the person's disparity min-max normalised to
[0, 1], so near = bright (1) and far = dark (0).

Disparity, not depth. Depth Anything V2's relative models output *relative inverse depth* (an
affine-invariant disparity: larger = nearer; the head ends in a ReLU, values >= 0). The paper writes
q = 1/d for a depth d; the network output already *is* such a q, so it is used as is. Inverting it
again would produce depth (near = dark), the opposite of what the paper feeds the network.

Two ways to run the network (`mode`):
- "crop" (default): on a crop around the person (box plus `margin`), the crop's longer side at
  `input_size`. The person fills the input, so each pixel of the silhouette gets more network
  resolution than in a full frame, and a 518x266 crop costs ~1/3 of a 518x924 full frame. All crops
  of a track share one input size (the track's median crop aspect ratio), so they run in batches.
- "full": on the whole frame, shorter side at `input_size` (Depth Anything's own preprocessing), as
  the paper does. Results are cached per frame position, so several tracks in one clip share the
  work. A cache belongs to one frames array (one clip) and is dropped when that array is freed;
  concurrent clips on one estimator each get their own; `reset()` drops them all.

Preprocessing as Depth Anything's reference: RGB in [0, 1], bicubic resize, ImageNet mean/std, both
sides multiples of the ViT patch size (14). The output is resized back (bilinear) to the crop or
frame it came from and placed at its frame coordinates.
"""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from service.pipeline.config import DEPTH_INPUT, DEPTH_INPUT_SIZE, DepthMode, require_model
from service.pipeline.types import Track
from service.runtime import make_session

PATCH_SIZE = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Key under which model/export_depth.py stores DepthModelInfo-like JSON in the ONNX metadata.
METADATA_KEY = "gaitid_depth"


class DepthModelError(ValueError):
    """The ONNX file is not a depth model this estimator understands."""


def multiple_of_patch(value: float, minimum: int = PATCH_SIZE) -> int:
    """Nearest multiple of 14, but never below `minimum` (then the next multiple up)."""
    value = float(value)
    rounded = round(value / PATCH_SIZE) * PATCH_SIZE
    if rounded < minimum:
        rounded = math.ceil(value / PATCH_SIZE) * PATCH_SIZE
    return max(rounded, PATCH_SIZE)


def full_frame_input_size(height: int, width: int, input_size: int) -> tuple[int, int]:
    """Depth Anything's 'lower_bound' resize: the shorter side becomes input_size (multiples of 14)."""
    scale = max(input_size / height, input_size / width)
    return multiple_of_patch(height * scale, input_size), multiple_of_patch(width * scale, input_size)


def crop_input_size(aspect: float, input_size: int) -> tuple[int, int]:
    """(height, width) for crops of aspect width/height: the longer side is input_size."""
    if aspect <= 1.0:
        return input_size, multiple_of_patch(input_size * aspect)
    return multiple_of_patch(input_size / aspect), input_size


def normalise_in_mask(disparity: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Min-max normalise `disparity` to [0, 1] over the pixels of `mask`; zero elsewhere.

    A mask whose disparity is constant gets 1.0 (everything is "as near as the nearest point"):
    zero would make the person vanish from the depth channel, indistinguishable from background.
    """
    out = np.zeros(disparity.shape, np.float32)
    values = disparity[mask]
    if values.size == 0:
        return out
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 1e-12 * max(abs(high), 1.0):
        out[mask] = 1.0
    else:
        out[mask] = (values - low) / span
    return out


def preprocess(images: list[np.ndarray], height: int, width: int,
               mean: np.ndarray = IMAGENET_MEAN, std: np.ndarray = IMAGENET_STD) -> np.ndarray:
    """RGB uint8 images -> (B, 3, height, width) float32: [0, 1], bicubic resize, mean/std."""
    batch = np.empty((len(images), height, width, 3), np.float32)
    for target, image in zip(batch, images):
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
        target[...] = image
    batch *= 1.0 / 255.0
    batch -= mean
    batch /= std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class CropWindow:
    """An integer frame rectangle [x0, x0 + width) x [y0, y0 + height); it may extend past the frame."""

    x0: int
    y0: int
    width: int
    height: int

    def cut(self, frame: np.ndarray) -> np.ndarray:
        """The window's pixels; parts outside the frame repeat the nearest edge pixel."""
        frame_h, frame_w = frame.shape[:2]
        left, top = max(self.x0, 0), max(self.y0, 0)
        right, bottom = min(self.x0 + self.width, frame_w), min(self.y0 + self.height, frame_h)
        inside = frame[top:bottom, left:right]
        pads = (top - self.y0, self.y0 + self.height - bottom, left - self.x0, self.x0 + self.width - right)
        if any(pads):
            inside = cv2.copyMakeBorder(inside, *pads, borderType=cv2.BORDER_REPLICATE)
        return inside

    def inside(self, frame_height: int, frame_width: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """(frame rows, frame cols) of the window's part inside the frame, and the same pixels as
        (rows, cols) of an array covering the whole window."""
        left, top = max(self.x0, 0), max(self.y0, 0)
        right, bottom = min(self.x0 + self.width, frame_width), min(self.y0 + self.height, frame_height)
        right, bottom = max(right, left), max(bottom, top)
        return ((slice(top, bottom), slice(left, right)),
                (slice(top - self.y0, bottom - self.y0), slice(left - self.x0, right - self.x0)))


def crop_windows(boxes: np.ndarray, masks: np.ndarray, margin: float, aspect: float | None = None
                 ) -> tuple[list[CropWindow | None], float]:
    """One window per frame around the person (box united with the mask's extent, plus `margin` of its
    size on each side), all of the same aspect ratio (width/height; the track's median unless given).
    Frames with nothing to crop get None."""
    rects = []
    for box, mask in zip(boxes, masks):
        rect = _person_rect(box, mask)
        if rect is None:
            rects.append(None)
            continue
        x1, y1, x2, y2 = rect
        pad_x, pad_y = margin * (x2 - x1), margin * (y2 - y1)
        rects.append((x1 - pad_x, y1 - pad_y, x2 + pad_x, y2 + pad_y))
    present = [r for r in rects if r is not None]
    if aspect is None:
        aspect = float(np.median([(r[2] - r[0]) / (r[3] - r[1]) for r in present])) if present else 1.0
    windows: list[CropWindow | None] = []
    for rect in rects:
        if rect is None:
            windows.append(None)
            continue
        x1, y1, x2, y2 = rect
        height = max(y2 - y1, (x2 - x1) / aspect)  # grow the short dimension to the common aspect
        width = height * aspect
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        h, w = max(1, math.ceil(height)), max(1, math.ceil(width))
        windows.append(CropWindow(math.floor(cx - w / 2), math.floor(cy - h / 2), w, h))
    return windows, aspect


def _person_rect(box: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Union of the tracker's box and the silhouette's extent (the crop must hold every mask pixel)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = min(x1, float(cols[0])), min(y1, float(rows[0]))
    x2, y2 = max(x2, float(cols[-1] + 1)), max(y2, float(rows[-1] + 1))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return x1, y1, x2, y2


class DepthEstimator:
    """Depth Anything V2 on ONNX Runtime -> masked, normalised per-track disparity."""

    def __init__(
        self,
        path: str | Path,
        providers: str | list[str] = "auto",
        threads: int = 1,
        input_size: int = DEPTH_INPUT_SIZE,
        mode: DepthMode = DEPTH_INPUT,
        *,
        batch: int = 4,
        margin: float = 0.1,
    ):
        self.path = require_model(Path(path), "depth")
        if mode not in ("crop", "full"):
            raise ValueError(f"mode must be 'crop' or 'full', got {mode!r}")
        if input_size < PATCH_SIZE:
            raise ValueError(f"input_size must be at least {PATCH_SIZE}, got {input_size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.session = make_session(self.path, providers, threads)
        self.input_name, self.output_name, self.fixed_size = _read_io(self.session, self.path)
        self.mean, self.std = _normalisation(self.session)
        self.input_size = multiple_of_patch(input_size, input_size)
        self.mode: DepthMode = mode
        self.batch = max(1, int(batch))
        self.margin = float(margin)
        self.timings: dict[str, float] = {}  # seconds per step, accumulated since the last reset()
        # Full mode: id(frames) -> (weak reference to that frames array, {position: raw network output}).
        self._clip_caches: dict[int, tuple[weakref.ref, dict[int, np.ndarray]]] = {}
        self._cache_lock = threading.RLock()  # re-entrant: a weakref callback may fire while it is held

    def reset(self) -> None:
        """Forget all cached full-frame results and timings."""
        with self._cache_lock:
            self._clip_caches.clear()
        self.timings = {}

    def _cache_for(self, frames: np.ndarray) -> dict[int, np.ndarray]:
        """The full-frame cache of this frames array; it disappears with the array."""
        key = id(frames)
        with self._cache_lock:
            entry = self._clip_caches.get(key)
            if entry is not None and entry[0]() is frames:
                return entry[1]
            cache: dict[int, np.ndarray] = {}
            self._clip_caches[key] = (weakref.ref(frames, lambda ref, key=key: self._forget(key, ref)), cache)
            return cache

    def _forget(self, key: int, ref: weakref.ref) -> None:
        with self._cache_lock:
            entry = self._clip_caches.get(key)
            if entry is not None and entry[0] is ref:
                del self._clip_caches[key]

    def track_disparity(self, frames: np.ndarray, track: Track) -> np.ndarray:
        """frames (T, H, W, 3) uint8 RGB of the clip; returns (len(track.positions), H, W) float32."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        positions = np.asarray(track.positions, np.int64)
        if track.masks.shape[1:] != frames.shape[1:3]:
            raise ValueError(f"track masks {track.masks.shape[1:]} do not match frames {frames.shape[1:3]}")
        if len(positions) != len(track.masks) or len(positions) != len(track.boxes):
            raise ValueError("track positions, boxes and masks must have the same length")
        if len(positions) and (positions.min() < 0 or positions.max() >= len(frames)):
            raise ValueError(f"track positions must lie in [0, {len(frames)}), got {positions.min()}..{positions.max()}")
        masks = np.asarray(track.masks, dtype=bool)  # frame-sized: depth is computed on full-size frames
        if self.mode == "full":
            pieces = self._full_frame_disparity(frames, positions, masks)
        else:
            pieces = self._crop_disparity(frames, positions, track.boxes, masks)
        out = np.zeros(masks.shape, np.float32)
        # Normalised piece by piece: no second frame-sized float array per frame is ever held.
        for i, region, disparity in pieces:
            started = time.perf_counter()
            out[i][region] = normalise_in_mask(disparity, masks[i][region])
            self._add_time("normalise", time.perf_counter() - started)
        return out

    # -- full frame -------------------------------------------------------------------------------

    def _full_frame_disparity(self, frames: np.ndarray, positions: np.ndarray, masks: np.ndarray
                              ) -> Iterator[tuple[int, tuple[slice, slice], np.ndarray]]:
        """Yields (track index, frame region, disparity of that region) for frames with a silhouette."""
        cache = self._cache_for(frames)
        height, width = frames.shape[1:3]
        size = self.fixed_size or full_frame_input_size(height, width, self.input_size)
        needed = sorted({int(p) for p, m in zip(positions, masks) if m.any()} - set(cache))
        for start in range(0, len(needed), self.batch):
            chunk = needed[start:start + self.batch]
            for position, output in zip(chunk, self._infer([frames[p] for p in chunk], size)):
                cache[position] = output
        whole = (slice(0, height), slice(0, width))
        for i, (position, mask) in enumerate(zip(positions, masks)):
            if mask.any():
                started = time.perf_counter()
                disparity = cv2.resize(cache[int(position)], (width, height), interpolation=cv2.INTER_LINEAR)
                self._add_time("map_back", time.perf_counter() - started)
                yield i, whole, disparity

    # -- person crops -----------------------------------------------------------------------------

    def _crop_disparity(self, frames: np.ndarray, positions: np.ndarray, boxes: np.ndarray, masks: np.ndarray
                        ) -> Iterator[tuple[int, tuple[slice, slice], np.ndarray]]:
        """Yields (track index, frame region, disparity of that region): the crop window's part inside
        the frame, which holds the whole silhouette."""
        fixed_aspect = None if self.fixed_size is None else self.fixed_size[1] / self.fixed_size[0]
        windows, aspect = crop_windows(np.asarray(boxes, np.float64), masks, self.margin, fixed_aspect)
        size = self.fixed_size or crop_input_size(aspect, self.input_size)
        height, width = frames.shape[1:3]
        todo = [i for i, w in enumerate(windows) if w is not None]
        for start in range(0, len(todo), self.batch):
            chunk = todo[start:start + self.batch]
            started = time.perf_counter()
            crops = [windows[i].cut(frames[positions[i]]) for i in chunk]
            self._add_time("crop", time.perf_counter() - started)
            for i, output in zip(chunk, self._infer(crops, size)):
                window = windows[i]
                started = time.perf_counter()
                resized = cv2.resize(output, (window.width, window.height), interpolation=cv2.INTER_LINEAR)
                frame_region, window_region = window.inside(height, width)
                self._add_time("map_back", time.perf_counter() - started)
                yield i, frame_region, resized[window_region]

    # -- network ----------------------------------------------------------------------------------

    def _infer(self, images: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """images of any size -> (B, h, w) raw disparity at the network input size `size`."""
        started = time.perf_counter()
        batch = preprocess(images, size[0], size[1], self.mean, self.std)
        begun = time.perf_counter()
        (output,) = self.session.run([self.output_name], {self.input_name: batch})
        self._add_time("preprocess", begun - started)
        self._add_time("inference", time.perf_counter() - begun)
        if output.ndim == 4:  # (B, 1, h, w) exports
            output = output[:, 0]
        return output.astype(np.float32, copy=False)

    def _add_time(self, step: str, seconds: float) -> None:
        self.timings[step] = self.timings.get(step, 0.0) + seconds


def _read_io(session, path: Path) -> tuple[str, str, tuple[int, int] | None]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) < 1:
        raise DepthModelError(f"{path.name} is not a depth model: expected one (B, 3, H, W) input")
    shape = inputs[0].shape
    fixed = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    if fixed is not None and (fixed[0] % PATCH_SIZE or fixed[1] % PATCH_SIZE):
        raise DepthModelError(f"{path.name} has a fixed input {fixed}, not multiples of {PATCH_SIZE}")
    return inputs[0].name, outputs[0].name, fixed


def _normalisation(session) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std recorded by model/export_depth.py, else ImageNet's (what Depth Anything uses)."""
    meta = session.get_modelmeta().custom_metadata_map
    info = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}
    if info.get("output", "disparity") != "disparity":
        raise DepthModelError(f"depth model output is {info['output']!r}; this estimator expects disparity")
    mean = np.asarray(info.get("image_mean", IMAGENET_MEAN), np.float32)
    std = np.asarray(info.get("image_std", IMAGENET_STD), np.float32)
    return mean, std

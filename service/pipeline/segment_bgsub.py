"""Person masks from background subtraction (OpenCV MOG2/KNN): the fixed-camera, no-weights path.

This is the offline fallback when no YOLO-seg model is installed, and the classic way gait datasets
such as CASIA-B were segmented. It only suits a static camera: everything that moves is foreground.

Everything runs at a working resolution (longer side `work_side`, 480 px): per-pixel Gaussian
mixtures cost ~10x more at 720p than at 320x240 for no gain in a 64-px-tall aligned silhouette. The
pipeline has the decoder deliver frames at that size (`input_side`); frames of any other size are
resized here. Masks stay at the working resolution, cut to each person (`types.Mask`); boxes are
in the frame coordinates the caller names, and alignment scales up only the person's crop.

How a clip is segmented:
1. warm-up: the background model learns from an empty-scene clip when one is given, then from the
   clip itself (a walker covers each pixel for a few frames only, so the background stays the
   dominant mode per pixel). Both, because an empty-scene clip recorded in another session differs
   in exposure and white balance (CASIA-B's 001 background vs the 002 walk differ by ~6 grey levels,
   which alone turns the wall into foreground), while the clip alone has no view of the floor where
   someone stands still;
2. every frame is then classified against that model with a slow learning rate (lighting drifts);
   pixels the model flags as shadow are background;
3. morphology: opening removes speckle, closing fills small holes in clothes that match the wall;
4. connected components, found on a dilated copy so that a person split into pieces (head and
   body, a leg) stays one blob; the mask itself keeps the undilated pixels;
5. blobs the size and shape of a standing person become detections.
Each step runs only on the rectangle around its input's foreground, widened by what its structuring
elements can reach: outside it every result is zero anyway, so the masks are the same as on the
whole frame (the foreground is typically a few percent of a frame).

Where the background model runs (`tile_side`): MOG2 and KNN model each pixel from that pixel's
history alone, so a frame cut into tiles, each tile with its own subtractor, gives exactly the masks
of one subtractor on the whole frame (tested). The model at the working resolution costs more per
frame than decoding a 720p frame; most of a frame is still background. So a locator, the same
model on a copy 4x smaller each way (1/16 of the pixels), first marks per frame where anything
moves; at the working resolution only the tiles within `locator_margin` of that are classified,
and only tiles some frame needs are warmed up at all. The one difference from classifying whole
frames: where nothing moves near a tile, it follows the slow background update (`learning_rate`:
exposure drift) on every second frame only, one update standing for two. Without those updates the
silhouettes of CASIA-B's 002 walk moved enough to cost the reference model 0.035 of similarity;
with them the masks agree with the whole-frame model's to a mean IoU of 0.998-1.000.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from service.pipeline.decode import scaled_size
from service.pipeline.types import FrameDetections, Mask, Masks

_SHADOW_VALUE = 127  # what MOG2/KNN write for shadow pixels (255 = foreground)
# The locator drops single coarse blocks (noise; a person spans several) before looking around what moves.
_LOCATOR_SPECKLE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass(frozen=True)
class BgSubConfig:
    method: Literal["mog2", "knn"] = "mog2"
    history: int = 500
    # MOG2: squared Mahalanobis distance; KNN: squared distance. OpenCV's defaults are 16 / 400.
    threshold: float = 16.0
    learning_rate: float = 0.002  # after warm-up; small, so a person pausing does not melt away
    # A pixel darker than the background by a factor in [shadow_threshold, 1) with the same colour is
    # a shadow. OpenCV's 0.5 also calls light clothing in front of a light wall "shadow" and cuts the
    # torso away; 0.8 keeps it. Chosen on CASIA-B 002-004 (mean IoU to the CASIA-B silhouettes:
    # 0.5 -> 0.70, 0.8 -> 0.89, 0.85 -> 0.85, with two warm-up passes).
    shadow_threshold: float = 0.8
    # MOG2: the heaviest Gaussians that together carry this share of a pixel's history are background.
    # OpenCV's 0.9 also accepts a second mode holding 10-50% of the history, which is what a slow
    # walker leaves when the model learns from the clip itself; at 0.7 the walker stays foreground.
    # On CASIA-B 002-004 without the empty scene: mean IoU 0.828/0.902/0.904 (0.9) -> 0.841/0.908/0.908.
    background_ratio: float = 0.7
    warmup_passes: int = 1  # a second pass bought nothing on CASIA-B (mean IoU +0.002) for 30% more time
    warmup_frames: int = 200  # at most this many frames of each warm-up source, spread over it
    min_person_height: int = 40  # pixels of the frame coordinates; shorter blobs are not people
    # Longer side of the working resolution (see the module docstring).
    work_side: int = 480
    min_aspect: float = 0.8  # height / width: walkers are taller than wide (a car is not)
    min_fill: float = 0.15  # foreground fraction of the blob's box: rejects sparse noise clusters
    # Structuring sizes as a fraction of frame height, so 240p and 1080p behave alike.
    open_fraction: float = 0.01
    close_fraction: float = 0.02
    group_fraction: float = 0.04
    # Tiles (working pixels a side) that the background model classifies only where the locator saw
    # motion; None: every frame whole (see the module docstring).
    tile_side: int | None = 60
    locator_factor: int = 4  # the locator works on blocks of this many working pixels a side
    # Tiles this far (a fraction of the frame height) from the locator's foreground are classified
    # too: a thin limb the coarse copy averages away still lies within it of the body.
    locator_margin: float = 0.06
    # A needed tile learns from every this-many-th frame where nothing moves near it (one update
    # standing for that many at `learning_rate`): the slow drift the whole-frame model follows.
    idle_update_every: int = 2


class BackgroundSubtractionSegmenter:
    """`segment(frames)` -> one `FrameDetections` per frame, like the YOLO segmenter. Thread-safe."""

    def __init__(self, config: BgSubConfig = BgSubConfig(), background: np.ndarray | None = None):
        """background: (N, H, W, 3) uint8 RGB frames of the empty scene, or None."""
        self.config = config
        self.background = background
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}  # working size -> resized warm-up frames
        self._lock = threading.Lock()

    @property
    def input_side(self) -> int:
        """The longer side of the frames this segmenter works on: decode straight to it."""
        return self.config.work_side

    def segment(self, frames: np.ndarray, size: tuple[int, int] | None = None) -> list[FrameDetections]:
        """frames: (T, h, w, 3) uint8 RGB. size: (width, height) of the frame coordinates the
        detections are given in; None: the frames' own. Frames larger than the working resolution
        of `size` are scaled down first."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
        width, height = size or (frames.shape[2], frames.shape[1])
        work_w, work_h = scaled_size(width, height, self.config.work_side)
        if frames.shape[1] < work_h and frames.shape[2] < work_w:
            work_w, work_h = frames.shape[2], frames.shape[1]  # the frames are all there is
        small = _resize_frames(frames, (work_w, work_h))
        scale_x, scale_y = work_w / width, work_h / height
        foreground = self._foreground(small)
        kernels = _Kernels.for_height(work_h, self.config)
        min_height = self.config.min_person_height * scale_y
        detections = []
        for moving in foreground:
            top, bottom, left, right = _around(moving, kernels.open.shape[0] // 2 + 1)
            if bottom > top:  # in place: `moving` is this call's own buffer
                moving[top:bottom, left:right] = cv2.morphologyEx(moving[top:bottom, left:right], cv2.MORPH_OPEN,
                                                                  kernels.open)
            top, bottom, left, right = kernels.region(moving)
            blobs = []
            if bottom > top:
                closed = cv2.morphologyEx(moving[top:bottom, left:right], cv2.MORPH_CLOSE, kernels.close)
                blobs = self._person_blobs(closed, kernels, min_height)
            masks = [Mask(blob.pixels, top + blob.top, left + blob.left, (width, height), scale_x, scale_y)
                     for blob in blobs]
            detections.append(_detections(masks, [blob.score for blob in blobs], (width, height)))
        return detections

    def _foreground(self, frames: np.ndarray) -> np.ndarray:
        """(T, h, w) uint8: 255 where the model calls a pixel foreground (shadows are background), 0
        elsewhere, including the tiles the locator left out."""
        count, height, width = frames.shape[:3]
        background = self._background_at(width, height)
        own = _spread(len(frames), self.config.warmup_frames)
        if self.config.tile_side is None:
            tiles, active = [(0, height, 0, width)], np.ones((count, 1), bool)
        else:
            tiles = _tiles(height, width, self.config.tile_side)
            active = self._locate(frames, own, tiles)
        foreground = np.zeros((count, height, width), np.uint8)
        rate, every = self.config.learning_rate, max(1, self.config.idle_update_every)
        idle_rate = 1.0 - (1.0 - rate) ** every  # `every` updates at `rate` in one
        for k, (top, bottom, left, right) in enumerate(tiles):
            if not active[:, k].any():
                continue  # nothing ever moves near this tile: no model at all
            subtractor = self._warmed_up_subtractor(background[:, top:bottom, left:right],
                                                    frames[own, top:bottom, left:right])
            for t in range(count):
                tile = frames[t, top:bottom, left:right]
                if active[t, k]:
                    foreground[t, top:bottom, left:right] = subtractor.apply(tile, learningRate=rate)
                elif t % every == every - 1:  # keep up with slow changes (exposure) where nothing moves
                    subtractor.apply(tile, learningRate=idle_rate)
        for moving in foreground:
            cv2.threshold(moving, _SHADOW_VALUE, 255, cv2.THRESH_BINARY, dst=moving)
        return foreground

    def _locate(self, frames: np.ndarray, own: np.ndarray, tiles: list[tuple[int, int, int, int]]) -> np.ndarray:
        """(T, tiles) bool: the tiles within `locator_margin` of what the coarse model sees moving."""
        cfg = self.config
        height, width = frames.shape[1:3]
        factor = cfg.locator_factor
        coarse_w, coarse_h = max(1, width // factor), max(1, height // factor)
        # Bilinear at a whole factor (the last few rows and columns dropped) averages the 2x2 pixels
        # at the centre of each block: enough to see motion, ~6x faster than an area shrink.
        coarse = _resize_frames(frames[:, :coarse_h * factor, :coarse_w * factor], (coarse_w, coarse_h),
                                cv2.INTER_LINEAR)
        subtractor = self._warmed_up_subtractor(self._background_at(coarse_w, coarse_h), coarse[own])
        reach = max(1, math.ceil(cfg.locator_margin * coarse_h))
        near = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
        # Each tile's extent on the coarse grid, rounded outwards, as integral-image corners.
        boxes = np.array(tiles, np.float64) / factor
        y0 = np.clip(np.floor(boxes[:, 0]), 0, coarse_h).astype(np.intp)
        y1 = np.clip(np.ceil(boxes[:, 1]), 0, coarse_h).astype(np.intp)
        x0 = np.clip(np.floor(boxes[:, 2]), 0, coarse_w).astype(np.intp)
        x1 = np.clip(np.ceil(boxes[:, 3]), 0, coarse_w).astype(np.intp)
        active = np.zeros((len(frames), len(tiles)), bool)
        for t, frame in enumerate(coarse):
            moving = (subtractor.apply(frame, learningRate=cfg.learning_rate) > _SHADOW_VALUE).view(np.uint8)
            moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, _LOCATOR_SPECKLE)
            if not moving.any():
                continue
            sums = cv2.integral(cv2.dilate(moving, near))
            active[t] = (sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0]) > 0
        return active

    def _warmed_up_subtractor(self, background: np.ndarray, own: np.ndarray) -> cv2.BackgroundSubtractor:
        """A subtractor that has learnt `background` (empty-scene frames) then `own` (the clip's)."""
        cfg = self.config
        if cfg.method == "mog2":
            subtractor = cv2.createBackgroundSubtractorMOG2(cfg.history, cfg.threshold, detectShadows=True)
            subtractor.setBackgroundRatio(cfg.background_ratio)
        elif cfg.method == "knn":
            subtractor = cv2.createBackgroundSubtractorKNN(cfg.history, cfg.threshold, detectShadows=True)
        else:
            raise ValueError(f"unknown background subtraction method {cfg.method!r}")
        subtractor.setShadowThreshold(cfg.shadow_threshold)
        for _ in range(max(1, cfg.warmup_passes)):
            # Empty scene first, the clip last: the model ends closest to this clip's exposure.
            for frame in background:
                subtractor.apply(frame, learningRate=-1)  # -1: OpenCV's 1/history schedule
            for frame in own:
                subtractor.apply(frame, learningRate=-1)
        return subtractor

    def _background_at(self, width: int, height: int) -> np.ndarray:
        """The empty-scene warm-up frames at the working size, resized once per size."""
        if self.background is None or not len(self.background):
            return np.zeros((0, height, width, 3), np.uint8)
        with self._lock:
            resized = self._backgrounds.get((width, height))
            if resized is None:
                picked = self.background[_spread(len(self.background), self.config.warmup_frames)]
                resized = self._backgrounds[(width, height)] = _resize_frames(picked, (width, height))
            return resized

    def _person_blobs(self, foreground: np.ndarray, kernels: _Kernels, min_height: float) -> list[_Blob]:
        grouped = cv2.dilate(foreground, kernels.group)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
        blobs = []
        for label in range(1, count):  # 0 is the background component
            x, y, w, h = (int(v) for v in stats[label, :4])  # the grouped blob's box
            if h < min_height:
                continue  # cheap early exit: the grouped blob is only larger than the person in it
            mask = (labels[y:y + h, x:x + w] == label) & (foreground[y:y + h, x:x + w] > 0)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if not len(rows):
                continue
            top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            mask = mask[top:bottom, left:right]
            box_h, box_w = mask.shape
            fill = np.count_nonzero(mask) / float(box_h * box_w)
            if box_h < min_height or box_h < self.config.min_aspect * box_w or fill < self.config.min_fill:
                continue
            # No detector confidence here; the fill ratio is a rough "how solid is this blob".
            blobs.append(_Blob(mask, y + int(top), x + int(left), min(1.0, 0.5 + fill)))
        return blobs


@dataclass(frozen=True)
class _Blob:
    pixels: np.ndarray  # (h, w) bool at the working resolution, cut to the blob
    top: int  # working-resolution row and column of pixels[0, 0]
    left: int
    score: float


def _resize_frames(frames: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Frames resized to size = (width, height) (area-averaged by default); the input itself when unchanged."""
    if size == (frames.shape[2], frames.shape[1]):
        return frames
    out = np.empty((len(frames), size[1], size[0], *frames.shape[3:]), np.uint8)
    for frame, target in zip(frames, out):
        cv2.resize(frame, size, dst=target, interpolation=interpolation)
    return out


def _detections(masks: list[Mask], scores: list[float], size: tuple[int, int]) -> FrameDetections:
    """Person masks -> detections whose boxes are the masks' extents in frame coordinates."""
    if not masks:
        return FrameDetections.empty(size[1], size[0])
    return FrameDetections(np.stack([m.box() for m in masks]).astype(np.float32),
                           np.asarray(scores, np.float32), Masks(masks, size))


@dataclass(frozen=True)
class _Kernels:
    open: np.ndarray
    close: np.ndarray
    group: np.ndarray

    @classmethod
    def for_height(cls, height: int, cfg: BgSubConfig) -> _Kernels:
        def ellipse(fraction: float) -> np.ndarray:
            size = max(1, round(fraction * height)) | 1  # odd, so the kernel has a centre
            return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))

        return cls(ellipse(cfg.open_fraction), ellipse(cfg.close_fraction), ellipse(cfg.group_fraction))

    @property
    def reach(self) -> int:
        """Margin around the opened foreground outside which closing and grouping give zeros, and
        inside which no erosion window of the closing reaches the margin's edge (OpenCV treats pixels
        past an image's edge as not eroding, unlike the zeros really there)."""
        close, group = self.close.shape[0] // 2, self.group.shape[0] // 2
        return max(2 * close, close + group) + 1

    def region(self, foreground: np.ndarray) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the foreground pixels widened by `reach`, inside the frame;
        empty (bottom == top) without foreground. Top and left are even: OpenCV labels components in
        2x2 blocks, so on an even offset they come out numbered as on the whole frame."""
        top, bottom, left, right = _around(foreground, self.reach)
        return top & ~1, bottom, left & ~1, right


def _tiles(height: int, width: int, side: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of a grid of tiles about `side` pixels a side covering the frame."""
    rows, cols = max(1, round(height / side)), max(1, round(width / side))
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [(int(ys[r]), int(ys[r + 1]), int(xs[c]), int(xs[c + 1])) for r in range(rows) for c in range(cols)]


def _around(image: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the nonzero pixels widened by `margin`, inside the image; empty
    (bottom == top) when there are none."""
    x, y, w, h = cv2.boundingRect(image)
    if w == 0 or h == 0:
        return 0, 0, 0, 0
    height, width = image.shape
    return max(0, y - margin), min(height, y + h + margin), max(0, x - margin), min(width, x + w + margin)


def _spread(total: int, count: int) -> np.ndarray:
    if total <= count:
        return np.arange(total)
    return np.round(np.linspace(0, total - 1, count)).astype(np.int64)

"""Person masks from background subtraction (OpenCV MOG2/KNN): the fixed-camera, no-weights path.

This is the offline fallback when no YOLO-seg model is installed, and the classic way gait datasets
such as CASIA-B were segmented. It only suits a static camera: everything that moves is foreground.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from service.pipeline.types import FrameDetections

_SHADOW_VALUE = 127  # what MOG2/KNN write for shadow pixels (255 = foreground)
_MAX_WARMUP_FRAMES = 200


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
    min_person_height: int = 40  # pixels at the input resolution; shorter blobs are not people
    # Subtraction runs on frames scaled so their longer side is at most this; masks are scaled back.
    # Per-pixel Gaussian mixtures cost ~10x more at 720p than at 320x240 for no gain in a 64-px-tall
    # aligned silhouette.
    work_side: int = 480
    min_aspect: float = 0.8  # height / width: walkers are taller than wide (a car is not)
    min_fill: float = 0.15  # foreground fraction of the blob's box: rejects sparse noise clusters
    # Structuring sizes as a fraction of frame height, so 240p and 1080p behave alike.
    open_fraction: float = 0.01
    close_fraction: float = 0.02
    group_fraction: float = 0.04


class BackgroundSubtractionSegmenter:
    """`segment(frames)` -> one `FrameDetections` per frame, like the YOLO segmenter."""

    def __init__(self, config: BgSubConfig = BgSubConfig(), background: np.ndarray | None = None):
        """background: (N, H, W, 3) uint8 RGB frames of the empty scene, or None."""
        self.config = config
        self.background = background

    def segment(self, frames: np.ndarray) -> list[FrameDetections]:
        """frames: (T, H, W, 3) uint8 RGB."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
        height, width = frames.shape[1:3]
        scale = min(1.0, self.config.work_side / max(height, width))
        small = _resize_frames(frames, scale)
        subtractor = self._warmed_up_subtractor(small)
        kernels = _Kernels.for_height(small.shape[1], self.config)
        min_height = self.config.min_person_height * scale
        detections = []
        for frame in small:
            raw = subtractor.apply(frame, learningRate=self.config.learning_rate)
            foreground = clean_foreground(raw, kernels)
            blobs = self._person_blobs(foreground, kernels, min_height)
            detections.append(_to_input_scale(blobs, height, width, scale))
        return detections

    def _warmed_up_subtractor(self, frames: np.ndarray) -> cv2.BackgroundSubtractor:
        cfg = self.config
        if cfg.method == "mog2":
            subtractor = cv2.createBackgroundSubtractorMOG2(cfg.history, cfg.threshold, detectShadows=True)
            subtractor.setBackgroundRatio(cfg.background_ratio)
        elif cfg.method == "knn":
            subtractor = cv2.createBackgroundSubtractorKNN(cfg.history, cfg.threshold, detectShadows=True)
        else:
            raise ValueError(f"unknown background subtraction method {cfg.method!r}")
        subtractor.setShadowThreshold(cfg.shadow_threshold)
        warmup = self._warmup_frames(frames)
        for _ in range(max(1, cfg.warmup_passes)):
            for frame in warmup:
                subtractor.apply(frame, learningRate=-1)  # -1: OpenCV's 1/history schedule
        return subtractor

    def _warmup_frames(self, frames: np.ndarray) -> np.ndarray:
        own = frames[_spread(len(frames), _MAX_WARMUP_FRAMES)]
        background = self.background
        if background is None or not len(background):
            return own
        if background.shape[1:] != frames.shape[1:]:
            background = _resize_frames(background, size=(frames.shape[2], frames.shape[1]))
        # Empty scene first, the clip last: the model ends closest to this clip's exposure.
        return np.concatenate([background[_spread(len(background), _MAX_WARMUP_FRAMES)], own])

    def _person_blobs(self, foreground: np.ndarray, kernels: _Kernels, min_height: float) -> list[_Blob]:
        grouped = cv2.dilate(foreground, kernels.group)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
        blobs = []
        for label in range(1, count):  # 0 is the background component
            if stats[label, cv2.CC_STAT_HEIGHT] < min_height:
                continue  # cheap early exit: the grouped blob is only larger than the person in it
            mask = (labels == label) & (foreground > 0)
            if not mask.any():
                continue
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
            box_h, box_w = bottom - top + 1, right - left + 1
            fill = np.count_nonzero(mask[top:bottom + 1, left:right + 1]) / float(box_h * box_w)
            if box_h < min_height or box_h < self.config.min_aspect * box_w or fill < self.config.min_fill:
                continue
            # No detector confidence here; the fill ratio is a rough "how solid is this blob".
            blobs.append(_Blob(mask, min(1.0, 0.5 + fill)))
        return blobs


@dataclass(frozen=True)
class _Blob:
    mask: np.ndarray  # (h, w) bool at the working scale
    score: float


def _resize_frames(frames: np.ndarray, scale: float = 1.0, size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames scaled by `scale`, or to `size` = (width, height); the input itself when unchanged."""
    height, width = frames.shape[1:3]
    if size is None:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _to_input_scale(blobs: list[_Blob], height: int, width: int, scale: float) -> FrameDetections:
    """Blobs found at the working scale -> detections with full-resolution masks and boxes."""
    if not blobs:
        return FrameDetections.empty(height, width)
    masks = []
    for blob in blobs:
        mask = blob.mask
        if scale < 1.0:
            # Linear upsampling of the 0/255 mask then a mid threshold: smoother edges than nearest.
            mask = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR) > 127
        masks.append(mask)
    boxes = [_mask_box(m) for m in masks]
    keep = [i for i, b in enumerate(boxes) if b is not None]
    if not keep:
        return FrameDetections.empty(height, width)
    return FrameDetections(
        np.asarray([boxes[i] for i in keep], np.float32),
        np.asarray([blobs[i].score for i in keep], np.float32),
        np.stack([masks[i] for i in keep]),
    )


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1  # xyxy, exclusive end


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


def clean_foreground(raw: np.ndarray, kernels: _Kernels) -> np.ndarray:
    """Subtractor output (0 / 127 shadow / 255) -> binary 0/255 mask without speckle or small holes."""
    foreground = np.where(raw > _SHADOW_VALUE, 255, 0).astype(np.uint8)
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernels.open)
    return cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, kernels.close)


def _spread(total: int, count: int) -> np.ndarray:
    if total <= count:
        return np.arange(total)
    return np.round(np.linspace(0, total - 1, count)).astype(np.int64)

"""Data that flows through the clip pipeline (decode -> segment -> track -> depth -> align -> embed).

Arrays, not frameworks: every stage takes and returns these numpy-backed records, so each stage
can be tested on its own and swapped (YOLO vs background subtraction) without touching the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gaitid.contract import ModelInput


@dataclass
class Clip:
    """Decoded RGB frames of one video, after rotation, resolution cap and even sampling."""

    frames: np.ndarray  # (T, H, W, 3) uint8, RGB
    frame_indices: np.ndarray  # (T,) int64, index of each kept frame in the source stream
    fps: float
    source_size: tuple[int, int]  # (width, height) of the stream before any resize, after rotation
    rotation: int = 0  # degrees clockwise applied to honour the stream's display matrix

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[1])


@dataclass
class FrameDetections:
    """Persons found in one frame, in frame coordinates."""

    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    scores: np.ndarray  # (N,) float32
    masks: np.ndarray  # (N, H, W) bool, full-frame masks

    @staticmethod
    def empty(height: int, width: int) -> FrameDetections:
        return FrameDetections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, height, width), bool)
        )


@dataclass
class Track:
    """One person followed across frames. Indices refer to positions in Clip.frames."""

    track_id: int
    positions: np.ndarray  # (T,) int64 positions in Clip.frames
    frame_indices: np.ndarray  # (T,) int64 source-stream frame indices (what the API reports)
    boxes: np.ndarray  # (T, 4) float32 xyxy
    masks: np.ndarray  # (T, H, W) bool


@dataclass
class AlignedSequence:
    """A track after §3.2 alignment: what the embedding network consumes (gaitid.contract)."""

    track_id: int
    silhouettes: np.ndarray  # (T, 64, 44) uint8, 0/255
    depth: np.ndarray | None  # (T, 64, 44) uint8: masked disparity in [0, 1] quantised; None if not computed
    frame_indices: np.ndarray  # (T,) int64
    boxes: np.ndarray  # (T, 4) float32 xyxy in frame coordinates
    timings: dict[str, float] = field(default_factory=dict)

    def model_input(self) -> ModelInput:
        return ModelInput(self.silhouettes, self.depth)

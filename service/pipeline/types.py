"""Data that flows through the clip pipeline (decode -> segment -> track -> depth -> align -> embed).

Arrays, not frameworks: every stage takes and returns these numpy-backed records, so each stage
can be tested on its own and swapped (YOLO vs background subtraction) without touching the others.

Coordinates: boxes and masks are in the clip's frame coordinates (`Clip.size`: the upright video
after the `max_side` cap), whatever resolution a stage worked at. A person's mask is kept only
around the person (`Mask`), often at the segmenter's working resolution, and scaled to frame
coordinates only where a step needs it (alignment's crop, depth): a frame-sized mask per person and
frame is never stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gaitid.contract import ModelInput


@dataclass
class Clip:
    """Decoded RGB frames of one video, after rotation, resolution cap and even sampling.

    `frames` may hold fewer pixels than the frame coordinates (`size`) when the pipeline decoded
    straight to its segmenter's working resolution; `scale` says by how much."""

    frames: np.ndarray  # (T, h, w, 3) uint8, RGB
    frame_indices: np.ndarray  # (T,) int64, index of each kept frame in the source stream
    fps: float
    source_size: tuple[int, int]  # (width, height) of the stream before any resize, after rotation
    rotation: int = 0  # degrees clockwise applied to honour the stream's display matrix
    coordinate_size: tuple[int, int] | None = None  # (width, height) of frame coordinates; None: the frames'

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height) of `frames`."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame coordinates that boxes and masks refer to."""
        return self.coordinate_size or self.pixel_size

    @property
    def sampled_from(self) -> int | None:
        """Frames in the source when the decoder thinned them to `frames`, else None. Sampling keeps
        the first and the last frame (decode.even_sample), so the source had last index + 1."""
        if not len(self.frame_indices):
            return None
        span = int(self.frame_indices[-1]) + 1
        return span if span > len(self.frame_indices) else None


Roi = tuple[float, float, float, float]


@dataclass(frozen=True)
class ClipOverrides:
    """How one clip is processed where it differs from the server's settings: a camera's settings,
    or a request's (service.cameras builds them). None everywhere: the server's defaults."""

    rotation: int | None = None  # degrees clockwise instead of the stream's display matrix
    background_clip: Path | None = None  # empty-scene clip for background subtraction, instead of the server's
    roi: Roi | None = None  # [x1, y1, x2, y2] fractions of the upright frame: people whose box centre is outside are ignored

    def __post_init__(self) -> None:
        if self.rotation is not None and self.rotation not in (0, 90, 180, 270):
            raise ValueError(f"rotation must be 0, 90, 180 or 270, got {self.rotation}")
        if self.roi is not None:
            x1, y1, x2, y2 = self.roi
            if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
                raise ValueError(f"roi must be [x1, y1, x2, y2] fractions with x1 < x2 and y1 < y2, got {self.roi}")

    @property
    def is_default(self) -> bool:
        return self == ClipOverrides()

    def fingerprint(self) -> str:
        """A stable text of what changes the result ('' for the defaults): part of a processed clip's id."""
        if self.is_default:
            return ""
        return json.dumps({"rotation": self.rotation, "roi": self.roi,
                           "background_clip": None if self.background_clip is None else str(self.background_clip)},
                          sort_keys=True)


@dataclass(frozen=True, eq=False)  # eq=False: masks compare by identity, their pixels by np.array_equal
class Mask:
    """One person's mask in one frame, kept only around the person, on a grid of `scale` cells per
    frame pixel (1.0: the frame's own pixels; 0.375: a 480-px working copy of a 1280-px frame).

    pixels: (h, w) bool, cell (0, 0) at grid position (top, left). frame_size: (width, height) of
    the frame coordinates. The grid is the frame resized to round(width * scale_x) x
    round(height * scale_y) cells, so frame pixel x covers grid position (x + 0.5) * scale_x - 0.5.
    """

    pixels: np.ndarray
    top: int
    left: int
    frame_size: tuple[int, int]
    scale_x: float = 1.0
    scale_y: float = 1.0

    @staticmethod
    def from_frame(mask: np.ndarray) -> Mask:
        """A frame-sized (H, W) bool mask, kept as its bounding crop."""
        height, width = mask.shape
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            return Mask(np.zeros((0, 0), bool), 0, 0, (width, height))
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return Mask(np.ascontiguousarray(mask[top:bottom, left:right], dtype=bool), top, left, (width, height))

    @property
    def at_frame_resolution(self) -> bool:
        return self.scale_x == 1.0 and self.scale_y == 1.0

    def box(self) -> np.ndarray | None:
        """xyxy frame pixels (exclusive end) of the mask scaled to the frame; None when empty. At
        frame resolution, the exact extent; otherwise the extent of `frame_crop` along each axis."""
        if not self.pixels.size:
            return None
        col, row, width, height = cv2.boundingRect(self.pixels.view(np.uint8))  # extent of the nonzero cells
        if not width:
            return None
        x0, x1 = _frame_span(self.left + col, self.left + col + width, self.scale_x, self.frame_size[0])
        y0, y1 = _frame_span(self.top + row, self.top + row + height, self.scale_y, self.frame_size[1])
        return np.array([x0, y0, x1, y1], np.float32)

    def frame_crop(self) -> tuple[np.ndarray, int, int]:
        """(crop (h, w) bool at frame resolution, its top row, its left column): the mask's extent in
        the frame, as the whole mask resized to the frame (bilinear, threshold half-way) would have
        it. Only this crop is ever scaled up."""
        if self.at_frame_resolution:
            return self.pixels, self.top, self.left
        box = self.box()
        if box is None:
            return np.zeros((0, 0), bool), 0, 0
        x0, y0, x1, y1 = (int(v) for v in box)
        steps_x, steps_y = _cells_per_block(self.scale_x), _cells_per_block(self.scale_y)
        if steps_x is not None and steps_y is not None:
            return self._frame_crop_by_resize(x0, y0, x1, y1, steps_x, steps_y), y0, x0
        # Frame pixel (x, y) samples grid position ((x + .5) * sx - .5 - left, ...) of `pixels`.
        warp = np.array([[self.scale_x, 0.0, (x0 + 0.5) * self.scale_x - 0.5 - self.left],
                         [0.0, self.scale_y, (y0 + 0.5) * self.scale_y - 0.5 - self.top]], np.float64)
        cells = self.pixels.view(np.uint8) * np.uint8(255)
        crop = cv2.warpAffine(cells, warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 127
        return crop, y0, x0

    def _frame_crop_by_resize(self, x0: int, y0: int, x1: int, y1: int,
                              steps_x: tuple[int, int], steps_y: tuple[int, int]) -> np.ndarray:
        """`frame_crop`'s pixels through cv2.resize, ~5x cheaper than warpAffine and the same pixels where
        `_cells_per_block` allows it. cv2.resize samples (x + .5) * scale - .5 of its input, so the input
        must start at a frame pixel that is a whole block (q pixels = p cells) from the origin; one block
        of margin each side keeps its edge clamping away from the crop."""
        (px, qx), (py, qy) = steps_x, steps_y
        fx0, fx1 = (x0 // qx - 1) * qx, (-(-x1 // qx) + 1) * qx  # frame span, whole blocks
        fy0, fy1 = (y0 // qy - 1) * qy, (-(-y1 // qy) + 1) * qy
        cx0, cx1 = fx0 // qx * px - self.left, fx1 // qx * px - self.left  # the same span in `pixels` cells
        cy0, cy1 = fy0 // qy * py - self.top, fy1 // qy * py - self.top
        cells = np.zeros((cy1 - cy0, cx1 - cx0), np.uint8)
        h, w = self.pixels.shape
        sy0, sy1, sx0, sx1 = max(cy0, 0), min(cy1, h), max(cx0, 0), min(cx1, w)
        cells[sy0 - cy0:sy1 - cy0, sx0 - cx0:sx1 - cx0] = self.pixels[sy0:sy1, sx0:sx1].view(np.uint8) * np.uint8(255)
        frame = cv2.resize(cells, None, fx=qx / px, fy=qy / py, interpolation=cv2.INTER_LINEAR)
        return frame[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0] > 127

    def dense(self) -> np.ndarray:
        """(H, W) bool: the mask over the whole frame (tests, depth)."""
        width, height = self.frame_size
        return self.paste_into(np.zeros((height, width), bool))

    def paste_into(self, frame: np.ndarray) -> np.ndarray:
        """Write the mask into `frame`, a frame-sized (H, W) bool array of zeros; returns it."""
        crop, top, left = self.frame_crop()
        frame[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        return frame

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = self.dense()
        return dense if dtype is None else dense.astype(dtype)


def _cells_per_block(scale: float) -> tuple[int, int] | None:
    """(p, q) with scale == p / q, p odd, q in 2, 4, 8, 16 (0.375 = 3/8 for 1280 -> 480), else None. Then
    frame pixels sample cell positions at odd multiples of 1 / 2q: exact in the fixed-point weights of
    both cv2.warpAffine (1/32) and cv2.resize, and never half-way between two cells, so no pixel is a
    rounding tie and the two give the same thresholded pixels."""
    for q in (2, 4, 8, 16):
        p = scale * q
        if p == int(p) and int(p) % 2 == 1 and p < q:
            return int(p), q
    return None


def _frame_span(first: int, stop: int, scale: float, limit: int) -> tuple[int, int]:
    """Frame pixels [a, b) where cells [first, stop) of a grid with `scale` cells per pixel stay
    above half after bilinear scaling: pixel x samples cell (x + .5) * scale - .5."""
    if scale == 1.0:
        return int(first), int(stop)
    start = math.floor(first / scale - 0.5) + 1
    end = math.ceil(stop / scale - 0.5)
    return max(0, min(start, limit)), max(0, min(end, limit))


class Masks(Sequence[Mask]):
    """The masks of several persons (one frame) or of one person over frames (a track): a sequence of
    `Mask`s that reads as an (N, H, W) bool array where an array is asked for (np.asarray)."""

    def __init__(self, masks: Sequence[Mask], frame_size: tuple[int, int]):
        self._masks = list(masks)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))

    @staticmethod
    def from_frames(masks: np.ndarray) -> Masks:
        """(N, H, W) bool (or 0/1) frame-sized masks."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
        return Masks([Mask.from_frame(m.astype(bool, copy=False)) for m in masks], (masks.shape[2], masks.shape[1]))

    @staticmethod
    def of(masks: Masks | np.ndarray) -> Masks:
        return masks if isinstance(masks, Masks) else Masks.from_frames(masks)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self._masks), self.frame_size[1], self.frame_size[0]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(bool)

    def __len__(self) -> int:
        return len(self._masks)

    def __iter__(self) -> Iterator[Mask]:
        return iter(self._masks)

    def __getitem__(self, index):
        """An int gives a `Mask`; a slice, index array or bool array gives `Masks`."""
        if isinstance(index, (int, np.integer)):
            return self._masks[index]
        if isinstance(index, slice):
            return Masks(self._masks[index], self.frame_size)
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return Masks([self._masks[int(i)] for i in index], self.frame_size)

    def dense(self) -> np.ndarray:
        """(N, H, W) bool frame-sized masks."""
        width, height = self.frame_size
        out = np.zeros((len(self._masks), height, width), bool)
        for target, mask in zip(out, self._masks):
            mask.paste_into(target)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = self.dense()
        return dense if dtype is None else dense.astype(dtype)

    def __repr__(self) -> str:
        return f"Masks({len(self)} masks, frame {self.frame_size[0]}x{self.frame_size[1]})"


@dataclass
class FrameDetections:
    """Persons found in one frame, in frame coordinates."""

    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    scores: np.ndarray  # (N,) float32
    masks: Masks  # N masks; an (N, H, W) bool array is accepted and kept as crops

    def __post_init__(self) -> None:
        self.masks = Masks.of(self.masks)

    @staticmethod
    def empty(height: int, width: int) -> FrameDetections:
        return FrameDetections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), Masks([], (width, height)))


@dataclass
class Track:
    """One person followed across frames. Indices refer to positions in Clip.frames."""

    track_id: int
    positions: np.ndarray  # (T,) int64 positions in Clip.frames
    frame_indices: np.ndarray  # (T,) int64 source-stream frame indices (what the API reports)
    boxes: np.ndarray  # (T, 4) float32 xyxy
    masks: Masks  # T masks; an (T, H, W) bool array is accepted and kept as crops

    def __post_init__(self) -> None:
        self.masks = Masks.of(self.masks)


@dataclass
class AlignedSequence:
    """A track after §3.2 alignment: what the embedding network consumes (gaitid.contract)."""

    track_id: int
    silhouettes: np.ndarray  # (T, 64, 44) uint8, 0/255
    depth: np.ndarray | None  # (T, 64, 44) uint8: masked disparity in [0, 1] quantised; None if not computed
    frame_indices: np.ndarray  # (T,) int64
    boxes: np.ndarray  # (T, 4) float32 xyxy in frame coordinates
    timings: dict[str, float] = field(default_factory=dict)
    frames_cut_at_border: int = 0  # the track's frames dropped because the person touched the frame's edge
    # (h, w, 3) uint8 RGB: a few of the person's crops side by side, silhouette outlined (pipeline.thumbnails);
    # None when the pipeline made none
    preview: np.ndarray | None = None

    def model_input(self) -> ModelInput:
        return ModelInput(self.silhouettes, self.depth)

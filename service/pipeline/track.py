"""Per-frame person detections -> tracks, with supervision's ByteTrack.

ByteTrack associates boxes frame to frame (Kalman-predicted IoU, with a second pass over low-score
boxes). Each frame's boxes and scores go to its tensor entry point, and the tracks it returns are
matched back to the frame's detection rows as `update_with_detections` does (IoU, one-to-one, at
least 0.5), through which the track picks up the segmenter's own box and mask: the same tracks,
without building and filtering supervision's `Detections` every frame (a third of the tracking
time). For the few boxes of a usual frame that matching runs in plain Python on the same float32
IoU, and falls back to supervision's assignment wherever the outcome could depend on it (a
detection good for two tracks). Masks are not handed to ByteTrack at all: a track only refers to
its frames' masks (`types.Mask`), it never copies their pixels.

Tracks that cannot carry a gait are dropped: too few frames for a gait cycle, or a person too
small for a meaningful silhouette (median box height under the limit).

supervision deprecated `sv.ByteTrack` in 0.28 in favour of the separate `trackers` package and
removed it in 0.31. `trackers` requires the GUI build of OpenCV (`opencv-python`), which clashes
with the headless build this service uses, so the project pins supervision<0.31 and silences the
deprecation warning here.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
import supervision as sv
from supervision.detection.utils.iou_and_nms import box_iou_batch
from supervision.tracker.byte_tracker.matching import linear_assignment
from supervision.tracker.byte_tracker.single_object_track import STrack

from service.pipeline.config import TrackerConfig
from service.pipeline.types import FrameDetections, Mask, Masks, Track

DEFAULT_TRACKER = TrackerConfig()


def make_byte_tracker(config: TrackerConfig, fps: float) -> sv.ByteTrack:
    # supervision counts the lost buffer in frames at 30 fps and rescales by frame_rate.
    buffer_frames = max(1, round(config.lost_track_buffer_s * 30))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # see the module docstring
        return sv.ByteTrack(
            track_activation_threshold=config.track_activation_threshold,
            lost_track_buffer=buffer_frames,
            minimum_matching_threshold=config.minimum_matching_threshold,
            frame_rate=max(1.0, float(fps)),
        )


def track_people(
    detections: list[FrameDetections],
    frame_indices: np.ndarray | None = None,
    fps: float = 25.0,
    config: TrackerConfig = DEFAULT_TRACKER,
) -> list[Track]:
    """Tracks long and tall enough for gait, longest first (`associate` + `filter_tracks`).

    detections: one FrameDetections per clip frame. frame_indices: the source-stream index of each
    clip frame (Clip.frame_indices), or None for 0..T-1. When frames were sampled, pass the
    sampled clip's effective frame rate as `fps` so ByteTrack's motion model and lost buffer match.
    """
    return filter_tracks(associate(detections, frame_indices, fps, config), config)


def associate(
    detections: list[FrameDetections],
    frame_indices: np.ndarray | None = None,
    fps: float = 25.0,
    config: TrackerConfig = DEFAULT_TRACKER,
) -> list[Track]:
    """Every ByteTrack track, unfiltered, in order of first appearance."""
    if frame_indices is None:
        frame_indices = np.arange(len(detections), dtype=np.int64)
    if len(frame_indices) != len(detections):
        raise ValueError(f"{len(detections)} frames of detections but {len(frame_indices)} frame indices")
    tracker = make_byte_tracker(config, fps)
    per_track: dict[int, list[tuple[int, np.ndarray, Mask]]] = defaultdict(list)
    for position, frame in enumerate(detections):
        for row, track_id in _tracked_rows(tracker, frame):
            per_track[track_id].append((position, frame.boxes[row], frame.masks[row]))
    size = detections[0].masks.frame_size if detections else (0, 0)
    return [_build_track(track_id, items, frame_indices, size) for track_id, items in per_track.items()]


def filter_tracks(tracks: list[Track], config: TrackerConfig = DEFAULT_TRACKER) -> list[Track]:
    """Drop tracks too short or too small to be gait; longest first."""
    kept = [t for t in tracks if _long_enough(t, config) and _tall_enough(t, config)]
    return sorted(kept, key=lambda t: (-len(t.positions), t.track_id))


def _tracked_rows(tracker: sv.ByteTrack, frame: FrameDetections) -> list[tuple[int, int]]:
    """(detection row, track id) of this frame's detections that ByteTrack follows: what
    `update_with_detections` reports, matched the same way."""
    count = len(frame.boxes)
    tensors = np.empty((count, 5), np.float32)
    tensors[:, :4] = np.asarray(frame.boxes, np.float32).reshape(count, 4)
    tensors[:, 4] = np.asarray(frame.scores, np.float32).reshape(count)
    tracks = tracker.update_with_tensors(tensors)
    if not tracks or not count:
        return []
    boxes = tensors[:, :4]
    track_boxes = [_track_box(track) for track in tracks]
    pairs = _matches_small(boxes, track_boxes) if count * len(tracks) <= _SMALL_PAIRS else None
    if pairs is None:
        pairs = _matches_general(boxes, track_boxes)
    unassigned = tracker.external_id_counter.NO_ID  # a track not yet confirmed has no id to report
    return sorted((row, int(tracks[col].external_track_id)) for row, col in pairs
                  if tracks[col].external_track_id != unassigned)


# Up to this many (detection, track) pairs, plain Python beats numpy's per-call overhead.
_SMALL_PAIRS = 25
_ONE = np.float32(1.0)


def _track_box(track: STrack) -> list[float]:
    """The track's `tlbr` (x0, y0, x1, y1) as floats."""
    tlwh = track.tlwh
    if tlwh.dtype != np.float64:
        return track.tlbr.tolist()
    # `tlbr` costs two property calls (each a copy and a runtime typing cast); the float64 sums are
    # the very ones it does.
    x, y, w, h = tlwh.tolist()
    return [x, y, w + x, h + y]


def _matches_general(boxes: np.ndarray, track_boxes: list[list[float]]) -> list[tuple[int, int]]:
    """(row, track index) pairs as `update_with_detections` matches them: IoU, one-to-one, at least 0.5."""
    ious = box_iou_batch(boxes, np.asarray(track_boxes))
    matches, _, _ = linear_assignment(1 - ious, 0.5)
    return [(int(row), int(col)) for row, col in matches]


def _matches_small(boxes: np.ndarray, track_boxes: list[list[float]]) -> list[tuple[int, int]] | None:
    """`_matches_general`'s pairs without numpy or scipy, or None where it cannot be sure of them.

    The assignment clamps every cost above 0.5 to 0.5001 and keeps only pairs costing at most 0.5.
    When those good pairs share no row and no track, every optimal assignment contains all of them
    (swapping any out costs more), so they are the answer whatever the tie-breaking. Otherwise
    (a detection good for two tracks, or anything non-finite) the general matching decides.
    """
    rows = boxes.tolist()
    if not math.isfinite(sum(map(sum, rows)) + sum(map(sum, track_boxes))):
        return None  # NaN handling differs between Python's max/min and numpy's
    good = []
    for row, box in enumerate(rows):
        for col, track_box in enumerate(track_boxes):
            # The cost in float32, as supervision computes it: 0.5 must be decided on the same value.
            cost = _ONE - np.float32(_iou(box, track_box))
            if cost <= 0.5:
                good.append((row, col))
            elif not cost > 0.5:
                return None  # NaN (overflowing areas): scipy's to judge
    if len({row for row, _ in good}) < len(good) or len({col for _, col in good}) < len(good):
        return None
    return good


def _iou(a: list[float], b: list[float]) -> float:
    # box_iou_batch's float64 operations in its order, so that the rounding is the same too.
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, inter_w) * max(0.0, inter_h)
    norm = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / norm if norm > 0.0 else 0.0


def _build_track(track_id: int, items: list[tuple[int, np.ndarray, Mask]], frame_indices: np.ndarray,
                 size: tuple[int, int]) -> Track:
    # One detection per frame and id is ByteTrack's contract; keep the first should that ever break.
    by_position: dict[int, tuple[np.ndarray, Mask]] = {}
    for position, box, mask in items:
        by_position.setdefault(position, (box, mask))
    positions = np.array(sorted(by_position), dtype=np.int64)
    return Track(
        track_id=track_id,
        positions=positions,
        frame_indices=np.asarray(frame_indices, np.int64)[positions],
        boxes=np.stack([by_position[p][0] for p in positions]).astype(np.float32),
        masks=Masks([by_position[p][1] for p in positions], size),
    )


def _long_enough(track: Track, config: TrackerConfig) -> bool:
    return len(track.positions) >= config.min_track_frames


def _tall_enough(track: Track, config: TrackerConfig) -> bool:
    heights = track.boxes[:, 3] - track.boxes[:, 1]
    return float(np.median(heights)) >= config.min_person_height

"""Per-frame person detections -> tracks, with supervision's ByteTrack.

ByteTrack associates boxes frame to frame (Kalman-predicted IoU, with a second pass over low-score
boxes). Each frame's boxes and scores go to its tensor entry point, and the tracks it returns are
matched back to the frame's detection rows as `update_with_detections` does (IoU, one-to-one, at
least 0.5), through which the track picks up the segmenter's own box and mask: the same tracks,
without building and filtering supervision's `Detections` every frame (a third of the tracking
time). Masks are not handed to ByteTrack at all: a track only refers to its frames' masks
(`types.Mask`), it never copies their pixels.

Tracks that cannot carry a gait are dropped: too few frames for a gait cycle, or a person too
small for a meaningful silhouette (median box height under the limit).

supervision deprecated `sv.ByteTrack` in 0.28 in favour of the separate `trackers` package and
removed it in 0.31. `trackers` requires the GUI build of OpenCV (`opencv-python`), which clashes
with the headless build this service uses, so the project pins supervision<0.31 and silences the
deprecation warning here.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np
import supervision as sv
from supervision.detection.utils.iou_and_nms import box_iou_batch
from supervision.tracker.byte_tracker.matching import linear_assignment

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
    if not tracks:
        return []
    ious = box_iou_batch(tensors[:, :4], np.asarray([track.tlbr for track in tracks]))
    matches, _, _ = linear_assignment(1 - ious, 0.5)
    unassigned = tracker.external_id_counter.NO_ID  # a track not yet confirmed has no id to report
    return sorted((int(row), int(tracks[col].external_track_id)) for row, col in matches
                  if tracks[col].external_track_id != unassigned)


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

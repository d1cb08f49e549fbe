"""Today's clip path before issue 16 (commit 0632f27), kept only so that bench/pipeline.py and the
agreement tests can run it beside the current one: background-subtraction frames decoded at full
size and shrunk by OpenCV, every person mask scaled back to a frame-sized array, stacked per track
and aligned from frame-sized arrays. Not used by the service; do not extend it.

`legacy_process(path, config, background)` -> (sequences, frame_count), the sequences as the
service's `AlignedSequence`s (64x44, or 64x64 with `config.full_width`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from service.pipeline.align import align_sequence, align_to_64x64
from service.pipeline.config import PipelineConfig, TrackerConfig
from service.pipeline.decode import (
    _clockwise_degrees,
    _count_packets,
    _duration_s,
    _frame_rate,
    _open_container,
    _opener,
    _upright_size,
    _video_stream,
    even_sample,
    scaled_size,
)
from service.pipeline.errors import NoPersonError, TooFewFramesError
from service.pipeline.pipeline import effective_fps, touches_border
from service.pipeline.segment_bgsub import BgSubConfig, _Kernels, _spread
from service.pipeline.track import make_byte_tracker
from service.pipeline.types import AlignedSequence, Clip

_SHADOW_VALUE = 127
_ROW = "row"  # sv.Detections.data key: the detection's row in its frame


@dataclass
class LegacyDetections:
    boxes: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    masks: np.ndarray  # (N, H, W) bool, frame-sized


@dataclass
class LegacyTrack:
    track_id: int
    positions: np.ndarray
    frame_indices: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray  # (T, H, W) bool, frame-sized


def legacy_decode(path: str | Path, config: PipelineConfig, *, opencv_rgb: bool = False) -> Clip:
    """The old decode_video (no rotation override, no truncation checks: the bench's clips need none):
    full-size RGB, one new scaler per frame, a list stacked at the end.

    opencv_rgb: convert 4:2:0 pictures to RGB with OpenCV instead of FFmpeg's swscale (other chroma
    upsampling and rounding: frames about a grey level apart, equally correct). Not the old path: it
    measures how far the old path's silhouettes move when only that conversion changes."""
    limits = config.decode
    reopen = _opener(path)
    with _open_container(reopen) as container:
        stream = _video_stream(container)
        fps = _frame_rate(stream)
        duration = _duration_s(container, stream)
        total = stream.frames or (round(duration * fps) if duration else 0)
    if not total:
        total = _count_packets(reopen)
    if limits.on_too_long == "truncate":
        total = min(total, max(1, int(limits.max_duration_s * fps)))
    wanted = even_sample(total, limits.max_frames)
    wanted_set, last = set(wanted.tolist()), int(wanted[-1])
    frames, indices, applied, source_size = [], [], 0, (0, 0)
    with _open_container(reopen) as container:
        stream = _video_stream(container)
        stream.codec_context.thread_count = max(0, int(config.decoder_threads))
        stream.codec_context.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index > last:
                break
            if index not in wanted_set:
                continue
            applied = _clockwise_degrees(frame)
            width, height = scaled_size(frame.width, frame.height, limits.max_side)
            if opencv_rgb and frame.format.name == "yuv420p" and (width, height) == (frame.width, frame.height):
                rgb = cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
            else:
                rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
            if applied:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=-(applied // 90)))
            frames.append(rgb)
            indices.append(index)
            source_size = _upright_size(frame.width, frame.height, applied)
            if len(frames) >= limits.max_frames:
                break
    return Clip(np.stack(frames), np.asarray(indices, np.int64), fps, source_size, applied)


class LegacyBackgroundSubtraction:
    """The old segmenter: OpenCV INTER_AREA shrink of full-size frames, frame-sized masks."""

    def __init__(self, background: np.ndarray | None = None, noise: int = 0):
        """noise: not the old path; grey levels of uniform noise (integers in [-noise, noise], fixed seed)
        added to the clip's frames at the working size, where the background model sees them."""
        self.config = BgSubConfig()
        self.background = background
        self.noise = noise

    def segment(self, frames: np.ndarray) -> list[LegacyDetections]:
        height, width = frames.shape[1:3]
        scale = min(1.0, self.config.work_side / max(height, width))
        small = _resize_frames(frames, scale)
        if self.noise:
            noise = np.random.default_rng(0).integers(-self.noise, self.noise + 1, small.shape, dtype=np.int16)
            small = np.clip(small + noise, 0, 255).astype(np.uint8)
        subtractor = self._warmed_up_subtractor(small)
        kernels = _Kernels.for_height(small.shape[1], self.config)
        min_height = self.config.min_person_height * scale
        detections = []
        for frame in small:
            raw = subtractor.apply(frame, learningRate=self.config.learning_rate)
            foreground = np.where(raw > _SHADOW_VALUE, 255, 0).astype(np.uint8)
            foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernels.open)
            foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, kernels.close)
            blobs = self._person_blobs(foreground, kernels, min_height)
            detections.append(_to_input_scale(blobs, height, width, scale))
        return detections

    def _warmed_up_subtractor(self, frames: np.ndarray):
        cfg = self.config
        subtractor = cv2.createBackgroundSubtractorMOG2(cfg.history, cfg.threshold, detectShadows=True)
        subtractor.setBackgroundRatio(cfg.background_ratio)
        subtractor.setShadowThreshold(cfg.shadow_threshold)
        warmup = frames[_spread(len(frames), 200)]
        background = self.background
        if background is not None and len(background):
            if background.shape[1:] != frames.shape[1:]:
                background = _resize_frames(background, size=(frames.shape[2], frames.shape[1]))
            warmup = np.concatenate([background[_spread(len(background), 200)], warmup])
        for _ in range(max(1, cfg.warmup_passes)):
            for frame in warmup:
                subtractor.apply(frame, learningRate=-1)
        return subtractor

    def _person_blobs(self, foreground: np.ndarray, kernels: _Kernels, min_height: float):
        grouped = cv2.dilate(foreground, kernels.group)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
        blobs = []
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_HEIGHT] < min_height:
                continue
            mask = (labels == label) & (foreground > 0)
            if not mask.any():
                continue
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
            box_h, box_w = bottom - top + 1, right - left + 1
            fill = np.count_nonzero(mask[top:bottom + 1, left:right + 1]) / float(box_h * box_w)
            if box_h < min_height or box_h < self.config.min_aspect * box_w or fill < self.config.min_fill:
                continue
            blobs.append((mask, min(1.0, 0.5 + fill)))
        return blobs


def _resize_frames(frames: np.ndarray, scale: float = 1.0, size: tuple[int, int] | None = None) -> np.ndarray:
    height, width = frames.shape[1:3]
    if size is None:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _to_input_scale(blobs, height: int, width: int, scale: float) -> LegacyDetections:
    empty = LegacyDetections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, height, width), bool))
    if not blobs:
        return empty
    masks = []
    for mask, _ in blobs:
        if scale < 1.0:
            mask = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR) > 127
        masks.append(mask)
    boxes = [_mask_box(m) for m in masks]
    keep = [i for i, b in enumerate(boxes) if b is not None]
    if not keep:
        return empty
    return LegacyDetections(np.asarray([boxes[i] for i in keep], np.float32),
                            np.asarray([blobs[i][1] for i in keep], np.float32), np.stack([masks[i] for i in keep]))


def _mask_box(mask: np.ndarray):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _to_supervision(frame: LegacyDetections) -> sv.Detections:
    count = len(frame.boxes)
    return sv.Detections(
        xyxy=np.asarray(frame.boxes, np.float32).reshape(count, 4),
        confidence=np.asarray(frame.scores, np.float32).reshape(count),
        class_id=np.zeros(count, dtype=int),
        data={_ROW: np.arange(count)},
    )


def legacy_tracks(detections: list[LegacyDetections], frame_indices: np.ndarray, fps: float,
                  config: TrackerConfig) -> list[LegacyTrack]:
    """The old association: every track's masks stacked into one frame-sized array."""
    tracker = make_byte_tracker(config, fps)
    per_track = defaultdict(list)
    for position, frame in enumerate(detections):
        tracked = tracker.update_with_detections(_to_supervision(frame))  # reads boxes and scores only
        if len(tracked) == 0 or tracked.tracker_id is None:
            continue
        for row, track_id in zip(tracked.data[_ROW], tracked.tracker_id):
            per_track[int(track_id)].append((position, frame.boxes[row], frame.masks[row]))
    tracks = []
    for track_id, items in per_track.items():
        by_position = {}
        for position, box, mask in items:
            by_position.setdefault(position, (box, mask))
        positions = np.array(sorted(by_position), dtype=np.int64)
        tracks.append(LegacyTrack(track_id, positions, np.asarray(frame_indices, np.int64)[positions],
                                  np.stack([by_position[p][0] for p in positions]).astype(np.float32),
                                  np.stack([by_position[p][1] for p in positions]).astype(bool)))
    tall = [t for t in tracks if len(t.positions) >= config.min_track_frames
            and float(np.median(t.boxes[:, 3] - t.boxes[:, 1])) >= config.min_person_height]
    return sorted(tall, key=lambda t: (-len(t.positions), t.track_id))


def legacy_process(path: str | Path, config: PipelineConfig, background: np.ndarray | None = None, *,
                   opencv_rgb: bool = False, noise: int = 0) -> tuple[list[AlignedSequence], int]:
    """The old whole path without depth or embedding: decode, segment, track, drop border frames, align.
    opencv_rgb: see `legacy_decode`; noise: see `LegacyBackgroundSubtraction` (both off: the old path)."""
    clip = legacy_decode(path, config, opencv_rgb=opencv_rgb)
    detections = LegacyBackgroundSubtraction(background=background, noise=noise).segment(clip.frames)
    tracks = legacy_tracks(detections, clip.frame_indices, effective_fps(clip), config.tracker)
    if not tracks:
        raise NoPersonError("Nobody was found walking in the clip.")
    align = align_to_64x64 if config.full_width else align_sequence
    sequences = []
    for track in tracks:
        keep = ~touches_border(track.boxes, clip.size) if config.drop_truncated else np.ones(len(track.boxes), bool)
        masks, boxes, indices = track.masks[keep], track.boxes[keep], track.frame_indices[keep]
        if len(masks) < config.tracker.min_track_frames:
            continue
        sils, _, kept = align(masks, None, min_pixels=config.min_mask_pixels)
        if len(kept) >= config.tracker.min_track_frames:
            sequences.append(AlignedSequence(track.track_id, sils, None, indices[kept], boxes[kept]))
    if not sequences:
        raise TooFewFramesError("Nobody was seen whole in enough frames.")
    return sequences, len(clip.frames)



class LegacyYolo:
    """The old YOLO-seg masks: each person's mask in a frame-sized array, logits over the whole
    prototype map. Wraps a current `YoloSegmenter` (same model, letterbox, NMS) for the comparison."""

    def __init__(self, segmenter):
        self.segmenter = segmenter
        segmenter._postprocess = self._postprocess  # this instance only

    def segment(self, frames: np.ndarray) -> list[LegacyDetections]:
        return self.segmenter.segment(frames)

    def _postprocess(self, prediction: np.ndarray, protos: np.ndarray, box) -> LegacyDetections:
        boxes, scores, coefficients = self.segmenter._persons(prediction, protos.shape[0], box)
        nm, mh, mw = protos.shape
        logits = (coefficients.T.astype(np.float32) @ protos.reshape(nm, -1).astype(np.float32)).reshape(-1, mh, mw)
        to_proto = box.frame_to_proto_affine(mh, mw)
        masks = np.zeros((len(boxes), box.frame_height, box.frame_width), bool)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            left, top, right, bottom = math.ceil(x1), math.ceil(y1), math.ceil(x2), math.ceil(y2)
            if right <= left or bottom <= top:
                continue
            window = to_proto.copy()
            window[:, 2] += window[:, :2] @ np.array([left, top], np.float64)
            region = cv2.warpAffine(logits[k], window, (right - left, bottom - top),
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            masks[k, top:bottom, left:right] = region > self.segmenter.mask_logit_threshold
        return LegacyDetections(boxes, scores, masks)


@dataclass
class Agreement:
    """How far two runs' aligned silhouettes of one clip agree, frame by frame."""

    mean_iou: float  # over the frames both runs aligned, tracks matched by shared frames
    shared_frames: int
    frames_a: int  # frames aligned by run a, over all its tracks
    frames_b: int

    @property
    def coverage(self) -> float:
        """Shared frames over the frames either run aligned (1.0: the same frames)."""
        union = self.frames_a + self.frames_b - self.shared_frames
        return self.shared_frames / union if union else 1.0


def agreement(a: list[AlignedSequence], b: list[AlignedSequence]) -> Agreement:
    """Each track of `a` is paired with the track of `b` sharing most of its frame indices; the
    silhouettes of every shared frame are compared by IoU."""
    ious: list[float] = []
    for first in a:
        best = max(b, key=lambda s: len(np.intersect1d(s.frame_indices, first.frame_indices)), default=None)
        if best is None:
            continue
        _, i, j = np.intersect1d(first.frame_indices, best.frame_indices, return_indices=True)
        for x, y in zip(first.silhouettes[i] > 0, best.silhouettes[j] > 0):
            union = np.count_nonzero(x | y)
            ious.append(np.count_nonzero(x & y) / union if union else 1.0)
    return Agreement(float(np.mean(ious)) if ious else 0.0, len(ious),
                     sum(len(s.frame_indices) for s in a), sum(len(s.frame_indices) for s in b))

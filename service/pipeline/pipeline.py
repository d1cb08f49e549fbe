"""One clip in, gait sequences (and embeddings) out: decode -> segment -> track -> depth -> align -> embed.

`ClipPipeline` wires the stages and times each one; `build_pipeline(PipelineSettings)` picks the
stages a deployment has (YOLO-seg when its ONNX file is installed, background subtraction otherwise; depth
only when the embedding model needs it).

Errors a user can cause (bad file, nobody walking, too short a walk) surface as the typed
`PipelineError`s of `service.pipeline.errors`, each with a message that says what to change.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gaitid.contract import SequenceEmbedder, quantise_depth
from service.pipeline.align import align_sequence, align_to_64x64
from service.pipeline.config import (
    DecodeLimits,
    PipelineConfig,
    PipelineSettings,
    TrackerConfig,
    require_model,
)
from service.pipeline.decode import VideoSource, decode_video
from service.pipeline.errors import ModelNotFoundError, NoPersonError, TooFewFramesError
from service.pipeline.segment_bgsub import BackgroundSubtractionSegmenter, BgSubConfig
from service.pipeline.thumbnails import track_strip
from service.pipeline.track import associate, filter_tracks
from service.pipeline.types import AlignedSequence, Clip, ClipOverrides, FrameDetections, Roi, Track


class Segmenter(Protocol):
    """frames (T, h, w, 3) RGB -> detections in the frame coordinates `size` ((width, height); None:
    the frames' own). `input_side`: the longer side the segmenter works at (the decoder delivers
    frames at that size when nothing else needs more), or None for full-size frames."""

    input_side: int | None

    def segment(self, frames: np.ndarray, size: tuple[int, int] | None = None) -> list[FrameDetections]: ...


class DepthModel(Protocol):
    def track_disparity(self, frames: np.ndarray, track: Track) -> np.ndarray: ...


class ClipProcessor(Protocol):
    """What users of a `ClipPipeline` rely on (the routes, re-scoring), so tests can put a fake in its
    place: a video (path, bytes or binary file) -> ClipResult, or a typed PipelineError. `overrides`
    (a camera's or a request's rotation, background clip, region of interest) is None when none is set."""

    def process(self, source: VideoSource, overrides: ClipOverrides | None = None) -> ClipResult: ...


@dataclass
class ClipResult:
    """Everything the service needs from one clip."""

    sequences: list[AlignedSequence]  # one per usable track, longest first (64x64 with full_width)
    embeddings: dict[int, np.ndarray]  # track_id -> (C, P) embedding; empty without an embedder
    timings: dict[str, float]  # seconds per stage: decode, segment, track, depth, align, embed, total
    frame_count: int  # frames decoded (after sampling)
    fps: float  # source stream frame rate
    size: tuple[int, int]  # (width, height) of the processed frames
    source_size: tuple[int, int]  # (width, height) of the upright source
    rotation: int  # degrees clockwise applied
    model_id: str | None = None  # the embedder's id, when embeddings were made
    dropped_tracks: int = 0  # tracks found but unusable (too short / small / too few aligned frames)
    sampled_from: int | None = None  # frames in the source when they were thinned to frame_count


class ClipPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        segmenter: Segmenter,
        depth_estimator: DepthModel | None = None,
        embedder: SequenceEmbedder | None = None,
        background_segmenter: Callable[[Path], Segmenter] | None = None,
    ):
        """background_segmenter: builds the segmenter seeded by another empty-scene clip (a camera's
        background, ClipOverrides.background_clip); None: such overrides do not change segmentation
        (YOLO needs no background)."""
        self.config = config
        self.segmenter = segmenter
        self.embedder = embedder
        self.background_segmenter = background_segmenter
        self._segmenters: OrderedDict[Path, Segmenter] = OrderedDict()  # the last few cameras' backgrounds
        self._segmenters_lock = threading.Lock()
        if embedder is not None and embedder.metadata.needs_depth and depth_estimator is None:
            raise ModelNotFoundError(
                "The embedding model needs depth maps but no depth model is installed: "
                "run `gaitid models fetch` (or `gaitid models import`).",
            )
        # A silhouette-only embedder never sees depth: skip the most expensive stage entirely.
        self.depth_estimator = depth_estimator if embedder is None or embedder.metadata.needs_depth else None

    @property
    def computes_depth(self) -> bool:
        return self.depth_estimator is not None

    @property
    def frame_side(self) -> int | None:
        """The longer side of the decoded pixels: the segmenter's working size, unless depth needs the
        full frames (its person crops are cut from them) or the config asks for them. None: full size."""
        if self.computes_depth or not self.config.decode_at_working_size:
            return None
        return getattr(self.segmenter, "input_side", None)

    def process(self, source: VideoSource, overrides: ClipOverrides | None = None, *,
                rotation: int | None = None) -> ClipResult:
        """Run the whole path on a path, bytes or binary file. `overrides`: a camera's or a request's
        settings; `rotation` (degrees clockwise) overrides the stream's metadata and theirs."""
        overrides = overrides or ClipOverrides()
        rotation = overrides.rotation if rotation is None else rotation
        timings: dict[str, float] = {}
        started = time.perf_counter()
        with _timed(timings, "decode"):
            clip = decode_video(source, self.config.decode, rotation=rotation, threads=self.config.decoder_threads,
                                frame_side=self.frame_side)
        result = self.process_clip(clip, timings, overrides)
        timings["total"] = time.perf_counter() - started
        return result

    def segmenter_for(self, overrides: ClipOverrides) -> Segmenter:
        """The server's segmenter, or one seeded by the overrides' background clip (kept for the next
        clips of the same camera: decoding a background costs about as much as a short clip)."""
        background = overrides.background_clip
        if background is None or self.background_segmenter is None:
            return self.segmenter
        with self._segmenters_lock:
            if background in self._segmenters:
                self._segmenters.move_to_end(background)
                return self._segmenters[background]
        segmenter = self.background_segmenter(background)
        with self._segmenters_lock:
            self._segmenters[background] = segmenter
            while len(self._segmenters) > BACKGROUNDS_KEPT:
                self._segmenters.popitem(last=False)
        return segmenter

    def process_clip(self, clip: Clip, timings: dict[str, float] | None = None,
                     overrides: ClipOverrides | None = None) -> ClipResult:
        """The stages after decoding, on an already decoded clip."""
        timings = {} if timings is None else timings
        overrides = overrides or ClipOverrides()
        min_frames = self.config.tracker.min_track_frames
        if len(clip.frames) < min_frames:
            raise TooFewFramesError(
                f"The clip has {len(clip.frames)} frames; at least {min_frames} are needed "
                "(about a second of walking).",
                frames=len(clip.frames), min_frames=min_frames,
            )
        with _timed(timings, "segment"):
            detections = self.segmenter_for(overrides).segment(clip.frames, clip.size)
            if overrides.roi is not None:
                detections = [inside_region(d, overrides.roi, clip.size) for d in detections]
        with _timed(timings, "track"):
            all_tracks = associate(detections, clip.frame_indices, effective_fps(clip), self.config.tracker)
            tracks = filter_tracks(all_tracks, self.config.tracker)
        if not tracks:
            raise _why_no_track(detections, all_tracks, self.config.tracker)

        sequences: list[AlignedSequence] = []
        embeddings: dict[int, np.ndarray] = {}
        timings.setdefault("depth", 0.0)
        timings.setdefault("align", 0.0)
        if self.embedder is not None:
            timings.setdefault("embed", 0.0)
        for track in tracks:
            sequence = self._sequence(clip, track, timings)
            if sequence is None:
                continue
            sequences.append(sequence)
            if self.embedder is not None:
                with _timed(timings, "embed", sequence.timings):
                    embeddings[track.track_id] = self.embedder.embed([sequence.model_input()])[0]
        if not sequences:
            raise TooFewFramesError(
                f"Nobody was seen whole (inside the picture and cleanly segmented) in at least {min_frames} "
                "frames. Film the whole walk with the person fully in view.",
                min_frames=min_frames,
            )
        return ClipResult(
            sequences=sequences,
            embeddings=embeddings,
            timings=timings,
            frame_count=len(clip.frames),
            fps=clip.fps,
            size=clip.size,
            source_size=clip.source_size,
            rotation=clip.rotation,
            model_id=self.embedder.model_id if self.embedder is not None else None,
            dropped_tracks=len(all_tracks) - len(sequences),
            sampled_from=clip.sampled_from,
        )

    def _sequence(self, clip: Clip, track: Track, timings: dict[str, float]) -> AlignedSequence | None:
        own: dict[str, float] = {}
        min_frames = self.config.tracker.min_track_frames
        cut = 0
        if self.config.drop_truncated:
            inside = ~touches_border(track.boxes, clip.size)
            cut = int((~inside).sum())
            track = subset_track(track, inside)
        if len(track.positions) < min_frames:
            return None
        depth = None
        if self.depth_estimator is not None:  # only on the frames that will be aligned
            with _timed(timings, "depth", own):
                depth = self.depth_estimator.track_disparity(clip.frames, track)
        align = align_to_64x64 if self.config.full_width else align_sequence
        with _timed(timings, "align", own):
            sils, aligned_depth, kept = align(track.masks, depth, min_pixels=self.config.min_mask_pixels)
        if len(kept) < min_frames:
            return None
        # The frames that were aligned (`kept`: ascending positions into the track's frames).
        aligned = Track(track.track_id, track.positions[kept], track.frame_indices[kept], track.boxes[kept],
                        track.masks[kept])
        preview = None
        if self.config.previews:
            with _timed(timings, "preview", own):
                preview = track_strip(clip, aligned)
        return AlignedSequence(
            track_id=track.track_id,
            silhouettes=sils,
            depth=None if aligned_depth is None else quantise_depth(aligned_depth),
            frame_indices=aligned.frame_indices,
            boxes=aligned.boxes,
            timings=own,
            frames_cut_at_border=cut,
            preview=preview,
        )


def inside_region(detections: FrameDetections, roi: Roi, size: tuple[int, int]) -> FrameDetections:
    """The frame's detections whose box centre lies inside `roi` ([x1, y1, x2, y2] fractions of `size`)."""
    if not len(detections.boxes):
        return detections
    width, height = size
    centre_x = (detections.boxes[:, 0] + detections.boxes[:, 2]) / 2 / width
    centre_y = (detections.boxes[:, 1] + detections.boxes[:, 3]) / 2 / height
    keep = (centre_x >= roi[0]) & (centre_x <= roi[2]) & (centre_y >= roi[1]) & (centre_y <= roi[3])
    if keep.all():
        return detections
    return FrameDetections(detections.boxes[keep], detections.scores[keep], detections.masks[keep])


def subset_track(track: Track, keep: np.ndarray) -> Track:
    """The same track restricted to the frames where `keep` (bool, one per track frame) is set."""
    if keep.all():
        return track
    return Track(track.track_id, track.positions[keep], track.frame_indices[keep], track.boxes[keep], track.masks[keep])


def touches_border(boxes: np.ndarray, size: tuple[int, int], margin: float = 1.0) -> np.ndarray:
    """(T,) bool: which xyxy boxes reach within `margin` px of the edge of a (width, height) frame."""
    width, height = size
    return (
        (boxes[:, 0] <= margin) | (boxes[:, 1] <= margin)
        | (boxes[:, 2] >= width - margin) | (boxes[:, 3] >= height - margin)
    )


def effective_fps(clip: Clip) -> float:
    """Frame rate of the decoded frames: lower than the stream's when frames were sampled."""
    if len(clip.frame_indices) < 2:
        return clip.fps
    span = int(clip.frame_indices[-1] - clip.frame_indices[0])
    return clip.fps * (len(clip.frame_indices) - 1) / span if span > 0 else clip.fps


def _why_no_track(detections: list[FrameDetections], all_tracks: list[Track], config: TrackerConfig):
    if not any(len(d.boxes) for d in detections) or not all_tracks:
        return NoPersonError("Nobody was found walking in the clip.")
    tall = [t for t in all_tracks if _median_height(t) >= config.min_person_height]
    if not tall:
        tallest = max(_median_height(t) for t in all_tracks)
        return NoPersonError(
            f"The people in the clip are too small ({tallest:.0f} px tall; at least "
            f"{config.min_person_height} px are needed). Film closer or at a higher resolution.",
            person_height=round(tallest), min_person_height=config.min_person_height,
        )
    longest = max(len(t.positions) for t in tall)
    return TooFewFramesError(
        f"A person was followed for only {longest} frames; at least {config.min_track_frames} are needed. "
        "Film a longer walk across the view.",
        frames=longest, min_frames=config.min_track_frames,
    )


BACKGROUNDS_KEPT = 8  # cameras' background segmenters kept ready (each holds its warm-up frames)


def _median_height(track: Track) -> float:
    return float(np.median(track.boxes[:, 3] - track.boxes[:, 1]))


@contextmanager
def _timed(timings: dict[str, float], stage: str, also: dict[str, float] | None = None) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        timings[stage] = timings.get(stage, 0.0) + elapsed
        if also is not None:
            also[stage] = also.get(stage, 0.0) + elapsed


# ---------------------------------------------------------------------------------------------
# Factory


def build_pipeline(
    settings: PipelineSettings,
    embedder: SequenceEmbedder | None = None,
    *,
    with_depth: bool | None = None,
    background: str | Path | np.ndarray | None = None,
    config: PipelineConfig | None = None,
) -> ClipPipeline:
    """A pipeline for `settings`.

    Segmenter: settings.segmenter "yolo" (its ONNX file must exist), "bgsub", or "auto" (YOLO when
    its file is installed, else background subtraction). `background`: an empty-scene clip (path or
    RGB frames) seeding background subtraction.
    Depth: with_depth=None loads Depth Anything only when `embedder` needs depth; True insists
    (dataset preparation), False never loads it. config: overrides settings.pipeline_config().
    """
    config = config or settings.pipeline_config()
    needs_depth = with_depth if with_depth is not None else bool(embedder is not None and embedder.metadata.needs_depth)
    # The empty-scene clip is decoded as the clips will be: shrunk by the decoder, or at full size.
    shrink = config.decode_at_working_size and not needs_depth
    segmenter = make_segmenter(settings, background=background, decode_at_working_size=shrink)
    depth_estimator = make_depth_estimator(settings) if needs_depth else None
    background_segmenter = None
    if not uses_yolo(settings):  # YOLO needs no empty scene: a camera's background changes nothing there
        def background_segmenter(clip: Path) -> Segmenter:
            return make_segmenter(settings, background=clip, decode_at_working_size=shrink)
    return ClipPipeline(config, segmenter, depth_estimator, embedder, background_segmenter)


def uses_yolo(settings: PipelineSettings) -> bool:
    """Whether `settings` segment with YOLO: asked for by name, or "auto" with its file installed."""
    return settings.segmenter == "yolo" or (settings.segmenter == "auto" and settings.yolo_path.is_file())


def make_segmenter(settings: PipelineSettings, *, background: str | Path | np.ndarray | None = None,
                   decode_at_working_size: bool = True) -> Segmenter:
    if uses_yolo(settings):
        from service.pipeline.segment_yolo import YoloSegmenter  # lazy: needs its ONNX model

        return YoloSegmenter(require_model(settings.yolo_path, "yolo"), providers=settings.providers,
                             threads=settings.threads, imgsz=settings.yolo_imgsz)
    if settings.segmenter not in ("auto", "bgsub"):
        raise ValueError(f"unknown segmenter {settings.segmenter!r}: use auto, yolo or bgsub")
    config = BgSubConfig(min_person_height=settings.min_person_height)
    side = config.work_side if decode_at_working_size else None
    return BackgroundSubtractionSegmenter(config, background=_background_frames(background, settings, side))


def make_depth_estimator(settings: PipelineSettings) -> DepthModel:
    from service.pipeline.depth import DepthEstimator  # lazy: needs its ONNX model

    return DepthEstimator(require_model(settings.depth_path, "depth"), providers=settings.providers,
                          threads=settings.threads, input_size=settings.depth_size, mode=settings.depth_input)


def _background_frames(background: str | Path | np.ndarray | None, settings: PipelineSettings,
                       frame_side: int | None) -> np.ndarray | None:
    """An empty-scene clip's frames, decoded at `frame_side` (None: full size) like the clips."""
    if background is None or isinstance(background, np.ndarray):
        return background
    limits = DecodeLimits(max_frames=200, max_duration_s=3600.0, max_side=settings.max_side, on_too_long="truncate")
    return decode_video(background, limits, frame_side=frame_side).frames

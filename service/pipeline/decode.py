"""Video decoding with PyAV: any container/codec FFmpeg reads, upright, size- and length-capped.

What `decode_video` guarantees:
- frames are RGB uint8 and upright: the stream's display matrix (phone videos recorded in portrait
  are often stored landscape plus a rotation) is applied, or an explicit `rotation` override;
- the longer side is at most `max_side`: that size is the clip's frame coordinates (`Clip.size`);
- with `frame_side`, the pixels come at a smaller working resolution (longer side `frame_side`),
  area-averaged by FFmpeg's swscale in the same call that converts to RGB: the stages that work at a
  reduced size (background subtraction, YOLO's letterbox) get their input without a full-size RGB
  copy ever being made, and one scaler (its context cached) serves the whole clip;
- only the frames sampling keeps are converted at all; the others are decoded (a codec needs
  them as references) and dropped;
- at most `max_frames` frames, sampled evenly over the clip when it has more (gait needs whole
  cycles spread over the walk, not the first N frames); each kept frame carries its index in the
  source stream so results can point back into the video;
- clips longer than `max_duration_s` are rejected (`ClipTooLongError`) or, with
  `on_too_long="truncate"`, cut to their first `max_duration_s` seconds;
- anything FFmpeg cannot read becomes `InvalidVideoError`, never a library traceback.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import BinaryIO

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from service.pipeline.config import DecodeLimits
from service.pipeline.errors import ClipTooLongError, InvalidVideoError
from service.pipeline.types import Clip

log = logging.getLogger(__name__)

VideoSource = str | Path | bytes | bytearray | memoryview | BinaryIO

DEFAULT_LIMITS = DecodeLimits()

# Used only when a stream states no frame rate at all (raw elementary streams).
_FALLBACK_FPS = 25.0


def decode_video(
    source: VideoSource,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    rotation: int | None = None,
    threads: int = 1,
    frame_side: int | None = None,
) -> Clip:
    """Decode `source` (a path, the file's bytes, or a binary file object) into a `Clip`.

    `rotation`: degrees clockwise (0/90/180/270) to apply instead of the stream's display matrix,
    for footage stored rotated without metadata. `threads`: FFmpeg decoder threads (0 = FFmpeg
    decides). `frame_side`: the longer side of the returned pixels when smaller than the frame
    coordinates' (None: full size).
    """
    if limits.max_frames < 1 or limits.max_side < 16 or limits.max_duration_s <= 0:
        raise ValueError(f"unusable decode limits: {limits}")
    if rotation is not None and rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    if frame_side is not None and frame_side < 16:
        raise ValueError(f"frame_side must be at least 16, got {frame_side}")
    reopen = _opener(source)
    with _open_container(reopen) as container:
        stream = _video_stream(container)
        fps = _frame_rate(stream)
        duration = _duration_s(container, stream)
        if duration is not None and duration > limits.max_duration_s and limits.on_too_long == "reject":
            raise _too_long(duration, limits)
        total = stream.frames or (round(duration * fps) if duration else 0)
        if total:  # the usual case: decode from this container, nothing has been read yet
            return _decode_clip(container, stream, total, fps, limits, rotation, threads, frame_side)
    total = _count_packets(reopen)  # containers without a frame count or duration: demux only
    with _open_container(reopen) as container:
        return _decode_clip(container, _video_stream(container), total, fps, limits, rotation, threads, frame_side)


def _decode_clip(container, stream, total: int, fps: float, limits: DecodeLimits, rotation: int | None,
                 threads: int, frame_side: int | None) -> Clip:
    if limits.on_too_long == "truncate":
        total = min(total, max(1, int(limits.max_duration_s * fps)))
    wanted = even_sample(total, limits.max_frames)
    stream.codec_context.thread_count = max(0, int(threads))
    stream.codec_context.thread_type = "AUTO"
    frames, indices, applied, source_size = _decode_selected(
        container, stream, wanted, limits, rotation, frame_side, max(0, int(threads))
    )
    size = scaled_size(*source_size, limits.max_side)
    return Clip(
        frames=frames,
        frame_indices=np.asarray(indices, np.int64),
        fps=fps,
        source_size=source_size,
        rotation=applied,
        coordinate_size=size,
    )


def even_sample(total: int, count: int) -> np.ndarray:
    """Indices of `count` frames spread evenly over `total` (all of them when total <= count).

    Includes the first and the last frame, so the sampled clip spans the same walk.
    """
    if total <= count:
        return np.arange(total, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, total - 1, count)).astype(np.int64))


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most max_side; even sizes are not needed."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _opener(source: VideoSource):
    """A function that opens a fresh container on the source each call (we read it twice at most)."""
    if isinstance(source, (str, Path)):
        path = str(source)
        return lambda: av.open(path, mode="r")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InvalidVideoError("The uploaded file is empty.")
        return lambda: av.open(io.BytesIO(data), mode="r")
    if hasattr(source, "read") and hasattr(source, "seek"):
        def reopen():
            source.seek(0)
            return av.open(source, mode="r")
        return reopen
    raise TypeError(f"cannot decode a {type(source).__name__}: pass a path, bytes or a binary file")


class _open_container:
    """Context manager around av.open that turns FFmpeg's failures into InvalidVideoError."""

    def __init__(self, opener):
        self._opener = opener
        self._container = None

    def __enter__(self):
        try:
            self._container = self._opener()
        except FileNotFoundError as exc:
            raise InvalidVideoError("The video file does not exist.", reason=_reason(exc)) from exc
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidVideoError(
                "The file could not be read as a video (unknown format or corrupt data).", reason=_reason(exc)
            ) from exc
        return self._container

    def __exit__(self, *exc_info):
        if self._container is not None:
            self._container.close()
        return False


def _reason(exc: Exception) -> str:
    """FFmpeg's short description of a failure, without file paths (they may reach API clients)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def _video_stream(container) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise InvalidVideoError("The file has no video stream.")
    return container.streams.video[0]


def _frame_rate(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return _FALLBACK_FPS


def _duration_s(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _too_long(duration: float, limits: DecodeLimits) -> ClipTooLongError:
    return ClipTooLongError(
        f"The clip lasts {duration:.1f} s; the limit is {limits.max_duration_s:.0f} s. "
        "Trim it to a walk of a few seconds.",
        duration_s=round(duration, 3),
        max_duration_s=limits.max_duration_s,
    )


def _count_packets(reopen) -> int:
    """Frame count by demuxing without decoding (one packet per video frame in common codecs)."""
    with _open_container(reopen) as container:
        stream = _video_stream(container)
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as exc:
            raise InvalidVideoError("The video data is corrupt.", reason=_reason(exc)) from exc


def _clockwise_degrees(frame: av.VideoFrame) -> int:
    """Rotation to display the frame upright; PyAV reports the display matrix counter-clockwise."""
    return round(-frame.rotation / 90.0) * 90 % 360


def _decode_selected(container, stream, wanted: np.ndarray, limits: DecodeLimits, rotation: int | None,
                     frame_side: int | None, threads: int):
    """Decode the stream, converting only the frames whose decode-order index is in `wanted`, into one
    preallocated (T, h, w, 3) array."""
    take_all = len(wanted) == 0  # frame count unknown even after demuxing: keep the first max_frames
    wanted_set = set(wanted.tolist())
    last_wanted = int(wanted[-1]) if len(wanted) else -1
    capacity = limits.max_frames if take_all else min(len(wanted), limits.max_frames)
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    converter = _RgbConverter(limits.max_side, frame_side, threads)
    frames: np.ndarray | None = None
    indices: list[int] = []
    applied = 0
    source_size = (0, 0)
    index = -1
    try:
        for index, frame in enumerate(container.decode(stream)):
            elapsed = None if frame.time is None else frame.time - start
            if elapsed is not None and elapsed > limits.max_duration_s:
                if limits.on_too_long == "reject":  # a stream whose header did not state its length
                    raise _too_long(elapsed, limits)
                break
            if not take_all and index > last_wanted:
                break
            if not take_all and index not in wanted_set:
                continue
            applied = (rotation % 360) if rotation is not None else _clockwise_degrees(frame)
            rgb = converter.convert(frame, applied)
            if frames is None:
                frames = np.empty((capacity, *rgb.shape), np.uint8)
            if rgb.shape != frames.shape[1:]:  # a stream that changes size mid-way: keep the first size
                rgb = cv2.resize(rgb, (frames.shape[2], frames.shape[1]), interpolation=cv2.INTER_AREA)
            frames[len(indices)] = rgb
            indices.append(index)
            source_size = _upright_size(frame.width, frame.height, applied)
            if len(indices) >= capacity:
                break
    except av.FFmpegError as exc:
        if not indices:
            raise InvalidVideoError(
                "The video data is corrupt: no frame could be decoded.", reason=_reason(exc)
            ) from exc
        # A truncated upload: keep what decoded cleanly rather than refusing the whole clip.
        log.warning("decoding stopped after frame %d: %s", index, exc)
    if frames is None or not indices:
        raise InvalidVideoError("The video has no decodable frames.")
    return frames[:len(indices)], indices, applied, source_size


class _RgbConverter:
    """Decoded frames -> upright RGB arrays at the frame coordinates' size, or smaller at `frame_side`.

    A shrink is done by swscale's area filter in the stream's own YUV layout, then converted to RGB
    at the small size: both steps touch the full-size picture once, at ~0.5 ms a 720p frame, where
    a full-size RGB copy shrunk by OpenCV costs ~3 ms (and converting YUV to RGB while scaling goes
    through swscale's slower generic path, with a colour shift of about a grey level). Each step keeps
    one scaler context for the whole clip.
    """

    def __init__(self, max_side: int, frame_side: int | None, threads: int):
        self.max_side = max_side
        self.frame_side = frame_side
        self.threads = threads
        self.shrink = VideoReformatter()
        self.to_rgb = VideoReformatter()

    def convert(self, frame: av.VideoFrame, clockwise: int) -> np.ndarray:
        width, height = scaled_size(frame.width, frame.height, self.max_side)
        if self.frame_side is not None and max(width, height) > self.frame_side:
            width, height = scaled_size(width, height, self.frame_side)
            if frame.format.name.startswith("yuv"):
                frame = self.shrink.reformat(frame, width=width, height=height, interpolation="AREA",
                                             threads=self.threads)
                rgb = self.to_rgb.reformat(frame, format="rgb24", threads=self.threads).to_ndarray()
            else:  # palette, RGB or grey sources: straight to RGB
                rgb = self.to_rgb.reformat(frame, width=width, height=height, format="rgb24",
                                           interpolation="AREA", threads=self.threads).to_ndarray()
        else:
            rgb = self.to_rgb.reformat(frame, width=width, height=height, format="rgb24",
                                       threads=self.threads).to_ndarray()
        if clockwise:
            rgb = np.rot90(rgb, k=-(clockwise // 90))  # negative k turns clockwise; copied by the caller
        return rgb


def _upright_size(width: int, height: int, clockwise: int) -> tuple[int, int]:
    return (height, width) if clockwise in (90, 270) else (width, height)

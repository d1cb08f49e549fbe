"""Video decoding with PyAV: any container/codec FFmpeg reads, upright, size- and length-capped.

What `decode_video` guarantees:
- frames are RGB uint8 and upright: the stream's display matrix (phone videos recorded in portrait
  are often stored landscape plus a rotation) is applied, or an explicit `rotation` override;
- the longer side is at most `max_side` (scaled by FFmpeg's swscale together with the RGB
  conversion, which is cheaper than resizing afterwards);
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
import numpy as np

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
) -> Clip:
    """Decode `source` (a path, the file's bytes, or a binary file object) into a `Clip`.

    `rotation`: degrees clockwise (0/90/180/270) to apply instead of the stream's display matrix,
    for footage stored rotated without metadata. `threads`: FFmpeg decoder threads (0 = FFmpeg
    decides).
    """
    if limits.max_frames < 1 or limits.max_side < 16 or limits.max_duration_s <= 0:
        raise ValueError(f"unusable decode limits: {limits}")
    if rotation is not None and rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    reopen = _opener(source)
    with _open_container(reopen) as container:
        stream = _video_stream(container)
        fps = _frame_rate(stream)
        duration = _duration_s(container, stream)
        if duration is not None and duration > limits.max_duration_s and limits.on_too_long == "reject":
            raise _too_long(duration, limits)
        total = stream.frames or (round(duration * fps) if duration else 0)
    if not total:
        total = _count_packets(reopen)  # containers without a frame count or duration: demux only
    if limits.on_too_long == "truncate":
        total = min(total, max(1, int(limits.max_duration_s * fps)))
    wanted = even_sample(total, limits.max_frames)
    with _open_container(reopen) as container:
        stream = _video_stream(container)
        stream.codec_context.thread_count = max(0, int(threads))
        stream.codec_context.thread_type = "AUTO"
        frames, indices, applied, source_size = _decode_selected(
            container, stream, wanted, limits, rotation
        )
    return Clip(
        frames=np.stack(frames),
        frame_indices=np.asarray(indices, np.int64),
        fps=fps,
        source_size=source_size,
        rotation=applied,
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


def _decode_selected(container, stream, wanted: np.ndarray, limits: DecodeLimits, rotation: int | None):
    """Decode the stream, converting only the frames whose decode-order index is in `wanted`."""
    take_all = len(wanted) == 0  # frame count unknown even after demuxing: keep the first max_frames
    wanted_set = set(wanted.tolist())
    last_wanted = int(wanted[-1]) if len(wanted) else -1
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    frames: list[np.ndarray] = []
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
            frames.append(_to_rgb(frame, limits.max_side, applied))
            indices.append(index)
            source_size = _upright_size(frame.width, frame.height, applied)
            if len(frames) >= limits.max_frames:
                break
    except av.FFmpegError as exc:
        if not frames:
            raise InvalidVideoError(
                "The video data is corrupt: no frame could be decoded.", reason=_reason(exc)
            ) from exc
        # A truncated upload: keep what decoded cleanly rather than refusing the whole clip.
        log.warning("decoding stopped after frame %d: %s", index, exc)
    if not frames:
        raise InvalidVideoError("The video has no decodable frames.")
    return frames, indices, applied, source_size


def _to_rgb(frame: av.VideoFrame, max_side: int, clockwise: int) -> np.ndarray:
    width, height = scaled_size(frame.width, frame.height, max_side)
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    if clockwise:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=-(clockwise // 90)))  # negative k turns clockwise
    return rgb


def _upright_size(width: int, height: int, clockwise: int) -> tuple[int, int]:
    return (height, width) if clockwise in (90, 270) else (width, height)

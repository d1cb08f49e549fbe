"""Shared by /enroll and /identify: take an uploaded video through the clip pipeline, off the
event loop, at most `max_concurrent_clips` at a time."""

from __future__ import annotations

import time

import anyio
from fastapi import UploadFile

from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.middleware import MB
from service.pipeline.pipeline import ClipProcessor, ClipResult
from service.settings import HttpSettings


def check_upload(video: UploadFile, settings: HttpSettings) -> None:
    """The exact size limit of the video part (the body limit in service.middleware stops oversized
    uploads while they stream; this catches a video just over the limit inside a body under it)."""
    limit = int(settings.max_upload_mb * MB)
    size = video.size
    if size is None:  # not set by older Starlette: measure the spooled file
        video.file.seek(0, 2)
        size = video.file.tell()
        video.file.seek(0)
    if size > limit:
        raise ApiError(413, "upload_too_large",
                       f"The video is {size / MB:.1f} MB; this server accepts at most {settings.max_upload_mb:g} MB. "
                       "Send a shorter clip or one at a lower resolution.",
                       {"size_bytes": size, "limit_bytes": limit})
    if size == 0:
        raise ApiError(415, "invalid_video", "The uploaded video file is empty.", {"size_bytes": 0})


async def process_upload(
    video: UploadFile,
    settings: HttpSettings,
    pipeline: ClipProcessor,
    limiter: anyio.CapacityLimiter,
    metrics: ServiceMetrics,
) -> tuple[ClipResult, dict[str, float]]:
    """Run the pipeline on the upload; returns the result and extra request timings (seconds)."""
    check_upload(video, settings)
    queued = time.perf_counter()
    async with limiter:  # wait our turn without holding a thread
        waited = time.perf_counter() - queued
        video.file.seek(0)
        # The spooled upload (memory up to 1 MB, then a temporary file) goes to the decoder as a
        # file object: no second copy of the video.
        result = await anyio.to_thread.run_sync(pipeline.process, video.file)
    metrics.observe_stages(result.timings)
    metrics.tracks_per_clip.observe(len(result.sequences))
    return result, {"queue": waited}

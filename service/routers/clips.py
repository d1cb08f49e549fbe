"""Processed clips: shared by /enroll and /identify -- an uploaded video through the clip pipeline (off
the event loop, at most `max_concurrent_clips` at a time) or out of the clip cache when the same bytes
were processed a moment ago -- and GET of a kept clip's track thumbnails (role read)."""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Path, UploadFile
from fastapi.responses import Response
from pydantic import Field

from service.cameras import CAMERA_ID_PATTERN, CameraRegistry, Rotation
from service.clip_cache import CLIP_ID_PATTERN, ClipCache, ProcessedClip, clip_id_of, processed_clip
from service.deps import ClipCacheDep, ReaderDep
from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.middleware import MB
from service.pipeline import thumbnails
from service.pipeline.pipeline import ClipProcessor
from service.pipeline.types import ClipOverrides
from service.schemas import NULL_AS_NONE, error_responses
from service.settings import HttpSettings

router = APIRouter(tags=["clips"])

# A browser may keep a thumbnail while the clip is kept; it never changes under its URL.
THUMBNAIL_CACHE_CONTROL = "private, max-age=300"

# The form fields of /enroll and /identify that say how to process the clip.
CameraIdForm = Annotated[Annotated[str, Field(pattern=CAMERA_ID_PATTERN)] | None, NULL_AS_NONE, Form(
    description="the camera that filmed the clip: its rotation, background clip and region of interest apply "
                "(GET /cameras)")]
RotationForm = Annotated[Rotation | None, NULL_AS_NONE, Form(
    description="degrees clockwise (0, 90, 180, 270) to turn the frames, over the camera's rotation and the file's "
                "metadata (for footage stored sideways without saying so)")]


async def clip_overrides(cameras: CameraRegistry, gallery: str, camera_id: str | None,
                         rotation: int | None) -> ClipOverrides:
    """How to process the clip: its camera's settings and the request's rotation (404 for an unknown camera,
    before any video work)."""
    return await anyio.to_thread.run_sync(cameras.overrides, gallery, camera_id, rotation)


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
    cache: ClipCache,
    gallery: str,
    overrides: ClipOverrides,
) -> tuple[ProcessedClip, dict[str, float]]:
    """The processed clip of the upload, and the request's timings so far (seconds): out of the cache
    when the same bytes (with the same overrides) were processed a moment ago (only the lookup's time: a
    kept clip ran no stage for this request), else through the pipeline (its stages', then the hash's and
    the queue's)."""
    check_upload(video, settings)
    hashing = time.perf_counter()
    clip_id = await anyio.to_thread.run_sync(clip_id_of, video.file, overrides)
    if (kept := cache.uploaded_again(clip_id, gallery)) is not None:
        return kept, {"cache": time.perf_counter() - hashing}
    hashed = time.perf_counter()
    async with limiter:  # wait our turn without holding a thread
        waited = time.perf_counter() - hashed
        video.file.seek(0)
        # The spooled upload (memory up to 1 MB, then a temporary file) goes to the decoder as a
        # file object: no second copy of the video. Overrides go only where there are some (None: the
        # server's settings).
        result = await anyio.to_thread.run_sync(
            pipeline.process, video.file, None if overrides.is_default else overrides)
        processed = await anyio.to_thread.run_sync(processed_clip, clip_id, result, video.filename or "")
    metrics.observe_stages(result.timings)
    metrics.tracks_per_clip.observe(len(result.sequences))
    cache.put(processed, gallery)
    return processed, {**result.timings, "hash": hashed - hashing, "queue": waited}


@router.get(
    f"/clips/{{clip_id}}/tracks/{{track_id}}/thumbnail.{thumbnails.SUFFIX}",
    response_class=Response,
    responses={200: {"content": {thumbnails.MEDIA_TYPE: {}}, "description": "the track's strip of crops"},
               **error_responses({404: "the clip is not kept any more (clip_expired) or has no such track"})},
)
async def track_thumbnail(
    caller: ReaderDep,
    cache: ClipCacheDep,
    clip_id: Annotated[str, Path(pattern=CLIP_ID_PATTERN, description="the clip_id of an /identify or /enroll answer")],
    track_id: Annotated[int, Path(ge=1, le=1_000_000)],
) -> Response:
    """A track's picture: the person's crops over the walk, side by side, silhouette outlined (WebP). Served
    while the clip is kept (see `clip_id`), to callers of the gallery that uploaded it."""
    processed = cache.require(clip_id, caller.gallery)
    thumbnail = processed.thumbnails.get(track_id)
    if thumbnail is None:
        raise ApiError(404, "track_not_found", f"Clip {clip_id} has no track {track_id}.",
                       {"tracks": sorted(processed.thumbnails)})
    return Response(thumbnail, media_type=thumbnails.MEDIA_TYPE, headers={"Cache-Control": THUMBNAIL_CACHE_CONTROL})

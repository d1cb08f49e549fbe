"""POST /identify: who is walking in a clip? One answer per person track (any role). A gallery of
another model is refused before the clip pipeline runs."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from pydantic import Field

from gallery import ModelMismatchError
from service.deps import (
    CamerasDep,
    ClipCacheDep,
    ClipLimiterDep,
    GalleryDep,
    MetricsDep,
    PipelineDep,
    ReaderDep,
    SettingsDep,
    pipeline_model_id,
)
from service.routers.clips import CameraIdForm, RotationForm, check_upload, clip_overrides, process_upload
from service.schemas import (
    NULL_AS_NONE,
    IdentifyResponse,
    error_responses,
    ms,
    track_identification,
    video_info,
)

router = APIRouter(tags=["identify"])

_ERRORS = error_responses({
    404: "your gallery has no such camera (camera_not_found)",
    409: "the gallery holds embeddings of another model (re-embed it)",
    413: "upload or clip too long",
    415: "not a video this server can decode",
    422: "invalid field, nobody walking, or too few frames",
})


@router.post("/identify", response_model=IdentifyResponse, responses=_ERRORS)
async def identify(
    caller: ReaderDep,  # first: a caller without a valid key learns nothing else
    settings: SettingsDep,
    pipeline: PipelineDep,
    gallery: GalleryDep,
    limiter: ClipLimiterDep,
    metrics: MetricsDep,
    cache: ClipCacheDep,
    cameras: CamerasDep,
    video: Annotated[UploadFile, File(description="a clip of people walking (any format FFmpeg reads)")],
    top_k: Annotated[Annotated[int, Field(ge=1, le=100)] | None, NULL_AS_NONE,
                     Form(description="candidates per track (default: server's)")] = None,
    threshold: Annotated[Annotated[float, Field(ge=-1.0, le=1.0)] | None, NULL_AS_NONE,
                         Form(description="similarity below which a track is unknown (default: server's)")] = None,
    camera_id: CameraIdForm = None,
    rotation: RotationForm = None,
) -> IdentifyResponse:
    """For every person track in the clip: the top-k enrolled subjects with their similarity, the
    decision (a subject, or unknown when the best similarity is below the threshold), the margin of
    the best over the second, the track's quality and a thumbnail to check it by eye. Sending the same
    video again within the clip cache's time answers without running the pipeline again."""
    started = time.perf_counter()
    k = top_k or settings.gallery.top_k
    decision_threshold = gallery.threshold if threshold is None else threshold  # the gallery's: see startup
    namespace = caller.gallery
    check_upload(video, settings.http)
    overrides = await clip_overrides(cameras, namespace, camera_id, rotation)
    if (model_id := pipeline_model_id(pipeline)) is not None:
        status = await anyio.to_thread.run_sync(gallery.status, namespace)
        if status.needs_reembed(model_id):
            raise ModelMismatchError(namespace, str(status.model_id), model_id)
    processed, extra = await process_upload(video, settings.http, pipeline, limiter, metrics, cache, namespace,
                                            overrides)
    result = processed.result
    queries = np.stack([result.embeddings[s.track_id] for s in result.sequences])
    search_started = time.perf_counter()
    answers = await anyio.to_thread.run_sync(partial(
        gallery.search, queries, model_id=str(result.model_id), namespace=namespace, top_k=k,
        threshold=decision_threshold,
    ))
    timings = {**extra, "search": time.perf_counter() - search_started,
               "request": time.perf_counter() - started}
    tracks = [track_identification(s, a, processed) for s, a in zip(result.sequences, answers)]
    for track in tracks:
        metrics.decisions.labels("unknown" if track.unknown else "known").inc()
    return IdentifyResponse(
        clip_id=processed.clip_id, model_id=str(result.model_id), threshold=decision_threshold, top_k=k,
        video=video_info(processed),
        tracks=tracks, dropped_tracks=int(result.dropped_tracks), timings_ms=ms(timings),
    )

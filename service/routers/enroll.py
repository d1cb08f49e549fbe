"""POST /enroll: add the person walking in a clip to the caller's gallery."""

from __future__ import annotations

import json
import time
import unicodedata
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, File, Form, UploadFile

from gallery import MAX_DISPLAY_NAME_CHARS, MAX_ID_CHARS, SequenceInput
from service.deps import (
    ClipLimiterDep,
    GalleryDep,
    MetricsDep,
    NamespaceDep,
    PipelineDep,
    SettingsDep,
)
from service.errors import ApiError
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence
from service.routers.clips import process_upload
from service.schemas import EnrollResponse, error_responses, ms, track_detail, track_summary, video_info

router = APIRouter(tags=["enroll"])

_ERRORS = error_responses({
    401: "missing or invalid API key",
    409: "several people in the clip (choose one with track_id; details.tracks lists them), "
         "the subject exists (if_exists=error), or the gallery holds another model's embeddings",
    413: "upload or clip too long",
    415: "not a video this server can decode",
    422: "invalid field, nobody walking, too few frames, or an unknown track_id",
    503: "models or gallery not ready (see /readyz)",
})


@router.post("/enroll", status_code=201, response_model=EnrollResponse, responses=_ERRORS)
async def enroll(
    namespace: NamespaceDep,  # first: a caller without a valid key learns nothing else
    settings: SettingsDep,
    pipeline: PipelineDep,
    gallery: GalleryDep,
    limiter: ClipLimiterDep,
    metrics: MetricsDep,
    video: Annotated[UploadFile, File(description="a clip of the person walking (any format FFmpeg reads)")],
    subject_id: Annotated[str, Form(min_length=1, max_length=MAX_ID_CHARS, description="your id for this person")],
    display_name: Annotated[str | None, Form(max_length=MAX_DISPLAY_NAME_CHARS)] = None,
    metadata: Annotated[str | None, Form(description="a JSON object stored with the subject")] = None,
    track_id: Annotated[int | None, Form(description="which person to enroll when the clip shows several")] = None,
    if_exists: Annotated[
        Literal["append", "replace", "error"],
        Form(description="subject already enrolled: add this walk, replace its walks, or fail"),
    ] = "append",
) -> EnrollResponse:
    """Enroll the walking person of the clip as `subject_id`.

    A clip with one usable person track is enrolled directly. With several, the answer is 409 with
    the tracks in `details.tracks`: send the request again with the chosen `track_id`.
    Nothing in the gallery changes when the request fails.
    """
    started = time.perf_counter()
    _check_subject_id(subject_id)
    subject_metadata = _parse_metadata(metadata)
    result, extra = await process_upload(video, settings.http, pipeline, limiter, metrics)
    sequence = choose_track(result, track_id)
    sequence_input = SequenceInput.from_aligned(
        sequence, result.embeddings[sequence.track_id],
        metadata={"source": video.filename or "", "track_id": int(sequence.track_id),
                  "first_frame": int(sequence.frame_indices.min()), "last_frame": int(sequence.frame_indices.max()),
                  "fps": float(result.fps)},
    )
    write_started = time.perf_counter()
    enrolled = await anyio.to_thread.run_sync(partial(
        gallery.enroll, subject_id, [sequence_input], model_id=str(result.model_id), display_name=display_name,
        metadata=subject_metadata, namespace=namespace, if_exists=if_exists,
    ))
    subject = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=namespace))
    timings = {**result.timings, **extra, "gallery": time.perf_counter() - write_started,
               "request": time.perf_counter() - started}
    return EnrollResponse(
        subject_id=subject.subject_id, display_name=subject.display_name, created=enrolled.created,
        sequence_id=enrolled.sequence_ids[0], replaced_sequence_ids=list(enrolled.replaced_sequence_ids),
        sequence_count=subject.sequence_count, model_id=str(result.model_id), track=track_detail(sequence),
        candidate_tracks=len(result.sequences), video=video_info(result), timings_ms=ms(timings),
    )


def choose_track(result: ClipResult, track_id: int | None) -> AlignedSequence:
    """The track to enroll: the only one, or the one the caller chose."""
    tracks = [track_summary(s).model_dump() for s in result.sequences]
    if track_id is not None:
        for sequence in result.sequences:
            if sequence.track_id == track_id:
                return sequence
        raise ApiError(422, "track_not_found",
                       f"The clip has no usable person track {track_id}; choose one of "
                       f"{[t['track_id'] for t in tracks]}.", {"tracks": tracks})
    if len(result.sequences) > 1:
        raise ApiError(409, "multiple_tracks",
                       f"The clip shows {len(tracks)} people. Send the request again with track_id set to the "
                       "person to enroll (details.tracks lists each track's frames and median box).",
                       {"tracks": tracks})
    return result.sequences[0]


def _check_subject_id(subject_id: str) -> None:
    # The gallery enforces the same rule; checking first saves running the pipeline for nothing.
    if subject_id != subject_id.strip() or any(unicodedata.category(c).startswith("C") for c in subject_id):
        raise ApiError(422, "invalid_subject_id",
                       "subject_id must not have surrounding spaces or control characters.",
                       {"subject_id": subject_id})


def _parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiError(422, "invalid_metadata", f"metadata is not valid JSON: {error.msg} at position {error.pos}.")
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_metadata",
                       f"metadata must be a JSON object such as {{\"team\": \"blue\"}}, not a {type(value).__name__}.")
    return value

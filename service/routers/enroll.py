"""POST /enroll: add the person walking in a clip to the caller's gallery (role enroll).

Fail fast: everything that needs no video is checked before the clip pipeline runs -- the key and its
role, the subject id (gallery.subject_ids), display name, metadata (gallery.metadata: size and depth
on the text, before parsing), track_id bounds, if_exists=error on an existing subject, the gallery's
model against the server's, the upload's size -- so a request that must fail costs no decoding.
The gallery checks all of it again in the enrollment's transaction (another request may have enrolled
the subject meanwhile).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, File, Form, UploadFile
from pydantic import Field

from gallery import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_ID_CHARS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    Gallery,
    ModelMismatchError,
    SequenceInput,
    SubjectExistsError,
    check_new_subject_id,
    metadata_from_json,
)
from gallery.subject_ids import RULE
from gallery.validation import check_display_name
from service.deps import (
    AuditDep,
    ClipLimiterDep,
    EnrollerDep,
    GalleryDep,
    MetricsDep,
    PipelineDep,
    SettingsDep,
    pipeline_model_id,
)
from service.errors import ApiError
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence
from service.routers.clips import check_upload, process_upload
from service.schemas import (
    NULL_AS_NONE,
    EnrollResponse,
    error_responses,
    ms,
    track_detail,
    track_summary,
    video_info,
)

router = APIRouter(tags=["enroll"])

# ByteTrack numbers tracks from 1; no clip within the frame limits makes a million of them.
MAX_TRACK_ID = 1_000_000
MAX_SOURCE_NAME_CHARS = 255

_ERRORS = error_responses({
    409: "several people in the clip (choose one with track_id; details.tracks lists them), "
         "the subject exists (if_exists=error), or the gallery holds another model's embeddings",
    413: "upload or clip too long",
    415: "not a video this server can decode",
    422: "invalid field (subject id, metadata, track_id...), nobody walking, too few frames, or an unknown track_id",
})


@router.post("/enroll", status_code=201, response_model=EnrollResponse, responses=_ERRORS)
async def enroll(
    caller: EnrollerDep,  # first: a caller without a valid key or role learns nothing else
    audit_context: AuditDep,
    settings: SettingsDep,
    pipeline: PipelineDep,
    gallery: GalleryDep,
    limiter: ClipLimiterDep,
    metrics: MetricsDep,
    video: Annotated[UploadFile, File(description="a clip of the person walking (any format FFmpeg reads)")],
    subject_id: Annotated[str, Form(min_length=1, max_length=MAX_ID_CHARS, description=f"your id for this person: {RULE}")],
    display_name: Annotated[Annotated[str, Field(max_length=MAX_DISPLAY_NAME_CHARS)] | None, NULL_AS_NONE,
                            Form(description="a name to show (default: the subject id)")] = None,
    metadata: Annotated[str | None, NULL_AS_NONE, Form(
        description=f"a JSON object stored with the subject (at most {MAX_METADATA_BYTES} bytes, nested at most "
                    f"{MAX_METADATA_DEPTH} levels)")] = None,
    track_id: Annotated[Annotated[int, Field(ge=1, le=MAX_TRACK_ID)] | None, NULL_AS_NONE,
                        Form(description="which person to enroll when the clip shows several")] = None,
    if_exists: Annotated[
        Literal["append", "replace", "error"],
        Form(description="subject already enrolled: add this walk, replace its walks, or fail"),
    ] = "append",
) -> EnrollResponse:
    """Enroll the walking person of the clip as `subject_id`.

    A clip with one usable person track is enrolled directly. With several, the answer is 409 with
    the tracks in `details.tracks`: send the request again with the chosen `track_id`.
    Nothing in the gallery changes when the request fails; what succeeds is in the audit log.
    """
    started = time.perf_counter()
    subject_id = check_new_subject_id(subject_id)
    if display_name is not None:
        check_display_name(display_name)
    subject_metadata = None if metadata is None or not metadata.strip() else metadata_from_json(metadata)
    check_upload(video, settings.http)
    await anyio.to_thread.run_sync(partial(
        _check_gallery, gallery, caller.gallery, subject_id, if_exists, pipeline_model_id(pipeline)))

    result, extra = await process_upload(video, settings.http, pipeline, limiter, metrics)
    sequence = choose_track(result, track_id)
    sequence_input = SequenceInput.from_aligned(
        sequence, result.embeddings[sequence.track_id],
        metadata={"source": (video.filename or "")[:MAX_SOURCE_NAME_CHARS], "track_id": int(sequence.track_id),
                  "first_frame": int(sequence.frame_indices.min()), "last_frame": int(sequence.frame_indices.max()),
                  "fps": float(result.fps)},
    )
    write_started = time.perf_counter()
    enrolled = await anyio.to_thread.run_sync(partial(
        gallery.enroll, subject_id, [sequence_input], model_id=str(result.model_id), display_name=display_name,
        metadata=subject_metadata, namespace=caller.gallery, if_exists=if_exists, audit_context=audit_context,
    ))
    subject = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=caller.gallery))
    timings = {**result.timings, **extra, "gallery": time.perf_counter() - write_started,
               "request": time.perf_counter() - started}
    return EnrollResponse(
        subject_id=subject.subject_id, display_name=subject.display_name, created=enrolled.created,
        sequence_id=enrolled.sequence_ids[0], replaced_sequence_ids=list(enrolled.replaced_sequence_ids),
        sequence_count=subject.sequence_count, model_id=str(result.model_id), track=track_detail(sequence),
        candidate_tracks=len(result.sequences), video=video_info(result), timings_ms=ms(timings),
    )


def _check_gallery(gallery: Gallery, namespace: str, subject_id: str, if_exists: str, model_id: str | None) -> None:
    """The gallery's answers that need no video: the subject exists (if_exists=error), the gallery holds
    another model's embeddings."""
    if if_exists == "error" and gallery.has_subject(subject_id, namespace=namespace):
        raise SubjectExistsError(subject_id, namespace)
    if model_id is not None:
        status = gallery.status(namespace)
        if status.needs_reembed(model_id):
            raise ModelMismatchError(namespace, str(status.model_id), model_id)


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

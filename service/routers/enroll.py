"""POST /enroll: add the person walking in a clip to the caller's gallery (role enroll).

The clip is an upload (`video`), or one processed a moment ago (`clip_id` from a 409 or an /identify
answer, kept in service.clip_cache): choosing a track after a 409 runs no pipeline again, nor does a
repeat upload of the same bytes.

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
from service.clip_cache import CLIP_ID_PATTERN, ProcessedClip
from service.deps import (
    AuditDep,
    CamerasDep,
    ClipCacheDep,
    ClipLimiterDep,
    EnrollerDep,
    GalleryDep,
    MetricsDep,
    PipelineDep,
    SettingsDep,
    pipeline_model_id,
)
from service.errors import ApiError
from service.pipeline.types import AlignedSequence
from service.routers.clips import CameraIdForm, RotationForm, check_upload, clip_overrides, process_upload
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
    404: "clip_id names no clip kept for your gallery (clip_expired): upload the video again; or no such camera",
    409: "several people in the clip (choose one with clip_id + track_id; details.tracks lists them), "
         "the subject exists (if_exists=error), or the gallery holds another model's embeddings",
    413: "upload or clip too long",
    415: "not a video this server can decode",
    422: "invalid field (subject id, metadata, track_id...), neither or both of video and clip_id, nobody walking, "
         "too few frames, or an unknown track_id",
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
    cache: ClipCacheDep,
    cameras: CamerasDep,
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
    video: Annotated[UploadFile | None, File(
        description="a clip of the person walking (any format FFmpeg reads); or give clip_id")] = None,
    clip_id: Annotated[Annotated[str, Field(pattern=CLIP_ID_PATTERN)] | None, NULL_AS_NONE, Form(
        description="instead of a video: a clip processed a moment ago (the clip_id of a 409 or an /identify "
                    "answer), with track_id; no pipeline runs again (camera_id and rotation are then those it "
                    "was processed with)")] = None,
    camera_id: CameraIdForm = None,
    rotation: RotationForm = None,
) -> EnrollResponse:
    """Enroll the walking person of the clip as `subject_id`.

    A clip with one usable person track is enrolled directly. With several, the answer is 409 with
    the tracks in `details.tracks` (each with a thumbnail) and the clip's `details.clip_id`: send
    `clip_id` and the chosen `track_id` (no video) to enroll that person without processing the clip again.
    Nothing in the gallery changes when the request fails; what succeeds is in the audit log.
    """
    started = time.perf_counter()
    subject_id = check_new_subject_id(subject_id)
    if display_name is not None:
        check_display_name(display_name)
    subject_metadata = None if metadata is None or not metadata.strip() else metadata_from_json(metadata)
    if (video is None) == (clip_id is None):
        raise ApiError(422, "invalid_request", "Send either a video or the clip_id of a clip processed a moment "
                       "ago (with track_id), not both and not neither.",
                       {"errors": [{"field": "video", "problem": "give exactly one of video and clip_id"}]})
    if video is not None:
        check_upload(video, settings.http)
        overrides = await clip_overrides(cameras, caller.gallery, camera_id, rotation)
    await anyio.to_thread.run_sync(partial(
        _check_gallery, gallery, caller.gallery, subject_id, if_exists, pipeline_model_id(pipeline)))

    if video is not None:
        processed, extra = await process_upload(video, settings.http, pipeline, limiter, metrics, cache,
                                                caller.gallery, overrides)
    else:
        looked_up = time.perf_counter()
        processed = cache.require(clip_id, caller.gallery)
        extra = {"cache": time.perf_counter() - looked_up}
    result = processed.result
    sequence = choose_track(processed, track_id)
    sequence_input = SequenceInput.from_aligned(
        sequence, result.embeddings[sequence.track_id],
        metadata={"source": processed.source_name[:MAX_SOURCE_NAME_CHARS], "track_id": int(sequence.track_id),
                  "first_frame": int(sequence.frame_indices.min()), "last_frame": int(sequence.frame_indices.max()),
                  "fps": float(result.fps)},
    )
    write_started = time.perf_counter()
    enrolled = await anyio.to_thread.run_sync(partial(
        gallery.enroll, subject_id, [sequence_input], model_id=str(result.model_id), display_name=display_name,
        metadata=subject_metadata, namespace=caller.gallery, if_exists=if_exists, audit_context=audit_context,
    ))
    subject = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=caller.gallery))
    timings = {**extra, "gallery": time.perf_counter() - write_started,
               "request": time.perf_counter() - started}
    return EnrollResponse(
        subject_id=subject.subject_id, display_name=subject.display_name, created=enrolled.created,
        sequence_id=enrolled.sequence_ids[0], replaced_sequence_ids=list(enrolled.replaced_sequence_ids),
        sequence_count=subject.sequence_count, model_id=str(result.model_id), clip_id=processed.clip_id,
        track=track_detail(sequence, processed), candidate_tracks=len(result.sequences), video=video_info(processed),
        timings_ms=ms(timings),
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


def choose_track(processed: ProcessedClip, track_id: int | None) -> AlignedSequence:
    """The track to enroll: the only one, or the one the caller chose."""
    sequences = processed.result.sequences
    if track_id is None and len(sequences) <= 1:
        return sequences[0]
    if track_id is not None and (sequence := processed.sequence(track_id)) is not None:
        return sequence
    tracks = [track_summary(s, processed).model_dump() for s in sequences]
    if track_id is not None:
        raise ApiError(422, "track_not_found",
                       f"The clip has no usable person track {track_id}; choose one of "
                       f"{[t['track_id'] for t in tracks]}.", {"tracks": tracks, "clip_id": processed.clip_id})
    raise ApiError(409, "multiple_tracks",
                   f"The clip shows {len(tracks)} people. Send clip_id and track_id (no video) to enroll one of "
                   "them without processing the clip again (details.tracks lists each track's frames, median "
                   "box, thumbnail and quality).",
                   {"tracks": tracks, "clip_id": processed.clip_id})

"""Request and response bodies of the HTTP API (pydantic), and their builders from pipeline and
gallery records. Times are in milliseconds, boxes are [x1, y1, x2, y2] pixels of the upright video
as decoded (see `video.size`), frame indices refer to the source stream, instants are UTC.

A processed clip is known by its `clip_id` (service.clip_cache: the content hash of the uploaded
bytes, with the processing overrides when any) and kept for a while: each track's `thumbnail_url`
serves its picture meanwhile, and /enroll takes `clip_id` + `track_id` instead of the video."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field

from gallery import (
    ROLES,
    ApiKeyRecord,
    AuditEntry,
    Candidate,
    GalleryStatus,
    Identification,
    SequenceRecord,
    SubjectIdProblem,
    SubjectRecord,
    SubjectSummary,
)
from gallery.api_keys import KEY_NAME_PATTERN, Role
from service.cameras import Camera
from service.clip_cache import ProcessedClip
from service.pipeline import thumbnails
from service.pipeline.quality import TrackQuality
from service.pipeline.types import AlignedSequence

Box = tuple[float, float, float, float]


def _null_as_none(value: Any) -> Any:
    return None if value == "null" else value


# Multipart has no null: in an optional form field the text `null` means "not given", as JSON's null would
# (what OpenAPI clients send for a nullable field). Put it beside the field's type:
# Annotated[Annotated[int, Field(ge=1)] | None, NULL_AS_NONE, Form()] -- bounds inside, on the non-null type.
NULL_AS_NONE = BeforeValidator(_null_as_none)


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: str = Field(description="stable machine-readable code, e.g. no_person, clip_too_long")
    message: str = Field(description="what went wrong and what to do about it")
    details: dict[str, Any] = Field(default_factory=dict)


def error_responses(why: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route: each status answers an ErrorBody, with why it happens."""
    return {status: {"model": ErrorBody, "description": reason} for status, reason in why.items()}


# -- clips and tracks -----------------------------------------------------------------------------
class VideoInfo(BaseModel):
    frames: int = Field(description="frames analysed (evenly sampled when the clip is longer than the limit)")
    fps: float
    size: tuple[int, int] = Field(description="(width, height) of the analysed frames; boxes refer to it")
    source_size: tuple[int, int] = Field(description="(width, height) of the upright source video")
    rotation: int = Field(description="degrees clockwise applied: the video's rotation metadata, or the camera's "
                                      "or request's rotation when given")
    sampled_from: int | None = Field(
        None, description="frames in the source when they were thinned (evenly) to `frames`; null when all were used")


class TrackQualityOut(BaseModel):
    """How far the track can be trusted (service.pipeline.quality)."""

    frames_used: int = Field(description="aligned frames the gait signature was made from")
    mask_coverage: float = Field(description="mean share (0..1) of the person's box the silhouette fills")
    frames_cut_at_border: int = Field(description="the track's frames dropped because the person touched the edge")
    person_height_px: float = Field(description="median height of the person's box, in pixels of `video.size`")
    walk_seconds: float = Field(description="time from the first used frame to the last")
    warnings: list[str] = Field(description="plain-language reasons to doubt an answer from this track; empty if none")


class TrackSummary(BaseModel):
    """A person track, short form: enough to choose one (see /enroll's clip_id + track_id)."""

    track_id: int
    frames: int
    first_frame: int
    last_frame: int
    median_box: Box = Field(description="median [x1, y1, x2, y2] over the track")
    thumbnail_url: str | None = Field(
        description="an image (WebP) strip of the person's crops with the silhouette outlined, served (with the caller's key) "
                    "while the clip is kept; then 404 clip_expired. Null when the server keeps no clips")
    quality: TrackQualityOut


class TrackDetail(TrackSummary):
    frame_indices: list[int]
    boxes: list[Box]


class CandidateOut(BaseModel):
    subject_id: str
    display_name: str
    similarity: float = Field(description="mean per-part cosine similarity in [-1, 1]")
    sequence_id: int = Field(description="the subject's enrolled sequence that matched best")


class TrackIdentification(BaseModel):
    track: TrackDetail
    subject_id: str | None = Field(description="the identified subject, or null when unknown")
    display_name: str | None
    unknown: bool = Field(description="true when no enrolled subject is similar enough (best < threshold)")
    similarity: float | None = Field(description="similarity of the best candidate (null: empty gallery)")
    margin: float | None = Field(
        description="the best candidate's similarity minus the second's (null: fewer than two candidates)")
    candidates: list[CandidateOut] = Field(description="top-k subjects, best first, each once")
    timings_ms: dict[str, float] = Field(description="this track's own stage times")


class IdentifyResponse(BaseModel):
    clip_id: str = Field(description="the processed clip (its thumbnails are served while it is kept)")
    model_id: str
    threshold: float
    top_k: int
    video: VideoInfo
    tracks: list[TrackIdentification] = Field(description="one answer per person track, longest track first")
    dropped_tracks: int = Field(description="tracks found but too short or too small to analyse")
    timings_ms: dict[str, float] = Field(description="time per stage for the whole request")


class EnrollResponse(BaseModel):
    subject_id: str
    display_name: str
    created: bool = Field(description="false when the sequence was added to an existing subject")
    sequence_id: int
    replaced_sequence_ids: list[int]
    sequence_count: int = Field(description="sequences the subject now has")
    model_id: str
    clip_id: str = Field(description="the processed clip the track came from")
    track: TrackDetail = Field(description="the person track that was enrolled")
    candidate_tracks: int = Field(description="usable person tracks in the clip")
    video: VideoInfo
    timings_ms: dict[str, float]


# -- cameras (their settings and stored record: service.cameras) ----------------------------------------
class CameraList(BaseModel):
    cameras: list[Camera] = Field(description="your gallery's cameras, by id")


# -- subjects -------------------------------------------------------------------------------------
class SequenceOut(BaseModel):
    sequence_id: int
    frames: int
    has_depth: bool
    model_ids: list[str]
    metadata: dict[str, Any]
    created_at: datetime


class SubjectOut(BaseModel):
    subject_id: str
    display_name: str
    metadata: dict[str, Any]
    sequence_count: int
    created_at: datetime
    updated_at: datetime


class SubjectDetail(SubjectOut):
    sequences: list[SequenceOut]


class SubjectList(BaseModel):
    subjects: list[SubjectOut]
    total: int = Field(description="subjects in your gallery")
    offset: int
    limit: int


class DeleteResponse(BaseModel):
    subject_id: str
    deleted_sequences: int = Field(description="sequences erased with their embeddings and index vectors")
    redacted_rescore_results: int | None = Field(
        None, description="re-scoring result records (GAITID_RESCORE_STATE) that named the subject and no longer "
                          "do (service.rescore.redact; the audit entry has the details); null when the service has "
                          "no re-scoring state")


class SubjectIdProblemOut(BaseModel):
    subject_id: str
    problem: str = Field(description="why the id breaks the subject-id rule")


class SubjectIdProblems(BaseModel):
    problems: list[SubjectIdProblemOut]


# -- the caller's gallery, its keys and audit log -------------------------------------------------------
class GalleryOut(BaseModel):
    gallery: str = Field(description="the gallery your key opens")
    role: Role = Field(description="what your key may do there")
    subjects: int
    sequences: int
    model_id: str | None = Field(description="model of the stored embeddings (null while empty)")
    server_model_id: str | None = Field(description="model this server embeds with (null: not loaded)")
    needs_reembed: bool = Field(description="true when the two differ: an admin re-embeds (POST /gallery/reembed)")


class ReembedResponse(BaseModel):
    old_model_id: str | None
    new_model_id: str
    embedded: int = Field(description="sequences embedded by this request")
    sequences: int = Field(description="sequences in the gallery when the new model took over")
    seconds: float


class KeyCreate(BaseModel):
    name: str = Field(pattern=KEY_NAME_PATTERN.pattern, description="shown in the audit log in place of the key")
    role: Role


class KeyOut(BaseModel):
    name: str
    role: Role
    source: str = Field(description="api (made over HTTP) | file | env (the operator's configuration)")
    created_at: datetime
    created_by: str


class KeyCreated(KeyOut):
    secret: str = Field(description="the key to send in X-API-Key; shown once, stored only as its sha256")


class KeyList(BaseModel):
    keys: list[KeyOut]
    roles: list[str] = Field(default=list(ROLES), description="each role includes the ones before it")


class AuditEntryOut(BaseModel):
    entry_id: int
    at: datetime
    actor: str = Field(description="the API key's name (never the key), or who acted outside HTTP")
    action: str
    subject_id: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntryOut] = Field(description="oldest first")
    total: int = Field(description="entries matching the filters")
    offset: int
    limit: int


# -- health ---------------------------------------------------------------------------------------
class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class CheckOut(BaseModel):
    name: str
    ok: bool
    detail: str
    fix: str | None = Field(None, description="the command or setting that fixes a failed check")


class ReadyResponse(BaseModel):
    ready: bool
    checks: list[CheckOut]


# -- builders -------------------------------------------------------------------------------------
def ms(timings_s: dict[str, float]) -> dict[str, float]:
    return {stage: round(seconds * 1000.0, 3) for stage, seconds in timings_s.items()}


def video_info(clip: ProcessedClip) -> VideoInfo:
    result = clip.result
    return VideoInfo(frames=result.frame_count, fps=round(float(result.fps), 3), size=tuple(result.size),
                     source_size=tuple(result.source_size), rotation=int(result.rotation),
                     sampled_from=result.sampled_from)


def _box(row: np.ndarray) -> Box:
    return tuple(round(float(v), 1) for v in row)  # type: ignore[return-value]


def thumbnail_url(clip_id: str, track_id: int) -> str:
    """Where GET serves a track's thumbnail (service.routers.clips)."""
    return f"/clips/{clip_id}/tracks/{track_id}/thumbnail.{thumbnails.SUFFIX}"


def quality_out(quality: TrackQuality) -> TrackQualityOut:
    return TrackQualityOut(frames_used=quality.frames_used, mask_coverage=quality.mask_coverage,
                           frames_cut_at_border=quality.frames_cut_at_border,
                           person_height_px=quality.person_height_px, walk_seconds=quality.walk_seconds,
                           warnings=list(quality.warnings))


def track_summary(sequence: AlignedSequence, clip: ProcessedClip) -> TrackSummary:
    indices = np.asarray(sequence.frame_indices)
    track_id = int(sequence.track_id)
    return TrackSummary(
        track_id=track_id, frames=len(indices),
        first_frame=int(indices.min()), last_frame=int(indices.max()),
        median_box=_box(np.median(np.asarray(sequence.boxes, np.float64), axis=0)),
        thumbnail_url=thumbnail_url(clip.clip_id, track_id) if clip.kept else None,
        quality=quality_out(clip.quality[track_id]),
    )


def track_detail(sequence: AlignedSequence, clip: ProcessedClip) -> TrackDetail:
    return TrackDetail(
        **track_summary(sequence, clip).model_dump(),
        frame_indices=[int(i) for i in sequence.frame_indices],
        boxes=[_box(b) for b in np.asarray(sequence.boxes)],
    )


def candidate_out(candidate: Candidate) -> CandidateOut:
    return CandidateOut(subject_id=candidate.subject_id, display_name=candidate.display_name,
                        similarity=round(float(candidate.score), 6), sequence_id=int(candidate.sequence_id))


def margin_of(candidates: list[Candidate]) -> float | None:
    """The best candidate's similarity minus the second's (candidates best first); None with fewer than two."""
    if len(candidates) < 2:
        return None
    return round(float(candidates[0].score) - float(candidates[1].score), 6)


def track_identification(sequence: AlignedSequence, answer: Identification, clip: ProcessedClip) -> TrackIdentification:
    best = answer.best
    return TrackIdentification(
        track=track_detail(sequence, clip),
        subject_id=answer.subject_id,
        display_name=best.display_name if answer.is_known and best else None,
        unknown=not answer.is_known,
        similarity=None if best is None else round(float(best.score), 6),
        margin=margin_of(list(answer.candidates)),
        candidates=[candidate_out(c) for c in answer.candidates],
        timings_ms=ms(sequence.timings),
    )


def sequence_out(record: SequenceRecord) -> SequenceOut:
    return SequenceOut(sequence_id=record.sequence_id, frames=record.frames, has_depth=record.has_depth,
                       model_ids=list(record.model_ids), metadata=record.metadata, created_at=record.created_at)


def subject_out(summary: SubjectSummary) -> SubjectOut:
    return SubjectOut(subject_id=summary.subject_id, display_name=summary.display_name,
                      metadata=summary.metadata, sequence_count=summary.sequence_count,
                      created_at=summary.created_at, updated_at=summary.updated_at)


def subject_detail(record: SubjectRecord) -> SubjectDetail:
    return SubjectDetail(**subject_out(record).model_dump(), sequences=[sequence_out(s) for s in record.sequences])


def subject_id_problem_out(problem: SubjectIdProblem) -> SubjectIdProblemOut:
    return SubjectIdProblemOut(subject_id=problem.subject_id, problem=problem.problem)


def gallery_out(status: GalleryStatus, role: str, server_model_id: str | None) -> GalleryOut:
    return GalleryOut(gallery=status.namespace, role=role, subjects=status.subjects, sequences=status.sequences,
                      model_id=status.model_id, server_model_id=server_model_id,
                      needs_reembed=server_model_id is not None and status.needs_reembed(server_model_id))


def key_out(record: ApiKeyRecord) -> KeyOut:
    return KeyOut(name=record.name, role=record.role, source=record.source,
                  created_at=datetime.fromtimestamp(record.created_at, tz=UTC), created_by=record.created_by)


def audit_entry_out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(entry_id=entry.entry_id, at=entry.at, actor=entry.actor, action=entry.action,
                         subject_id=entry.subject_id, request_id=entry.request_id, details=entry.details)

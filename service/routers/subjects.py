"""GET /subjects, GET /subjects/{id} (any role), DELETE /subjects/{id} (admin): the caller's enrolled
subjects. A deletion erases the subject's sequences, embeddings and index vectors, and is audited.
With GAITID_RESCORE_STATE set it first takes the subject out of the re-scoring results and reports
(service.rescore.redact): a person erased must not go on being named there. Redaction comes first so
that when it fails the subject is still enrolled and the deletion can simply be asked again (503);
its counts go into the erasure's audit entry.

`{subject_id}` is one path segment, matched exactly, then by its NFC form. Ids stored by older
versions that no URL path can carry (with `/`, `..`, control characters) are reached through
/admin/subject?subject_id=... (service.routers.admin)."""

from __future__ import annotations

from functools import partial
from pathlib import Path as FilePath
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query

from gallery import MAX_PAGE_OFFSET, AuditContext, Gallery
from gallery.subject_ids import MAX_LOOKUP_CHARS
from service.deps import AdminDep, AuditDep, GalleryDep, ReaderDep, SettingsDep
from service.errors import ApiError
from service.rescore import RescoreError, redact_subject
from service.schemas import (
    DeleteResponse,
    SubjectDetail,
    SubjectList,
    error_responses,
    subject_detail,
    subject_out,
)

router = APIRouter(prefix="/subjects", tags=["subjects"])

MAX_PAGE = 1000
_NOT_FOUND = error_responses({404: "no such subject in your gallery", 422: "invalid subject id"})
ERASE_ERRORS = error_responses({404: "no such subject in your gallery", 422: "invalid subject id",
                                503: "the re-scoring results could not be redacted: nothing was erased, retry"})
SubjectIdPath = Annotated[str, Path(min_length=1, max_length=MAX_LOOKUP_CHARS)]


@router.get("", response_model=SubjectList, responses=error_responses({422: "offset or limit out of bounds"}))
async def list_subjects(
    caller: ReaderDep,
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> SubjectList:
    """Enrolled subjects ordered by id, `limit` at a time."""
    summaries = await anyio.to_thread.run_sync(
        partial(gallery.list_subjects, namespace=caller.gallery, offset=offset, limit=limit)
    )
    status = await anyio.to_thread.run_sync(gallery.status, caller.gallery)
    return SubjectList(subjects=[subject_out(s) for s in summaries], total=status.subjects, offset=offset,
                       limit=limit)


@router.get("/{subject_id}", response_model=SubjectDetail, responses=_NOT_FOUND)
async def get_subject(subject_id: SubjectIdPath, caller: ReaderDep, gallery: GalleryDep) -> SubjectDetail:
    """One subject with its enrolled sequences."""
    record = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=caller.gallery))
    return subject_detail(record)


@router.delete("/{subject_id}", response_model=DeleteResponse, responses=ERASE_ERRORS)
async def delete_subject(subject_id: SubjectIdPath, caller: AdminDep, audit_context: AuditDep,
                         gallery: GalleryDep, settings: SettingsDep) -> DeleteResponse:
    """Erase the subject: its sequences (aligned silhouettes and depth), their embeddings and index
    vectors, and their name from the re-scoring results (with GAITID_RESCORE_STATE). The audit log
    records the erasure."""
    return await erase(gallery, subject_id, caller.gallery, audit_context, settings.gallery.rescore_state)


async def erase(gallery: Gallery, subject_id: str, namespace: str, audit_context: AuditContext,
                rescore_state: FilePath | None = None) -> DeleteResponse:
    """Redact the re-scoring results (when there is a state), delete, and answer with the id as
    stored (the look-up may have matched its NFC form)."""
    stored = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=namespace))
    redaction = None
    if rescore_state is not None:
        try:
            redaction = await anyio.to_thread.run_sync(partial(
                redact_subject, rescore_state, stored.subject_id, namespace=namespace))
        except (RescoreError, OSError) as exc:
            raise ApiError(503, "redaction_failed", "The re-scoring results could not be redacted, so the subject "
                           f"was not erased; ask again ({getattr(exc, 'message', None) or exc})") from exc
    deleted = await anyio.to_thread.run_sync(partial(
        gallery.delete_subject, stored.subject_id, namespace=namespace, audit_context=audit_context,
        audit_details=None if redaction is None else redaction.audit_details()))
    return DeleteResponse(subject_id=stored.subject_id, deleted_sequences=deleted,
                          redacted_rescore_results=None if redaction is None else redaction.records)

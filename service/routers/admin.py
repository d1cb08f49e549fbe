"""Admin paths for subject ids that no URL path segment can carry (stored by versions before the
subject-id rule of gallery.subject_ids: `a/b/c`, `..`, ids with control characters): the id travels
in the query string, which carries any text, and is matched exactly. Role admin.

    GET    /admin/subject-id-problems     the caller's stored ids that break the rule, and why
    GET    /admin/subject?subject_id=...  read one
    DELETE /admin/subject?subject_id=...  erase one (redacted from re-scoring results and audited like
                                          DELETE /subjects/{id})
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from gallery.subject_ids import MAX_LOOKUP_CHARS
from service.deps import AdminDep, AuditDep, GalleryDep, SettingsDep
from service.routers.subjects import ERASE_ERRORS, erase
from service.schemas import (
    DeleteResponse,
    SubjectDetail,
    SubjectIdProblems,
    error_responses,
    subject_detail,
    subject_id_problem_out,
)

router = APIRouter(prefix="/admin", tags=["admin"])

AnySubjectId = Annotated[str, Query(min_length=1, max_length=MAX_LOOKUP_CHARS,
                                    description="the stored id, exactly (URL-encode it)")]
_NOT_FOUND = error_responses({404: "no such subject in your gallery", 422: "invalid subject id"})


@router.get("/subject-id-problems", response_model=SubjectIdProblems)
async def subject_id_problems(caller: AdminDep, gallery: GalleryDep) -> SubjectIdProblems:
    """Stored subject ids of your gallery that break today's subject-id rule, with why."""
    problems = await anyio.to_thread.run_sync(gallery.subject_id_problems, caller.gallery)
    return SubjectIdProblems(problems=[subject_id_problem_out(p) for p in problems])


@router.get("/subject", response_model=SubjectDetail, responses=_NOT_FOUND)
async def get_any_subject(subject_id: AnySubjectId, caller: AdminDep, gallery: GalleryDep) -> SubjectDetail:
    """One subject, whatever its id."""
    record = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=caller.gallery))
    return subject_detail(record)


@router.delete("/subject", response_model=DeleteResponse, responses=ERASE_ERRORS)
async def delete_any_subject(subject_id: AnySubjectId, caller: AdminDep, audit_context: AuditDep,
                             gallery: GalleryDep, settings: SettingsDep) -> DeleteResponse:
    """Erase one subject, whatever its id (sequences, embeddings, index vectors, its name in the
    re-scoring results; audited)."""
    return await erase(gallery, subject_id, caller.gallery, audit_context, settings.gallery.rescore_state)

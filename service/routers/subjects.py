"""GET /subjects, GET /subjects/{id}, DELETE /subjects/{id}: the caller's enrolled subjects."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from service.deps import GalleryDep, NamespaceDep
from service.schemas import (
    DeleteResponse,
    SubjectDetail,
    SubjectList,
    error_responses,
    subject_detail,
    subject_out,
)

router = APIRouter(prefix="/subjects", tags=["subjects"])

_NOT_FOUND = error_responses({401: "missing or invalid API key", 404: "no such subject in your gallery"})


@router.get("", response_model=SubjectList, responses={401: _NOT_FOUND[401]})
async def list_subjects(
    namespace: NamespaceDep,
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SubjectList:
    """Enrolled subjects ordered by id, `limit` at a time."""
    summaries = await anyio.to_thread.run_sync(
        partial(gallery.list_subjects, namespace=namespace, offset=offset, limit=limit)
    )
    status = await anyio.to_thread.run_sync(gallery.status, namespace)
    return SubjectList(subjects=[subject_out(s) for s in summaries], total=status.subjects, offset=offset,
                       limit=limit)


# `:path` so that ids containing "/" (allowed by the gallery) can be addressed, URL-encoded or not.
@router.get("/{subject_id:path}", response_model=SubjectDetail, responses=_NOT_FOUND)
async def get_subject(subject_id: str, namespace: NamespaceDep, gallery: GalleryDep) -> SubjectDetail:
    """One subject with its enrolled sequences."""
    record = await anyio.to_thread.run_sync(partial(gallery.get_subject, subject_id, namespace=namespace))
    return subject_detail(record)


@router.delete("/{subject_id:path}", response_model=DeleteResponse, responses=_NOT_FOUND)
async def delete_subject(subject_id: str, namespace: NamespaceDep, gallery: GalleryDep) -> DeleteResponse:
    """Remove the subject, its sequences and embeddings (from the database and the index)."""
    deleted = await anyio.to_thread.run_sync(partial(gallery.delete_subject, subject_id, namespace=namespace))
    return DeleteResponse(subject_id=subject_id, deleted_sequences=deleted)

"""GET /gallery (any role): the caller's gallery -- its name, the key's role, sizes, and whether its
embeddings are another model's. POST /gallery/reembed (role admin): re-embed it with the server's
model from the stored aligned sequences (no footage needed; gallery.reembedding), audited."""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter

from service.deps import AdminDep, AuditDep, GalleryDep, ReaderDep, StateDep
from service.errors import ApiError
from service.schemas import GalleryOut, ReembedResponse, error_responses, gallery_out

router = APIRouter(prefix="/gallery", tags=["gallery"])


@router.get("", response_model=GalleryOut)
async def gallery_status(caller: ReaderDep, gallery: GalleryDep, state: StateDep) -> GalleryOut:
    """Your gallery: subjects, sequences, its model and the server's."""
    status = await anyio.to_thread.run_sync(gallery.status, caller.gallery)
    return gallery_out(status, caller.role, None if state.embedder is None else state.embedder.model_id)


@router.post("/reembed", response_model=ReembedResponse, responses=error_responses({422: "the model failed"}))
async def reembed(caller: AdminDep, audit_context: AuditDep, gallery: GalleryDep, state: StateDep) -> ReembedResponse:
    """Re-embed every stored sequence of your gallery with the server's model, then switch to it (one
    step: searches use the old model until then). Resumes where an interrupted run stopped."""
    embedder = state.embedder
    if embedder is None:
        raise ApiError(503, "not_ready", state.not_ready_message("embedding model"), {"see": "/readyz"})
    report = await anyio.to_thread.run_sync(partial(
        gallery.reembed, embedder, namespace=caller.gallery, audit_context=audit_context))
    return ReembedResponse(old_model_id=report.old_model_id, new_model_id=report.new_model_id,
                           embedded=report.embedded, sequences=report.sequences, seconds=round(report.seconds, 3))

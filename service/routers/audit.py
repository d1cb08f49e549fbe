"""GET /audit: the caller's gallery's audit log (role admin) -- every enrollment, erasure,
re-embedding and key change, and every camera change, who (key name) made it, when, under which
request id -- filtered and paged, oldest first. The gallery's own changes are written in their
transaction (gallery.audit); camera changes by service.cameras just before the change is made, under
the actions it names (CAMERA_ACTIONS), which the gallery knows nothing of."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from gallery import ACTIONS, MAX_PAGE_OFFSET
from service.cameras import CAMERA_ACTIONS
from service.deps import AdminDep, GalleryDep
from service.errors import ApiError
from service.schemas import AuditPage, audit_entry_out, error_responses

router = APIRouter(tags=["audit"])

MAX_PAGE = 1000
# The gallery's actions (gallery.audit) and the cameras' (service.cameras), as one Literal.
Action = Literal[ACTIONS + CAMERA_ACTIONS]  # type: ignore[valid-type]
Text = Annotated[str | None, Query(min_length=1, max_length=1024)]


def _iso_only(value: object) -> object:
    """pydantic reads a number as unix seconds; the document promises an ISO 8601 date-time."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z, not a number")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


Instant = Annotated[datetime, BeforeValidator(_iso_only)]


@router.get("/audit", response_model=AuditPage, responses=error_responses({422: "invalid filter or page"}))
async def audit_log(
    caller: AdminDep,
    gallery: GalleryDep,
    action: Annotated[Action | None, Query(description="only this kind of change")] = None,
    subject_id: Text = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=1024, description="an API key's name")] = None,
    request_id: Text = None,
    since: Annotated[Instant | None, Query(description="entries at or after this instant (no zone: UTC)")] = None,
    until: Annotated[Instant | None, Query(description="entries before this instant (no zone: UTC)")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPage:
    """Audit entries of your gallery matching every filter given, oldest first."""
    entries, total = await anyio.to_thread.run_sync(partial(
        gallery.audit_log, namespace=caller.gallery, action=action, subject_id=subject_id, actor=actor,
        request_id=request_id, since=_seconds(since, "since"), until=_seconds(until, "until"), offset=offset,
        limit=limit))
    return AuditPage(entries=[audit_entry_out(e) for e in entries], total=total, offset=offset, limit=limit)


def _seconds(instant: datetime | None, name: str) -> float | None:
    if instant is None:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    try:
        return instant.timestamp()
    except (OverflowError, ValueError, OSError) as error:
        raise ApiError(422, "invalid_request", f"{name} is out of range: {error}") from error

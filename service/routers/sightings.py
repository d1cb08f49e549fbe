"""GET /subjects/{id}/sightings (any role): where and when an enrolled subject of the caller's gallery
appears in the archive that `gaitid rescore` processed, and GET /archive/tracks/{sha256}/{track_id}/
thumbnail for each sighting's thumbnail. Enabled by GAITID_RESCORE_STATE (the re-scoring state
file or its folder); without it both answer 404 `no_archive`. The rule (filters, threshold, limit,
time order) is service.rescore.sightings'; the archive is the operator's, shared by every gallery.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from gallery.subject_ids import MAX_LOOKUP_CHARS
from service.deps import GalleryDep, ReaderDep, StateDep
from service.errors import ApiError
from service.rescore.errors import GalleryMismatchError, OptionError, RescoreError
from service.rescore.sightings import (
    MAX_LIMIT,
    SightingFilter,
    SightingsArchive,
    find_sightings,
    image_media_type,
    sighting_record,
    subject_walks,
)
from service.schemas import error_responses

router = APIRouter(tags=["sightings"])


class SightingOut(BaseModel):
    """One track of the archive similar to the subject."""

    video: str = Field(description="the video's path as re-scoring listed it")
    camera: str | None = Field(description="from the re-scoring's camera mapping or the path")
    start_time: str | None = Field(description="ISO 8601 time of the track's first frame (naive: the recorder's "
                                               "local time from the path; +00:00: UTC)")
    end_time: str | None
    time_source: str | None = Field(description="path | container | mtime: where the video's start time comes from")
    first_frame: int = Field(description="source-stream frame index of the track's first aligned frame")
    last_frame: int
    frames: int = Field(description="aligned frames of the track")
    fps: float | None
    start_s: float | None = Field(description="first_frame in seconds from the start of the video")
    end_s: float | None
    box: list[float] = Field(description="median person box, xyxy in the upright source video's pixels")
    similarity: float = Field(description="best similarity to any of the subject's enrolled walks")
    sequence_id: int = Field(description="the subject's enrolled sequence that matched best")
    sha256: str = Field(description="the video's content hash")
    track_id: int
    thumbnail_url: str = Field(description="the track's picture: JPEG of the person's crops over the walk "
                                           "(PNG silhouettes from states written before pictures were kept)")


class SightingList(BaseModel):
    subject_id: str
    display_name: str
    threshold: float
    limit: int
    archive_tracks: int = Field(description="tracks in the archive (all cameras and times)")
    sightings: list[SightingOut] = Field(description="in time order; tracks without a time last")


def get_archive(request: Request, state: StateDep) -> SightingsArchive:
    """The archive, opened on first use and closed with the app."""
    path = state.settings.gallery.rescore_state
    if path is None:
        raise ApiError(404, "no_archive", "This service has no re-scored archive: start it with GAITID_RESCORE_STATE "
                                          "set to a `gaitid rescore` state file or its folder.")
    archive = getattr(request.app.state, "sightings_archive", None)
    if archive is None:
        try:
            archive = SightingsArchive(path)
        except RescoreError as exc:
            raise ApiError(503, "archive_unavailable", exc.message) from exc
        request.app.state.sightings_archive = archive
        state.closers.append(archive)
    return archive


SubjectIdPath = Annotated[str, Path(min_length=1, max_length=MAX_LOOKUP_CHARS)]
_ERRORS = error_responses({404: "no such subject in your gallery, or no archive", 409: "the archive was "
                           "re-scored with another model", 422: "invalid filter", 503: "archive unavailable"})


@router.get("/subjects/{subject_id}/sightings", response_model=SightingList, responses=_ERRORS)
async def subject_sightings(
    request: Request,
    subject_id: SubjectIdPath,
    caller: ReaderDep,
    gallery: GalleryDep,
    state: StateDep,
    camera: Annotated[list[str] | None, Query(description="only these cameras (repeat the parameter)")] = None,
    since: Annotated[datetime | None, Query(description="only tracks starting at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="only tracks starting at or before (ISO 8601)")] = None,
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0, description="default: the gallery's")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="the most similar kept, then time-ordered")] = 100,
) -> SightingList:
    """Where and when the subject was seen: the archive's tracks most similar to their enrolled walks
    (at least `threshold`), filtered by camera and start time, the `limit` most similar, in time order."""
    archive = get_archive(request, state)
    chosen = gallery.threshold if threshold is None else threshold
    try:
        where = SightingFilter(cameras=frozenset(camera) if camera else None, since=since, until=until)
        walks = await anyio.to_thread.run_sync(partial(subject_walks, gallery, subject_id, namespace=caller.gallery))
        tracks = await anyio.to_thread.run_sync(archive.tracks, walks.model_id)
        found = await anyio.to_thread.run_sync(partial(find_sightings, tracks, walks, where, threshold=chosen,
                                                       limit=limit))
    except RescoreError as exc:
        raise _api_error(exc) from exc
    items = []
    for sighting in found:
        record = sighting_record(sighting)
        record["thumbnail_url"] = str(request.url_for("archive_track_thumbnail", sha256=sighting.track.sha256,
                                                      track_id=str(sighting.track.track_id)).path)
        items.append(SightingOut(**record))
    return SightingList(subject_id=walks.subject_id, display_name=walks.display_name, threshold=chosen, limit=limit,
                        archive_tracks=len(tracks.tracks), sightings=items)


@router.get("/archive/tracks/{sha256}/{track_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **error_responses({404: "no such track or no archive"})})
async def archive_track_thumbnail(request: Request, sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
                                  track_id: int, caller: ReaderDep, gallery: GalleryDep, state: StateDep) -> Response:
    """A track's thumbnail as the archive's re-scoring kept it (PNG or JPEG), for the model of the caller's gallery."""
    archive = get_archive(request, state)
    model_id = gallery.status(caller.gallery).model_id
    image = await anyio.to_thread.run_sync(archive.state.thumbnail, sha256, str(model_id), track_id) \
        if model_id else None
    if not image:
        raise ApiError(404, "track_not_found", "The archive has no such track (for your gallery's model).",
                       {"sha256": sha256, "track_id": track_id})
    return Response(image, media_type=image_media_type(image), headers={"Cache-Control": "private, max-age=3600"})


def _api_error(exc: RescoreError) -> ApiError:
    if isinstance(exc, GalleryMismatchError):
        return ApiError(409, exc.code, exc.message)
    if isinstance(exc, OptionError):
        return ApiError(422, exc.code, exc.message)
    return ApiError(503, "archive_unavailable", exc.message)

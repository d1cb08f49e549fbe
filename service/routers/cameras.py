"""The cameras resource: GET /cameras, GET/PUT/DELETE /cameras/{camera_id}, POST
/cameras/{camera_id}/background (service.cameras holds them). Reading needs role read; changing them
role admin, and every change is in the gallery's audit log (GET /audit?action=camera.updated, ...) with
the settings before and after, who (key name) and the request id, because a camera's settings decide
what the service sees. /enroll and /identify take `camera_id` to process a clip with its camera's settings."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Path, Response, UploadFile

from service.cameras import CAMERA_ID_PATTERN, Camera, CameraSettings, gallery_audit
from service.deps import AdminDep, AuditDep, CamerasDep, GalleryDep, ReaderDep, SettingsDep
from service.pipeline.config import DecodeLimits
from service.pipeline.decode import decode_video
from service.routers.clips import check_upload
from service.schemas import CameraList, error_responses

router = APIRouter(prefix="/cameras", tags=["cameras"])

CameraIdPath = Annotated[str, Path(pattern=CAMERA_ID_PATTERN, description="your id for the camera")]
_NOT_FOUND = error_responses({404: "your gallery has no such camera (camera_not_found)", 422: "invalid camera id"})
# A background is checked to decode before it is stored: these frames are enough to know.
_CHECK_LIMITS = DecodeLimits(max_frames=2, max_duration_s=3600.0, on_too_long="truncate")


@router.get("", response_model=CameraList)
async def list_cameras(caller: ReaderDep, cameras: CamerasDep) -> CameraList:
    """Your gallery's cameras and their settings."""
    return CameraList(cameras=await anyio.to_thread.run_sync(cameras.list, caller.gallery))


@router.get("/{camera_id}", response_model=Camera, responses=_NOT_FOUND)
async def get_camera(camera_id: CameraIdPath, caller: ReaderDep, cameras: CamerasDep) -> Camera:
    return await anyio.to_thread.run_sync(cameras.get, caller.gallery, camera_id)


@router.put("/{camera_id}", response_model=Camera, responses={
    201: {"model": Camera, "description": "the camera was created"},
    **error_responses({404: "the background id names no stored clip (background_not_found)",
                       422: "invalid camera id or settings"})})
async def put_camera(camera_id: CameraIdPath, settings: CameraSettings, caller: AdminDep, cameras: CamerasDep,
                     audit_context: AuditDep, gallery: GalleryDep, response: Response) -> Camera:
    """Create or replace the camera's settings (201 when created; audited as camera.created or
    camera.updated). `background` must be a stored clip's id (another camera's); upload a new one with
    POST /cameras/{camera_id}/background."""
    audit = gallery_audit(gallery, caller.gallery, audit_context)
    camera, created = await anyio.to_thread.run_sync(cameras.put, caller.gallery, camera_id, settings, audit)
    response.status_code = 201 if created else 200
    return camera


@router.delete("/{camera_id}", response_model=Camera, responses=_NOT_FOUND)
async def delete_camera(camera_id: CameraIdPath, caller: AdminDep, cameras: CamerasDep, audit_context: AuditDep,
                        gallery: GalleryDep) -> Camera:
    """Remove the camera (its background clip goes too when no other camera uses it; audited as
    camera.deleted); answers what was removed."""
    audit = gallery_audit(gallery, caller.gallery, audit_context)
    return await anyio.to_thread.run_sync(cameras.delete, caller.gallery, camera_id, audit)


@router.post("/{camera_id}/background", response_model=Camera, responses={
    201: {"model": Camera, "description": "the camera was created with this background"},
    **error_responses({413: "upload too large", 415: "not a video this server can decode",
                       422: "invalid camera id"})})
async def upload_background(
    camera_id: CameraIdPath,
    caller: AdminDep,
    cameras: CamerasDep,
    settings: SettingsDep,
    audit_context: AuditDep,
    gallery: GalleryDep,
    response: Response,
    video: Annotated[UploadFile, File(description="a clip of the camera's scene with nobody in it")],
) -> Camera:
    """Store the camera's empty-scene clip: background subtraction learns the scene from it before each of
    the camera's clips (creates the camera when needed; 201 then). Audited as camera.background."""
    check_upload(video, settings.http)
    await anyio.to_thread.run_sync(partial(decode_video, video.file, _CHECK_LIMITS))  # 415 if it does not decode
    audit = gallery_audit(gallery, caller.gallery, audit_context)
    camera, created = await anyio.to_thread.run_sync(
        cameras.attach_background, caller.gallery, camera_id, video.file, audit)
    response.status_code = 201 if created else 200
    return camera

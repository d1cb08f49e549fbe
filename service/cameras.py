"""The cameras a gallery's clips come from, each with its own processing settings: the rotation its
footage needs (phones that store frames sideways without saying so), the empty-scene clip that seeds
background subtraction for it, and a region of interest. Turned into `ClipOverrides` for the pipeline.

Persisted in the service's data dir: `cameras/cameras.json` (per gallery: camera id -> settings,
written atomically) and `cameras/backgrounds/<id>.clip` (background clips, named by the sha256 of
their bytes; a clip no camera refers to any more is deleted).

`camera_overrides(data_dir, camera_id, gallery=..., rotation=...)` is the entry point outside HTTP
(re-scoring maps archive folders to cameras with it).

Audited. A camera's settings change what the service sees (a region can hide a doorway), so every
change is a `CameraChange` (the settings before and after) that the registry hands to an `audit`
callback before it writes the change; `gallery_audit` appends it to the gallery's audit log under
the CAMERA_ACTIONS below. The log lives in the gallery's database, the cameras in a JSON file: no one
transaction holds both, hence the order (see `CameraRegistry._commit`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

from pydantic import BaseModel, Field, model_validator

from service.pipeline.types import ClipOverrides

if TYPE_CHECKING:  # only the service's routes audit: re-scoring reads cameras without loading the gallery
    from gallery import AuditContext, Gallery

log = logging.getLogger(__name__)

CAMERAS_SUBDIR = "cameras"
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
BACKGROUND_ID_HEX = 32
BACKGROUND_ID_PATTERN = rf"^[0-9a-f]{{{BACKGROUND_ID_HEX}}}$"
_CHUNK = 1 << 20

# The audit log's actions for camera changes (GET /audit?action=...); the gallery records them as given.
CAMERA_CREATED = "camera.created"  # PUT of a new camera
CAMERA_UPDATED = "camera.updated"  # PUT replacing a camera's settings
CAMERA_DELETED = "camera.deleted"
CAMERA_BACKGROUND = "camera.background"  # POST .../background: a new empty-scene clip (old None: camera created)
CAMERA_ACTIONS = (CAMERA_CREATED, CAMERA_UPDATED, CAMERA_DELETED, CAMERA_BACKGROUND)

# Degrees clockwise, a quarter turn at a time (0 included: "upright as stored, whatever the metadata says").
Rotation = Annotated[int, Field(ge=0, le=270, multiple_of=90)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class CameraSettings(BaseModel):
    """What a camera changes in processing; every field optional (null: the server's default)."""

    rotation: Rotation | None = Field(
        None, description="degrees clockwise to turn its footage (overrides the file's rotation metadata); "
                          "null: follow the metadata")
    roi: Annotated[list[Fraction], Field(min_length=4, max_length=4)] | None = Field(
        None, description="region of interest [x1, y1, x2, y2] as fractions of the upright frame: people whose box "
                          "centre lies outside are ignored; null: the whole frame")
    background: str | None = Field(
        None, pattern=BACKGROUND_ID_PATTERN,
        description="id of its empty-scene clip (POST /cameras/{camera_id}/background) seeding background "
                    "subtraction; null: the server's (GAITID_BACKGROUND_CLIP) or none")

    @model_validator(mode="after")
    def _roi_has_area(self) -> CameraSettings:
        if self.roi is not None:
            x1, y1, x2, y2 = self.roi
            if not (x1 < x2 and y1 < y2):
                raise ValueError("roi must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
        return self


class Camera(CameraSettings):
    camera_id: str
    updated_at: datetime


@dataclass(frozen=True)
class CameraChange:
    """One change of a camera, as the audit log records it: its settings before (None: it was created)
    and after (None: it was deleted)."""

    action: str  # one of CAMERA_ACTIONS
    camera_id: str
    old: CameraSettings | None
    new: CameraSettings | None

    @property
    def details(self) -> dict[str, Any]:
        """The audit entry's details: camera id, old and new settings, and which settings differ (no
        camera counts as every setting null, the server's defaults: what processing sees change)."""
        old = None if self.old is None else _settings_of(self.old)
        new = None if self.new is None else _settings_of(self.new)
        changed = [name for name in CameraSettings.model_fields if (old or {}).get(name) != (new or {}).get(name)]
        return {"camera_id": self.camera_id, "old": old, "new": new, "changed": changed}


def _settings_of(settings: CameraSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json", include=set(CameraSettings.model_fields))


CameraAudit = Callable[[CameraChange], object]  # records a change before it is made; raising stops the change


def gallery_audit(gallery: Gallery, namespace: str, context: AuditContext) -> CameraAudit:
    """An audit callback appending each camera change to `namespace`'s audit log in `gallery`, as done by
    `context` (the API key's name and the request id, like the gallery's own entries)."""

    def record(change: CameraChange) -> int:
        return gallery.append_audit(change.action, namespace=namespace, details=change.details,
                                    audit_context=context)

    return record


class CameraError(LookupError):
    """A camera or background clip the caller's gallery does not have."""

    code = "camera_error"

    def __init__(self, message: str, **details: str):
        super().__init__(message)
        self.message = message
        self.details = details


class CameraNotFoundError(CameraError):
    code = "camera_not_found"

    def __init__(self, camera_id: str):
        super().__init__(f"Your gallery has no camera {camera_id!r}: create it with PUT /cameras/{camera_id}.",
                         camera_id=camera_id)


class BackgroundNotFoundError(CameraError):
    code = "background_not_found"

    def __init__(self, background: str):
        super().__init__(f"No background clip {background!r}: upload it with POST /cameras/{{camera_id}}/background.",
                         background=background)


def cameras_dir(data_dir: Path) -> Path:
    return Path(data_dir) / CAMERAS_SUBDIR


class CameraRegistry:
    """Cameras per gallery, persisted under `root` (data_dir/cameras). Thread-safe within a process;
    every read goes to the file, so another process's writes (the CLI's, a second worker's) are seen."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    @property
    def _file(self) -> Path:
        return self.root / "cameras.json"

    @property
    def _backgrounds(self) -> Path:
        return self.root / "backgrounds"

    # -- cameras ----------------------------------------------------------------------------------
    def list(self, gallery: str) -> list[Camera]:
        with self._lock:
            cameras = self._load().get(gallery, {})
        return [Camera(camera_id=camera_id, **fields) for camera_id, fields in sorted(cameras.items())]

    def get(self, gallery: str, camera_id: str) -> Camera:
        with self._lock:
            fields = self._load().get(gallery, {}).get(camera_id)
        if fields is None:
            raise CameraNotFoundError(camera_id)
        return Camera(camera_id=camera_id, **fields)

    def put(self, gallery: str, camera_id: str, settings: CameraSettings,
            audit: CameraAudit | None = None) -> tuple[Camera, bool]:
        """Create or replace the camera; (the camera, whether it was created). A background must be one
        stored already (another camera's: attach_background stores new ones). `audit` records the change
        first (see _commit)."""
        with self._lock:
            if settings.background is not None and not self.background_path(settings.background).is_file():
                raise BackgroundNotFoundError(settings.background)
            data = self._load()
            cameras = data.setdefault(gallery, {})
            old = _stored_settings(cameras.get(camera_id))
            cameras[camera_id] = {**settings.model_dump(mode="json"), "updated_at": datetime.now(UTC).isoformat()}
            action = CAMERA_CREATED if old is None else CAMERA_UPDATED
            self._commit(data, CameraChange(action, camera_id, old, settings), audit)
            self._prune_backgrounds(data)
        return Camera(camera_id=camera_id, **cameras[camera_id]), old is None

    def delete(self, gallery: str, camera_id: str, audit: CameraAudit | None = None) -> Camera:
        """Remove the camera; what was removed. `audit` records the change first (see _commit)."""
        with self._lock:
            data = self._load()
            fields = data.get(gallery, {}).pop(camera_id, None)
            if fields is None:
                raise CameraNotFoundError(camera_id)
            if not data[gallery]:
                del data[gallery]
            self._commit(data, CameraChange(CAMERA_DELETED, camera_id, _stored_settings(fields), None), audit)
            self._prune_backgrounds(data)
        return Camera(camera_id=camera_id, **fields)

    # -- background clips -------------------------------------------------------------------------
    def attach_background(self, gallery: str, camera_id: str, file: BinaryIO,
                          audit: CameraAudit | None = None) -> tuple[Camera, bool]:
        """Store an empty-scene clip (read from the start of `file`; its id is the sha256 of its bytes)
        as the camera's background, creating the camera when needed; (the camera, whether it was created).
        Under the lock throughout, so no concurrent pruning removes the new clip before a camera uses it.
        `audit` records the change first (see _commit); a clip stored for a change that failed is deleted."""
        with self._lock:
            background = self._store_background(file)
            try:
                data = self._load()
                cameras = data.setdefault(gallery, {})
                old = _stored_settings(cameras.get(camera_id))
                fields = (old or CameraSettings()).model_copy(update={"background": background})
                cameras[camera_id] = {**fields.model_dump(mode="json"), "updated_at": datetime.now(UTC).isoformat()}
                self._commit(data, CameraChange(CAMERA_BACKGROUND, camera_id, old, fields), audit)
            finally:
                self._prune_backgrounds(self._load())  # what the file says now, whether or not the change was made
        return Camera(camera_id=camera_id, **cameras[camera_id]), old is None

    def _store_background(self, file: BinaryIO) -> str:
        self._backgrounds.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        file.seek(0)
        with tempfile.NamedTemporaryFile(dir=self._backgrounds, suffix=".part", delete=False) as out:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        background = digest.hexdigest()[:BACKGROUND_ID_HEX]
        os.replace(out.name, self.background_path(background))
        return background

    def background_path(self, background: str) -> Path:
        return self._backgrounds / f"{background}.clip"

    # -- for the pipeline -------------------------------------------------------------------------
    def overrides(self, gallery: str, camera_id: str | None, rotation: int | None = None) -> ClipOverrides:
        """The pipeline overrides for a clip of `camera_id` (None: no camera); `rotation` (a request's)
        wins over the camera's."""
        if camera_id is None:
            return ClipOverrides(rotation=rotation)
        camera = self.get(gallery, camera_id)
        background = None if camera.background is None else self.background_path(camera.background)
        if background is not None and not background.is_file():
            raise BackgroundNotFoundError(str(camera.background))
        return ClipOverrides(rotation=camera.rotation if rotation is None else rotation, background_clip=background,
                             roi=None if camera.roi is None else tuple(camera.roi))

    # -- storage ----------------------------------------------------------------------------------
    def _commit(self, data: dict, change: CameraChange, audit: CameraAudit | None) -> None:
        """Write `data` (holding `change`) to the registry file, the change audited first.

        The audit log (SQLite) and the cameras (this file) share no transaction, so one write may
        succeed and the other fail. Audit first: a change the log cannot record (the gallery is closed,
        its disk is full) is not made and the request fails; what the log says happened cannot be
        missing from it. The other failure, an entry whose file write then failed (rare: a temporary
        file and an atomic rename in the data dir), is logged as an error naming the entry, and the
        request fails: the log then holds one entry for a change that was not made, which a reader
        checks against the cameras, the safer of the two mistakes for a security log."""
        entry = None if audit is None else audit(change)
        try:
            self._save(data)
        except Exception:
            log.exception("camera %r: audit entry %s records %s, but the camera registry could not be written; "
                          "the change was not made", change.camera_id, entry, change.action)
            raise

    def _load(self) -> dict[str, dict[str, dict]]:
        try:
            return json.loads(self._file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _save(self, data: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.root, suffix=".part", delete=False, encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(out.name, self._file)

    def _prune_backgrounds(self, data: dict) -> None:
        """Delete stored background clips no camera of any gallery refers to (keeps the disk bounded)."""
        if not self._backgrounds.is_dir():
            return
        used = {fields.get("background") for cameras in data.values() for fields in cameras.values()}
        for path in self._backgrounds.glob("*.clip"):
            if path.stem not in used:
                path.unlink(missing_ok=True)


def _stored_settings(fields: dict | None) -> CameraSettings | None:
    """The settings of a stored camera (None: no such camera)."""
    return None if fields is None else CameraSettings(**{k: v for k, v in fields.items() if k != "updated_at"})


def camera_overrides(data_dir: Path, camera_id: str | None, *, gallery: str = "default",
                     rotation: int | None = None) -> ClipOverrides:
    """The pipeline overrides for footage of `camera_id` as configured in the service's data dir (the
    cameras of `gallery`; "default" without API keys); `rotation` overrides the camera's. For callers
    outside HTTP, e.g. re-scoring an archive whose folders are cameras. CameraNotFoundError when
    the gallery has no such camera."""
    return CameraRegistry(cameras_dir(data_dir)).overrides(gallery, camera_id, rotation)

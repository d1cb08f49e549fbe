"""The cameras a gallery's clips come from, each with its own processing settings: the rotation its
footage needs (phones that store frames sideways without saying so), the empty-scene clip that seeds
background subtraction for it, and a region of interest. Turned into `ClipOverrides` for the pipeline.

Persisted in the service's data dir: `cameras/cameras.json` (per gallery: camera id -> settings,
written atomically) and `cameras/backgrounds/<id>.clip` (background clips, named by the sha256 of
their bytes; a clip no camera refers to any more is deleted).

`camera_overrides(data_dir, camera_id, gallery=..., rotation=...)` is the entry point outside HTTP
(re-scoring maps archive folders to cameras with it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import BaseModel, Field, model_validator

from service.pipeline.types import ClipOverrides

CAMERAS_SUBDIR = "cameras"
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
BACKGROUND_ID_HEX = 32
BACKGROUND_ID_PATTERN = rf"^[0-9a-f]{{{BACKGROUND_ID_HEX}}}$"
_CHUNK = 1 << 20

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

    def put(self, gallery: str, camera_id: str, settings: CameraSettings) -> tuple[Camera, bool]:
        """Create or replace the camera; (the camera, whether it was created). A background must be one
        stored already (another camera's: attach_background stores new ones)."""
        with self._lock:
            if settings.background is not None and not self.background_path(settings.background).is_file():
                raise BackgroundNotFoundError(settings.background)
            data = self._load()
            cameras = data.setdefault(gallery, {})
            created = camera_id not in cameras
            cameras[camera_id] = {**settings.model_dump(mode="json"), "updated_at": datetime.now(UTC).isoformat()}
            self._save(data)
            self._prune_backgrounds(data)
        return Camera(camera_id=camera_id, **cameras[camera_id]), created

    def delete(self, gallery: str, camera_id: str) -> Camera:
        with self._lock:
            data = self._load()
            fields = data.get(gallery, {}).pop(camera_id, None)
            if fields is None:
                raise CameraNotFoundError(camera_id)
            if not data[gallery]:
                del data[gallery]
            self._save(data)
            self._prune_backgrounds(data)
        return Camera(camera_id=camera_id, **fields)

    # -- background clips -------------------------------------------------------------------------
    def attach_background(self, gallery: str, camera_id: str, file: BinaryIO) -> tuple[Camera, bool]:
        """Store an empty-scene clip (read from the start of `file`; its id is the sha256 of its bytes)
        as the camera's background, creating the camera when needed; (the camera, whether it was created).
        Under the lock throughout, so no concurrent pruning removes the new clip before a camera uses it."""
        with self._lock:
            background = self._store_background(file)
            data = self._load()
            cameras = data.setdefault(gallery, {})
            created = camera_id not in cameras
            fields = CameraSettings(**{k: v for k, v in cameras.get(camera_id, {}).items() if k != "updated_at"})
            fields.background = background
            cameras[camera_id] = {**fields.model_dump(mode="json"), "updated_at": datetime.now(UTC).isoformat()}
            self._save(data)
            self._prune_backgrounds(data)
        return Camera(camera_id=camera_id, **cameras[camera_id]), created

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


def camera_overrides(data_dir: Path, camera_id: str | None, *, gallery: str = "default",
                     rotation: int | None = None) -> ClipOverrides:
    """The pipeline overrides for footage of `camera_id` as configured in the service's data dir (the
    cameras of `gallery`; "default" without API keys); `rotation` overrides the camera's. For callers
    outside HTTP, e.g. re-scoring an archive whose folders are cameras. CameraNotFoundError when
    the gallery has no such camera."""
    return CameraRegistry(cameras_dir(data_dir)).overrides(gallery, camera_id, rotation)

"""Where and when each archived video was recorded: its camera and its start time, the facts a
sighting (service.rescore.sightings) and a results record show.

Camera, first that applies:
1. a folder mapping (`CameraMap`, from `gaitid rescore --camera FOLDER=CAMERA_ID` or a mapping
   file): the camera of the deepest mapped folder holding the video;
2. the path's `camera` group (service.rescore.archive.PathParser);
3. none.

Start time (frame 0 of the video), first that applies; `time_source` says which:
1. "path": the path's date and time (PathParser) — naive local time of the recorder;
2. "container": the container's `creation_time` tag (the format's, else the video stream's), as
   cameras and phones write it — UTC;
3. "mtime": the file's modification time minus the container's duration (a recorder writes the
   file until the recording ends, so its mtime is the end) — UTC. A copy that did not keep the
   mtime (plain `cp`, a download) gets the copy's time: that is why the source is shown.
A track's time is the start time plus its first (last) source frame index divided by the stream's
frame rate. Naive path times and UTC times are ordered and filtered as if the naive ones were UTC
(`time_key`): an archive mixing zones should name its files in UTC.

Container facts are read once per content (a header read, no decoding) and only for videos whose
path gives no time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath

from service.rescore.archive import PathInfo
from service.rescore.errors import OptionError

log = logging.getLogger("gaitid.rescore")


@dataclass(frozen=True)
class ContainerFacts:
    """What a video's container header says about when it was recorded."""

    creation_time: datetime | None  # UTC
    duration_s: float | None


@dataclass(frozen=True)
class SourceFacts:
    """One listed video's camera and start time (see the module doc for the rules)."""

    path: str
    sha256: str | None
    camera: str | None
    recorded_at: datetime | None
    time_source: str | None  # path | container | mtime | None


class CameraMap:
    """Folder -> camera id. A video belongs to the deepest mapped folder that holds it.

    Folders are compared as absolute paths; relative ones are taken from `base` (the archive folder).
    """

    def __init__(self, folders: Mapping[str | Path, str], base: str | Path | None = None):
        root = Path(base) if base is not None else Path.cwd()
        self.folders: dict[PurePath, str] = {}
        for folder, camera in folders.items():
            if not str(camera).strip():
                raise OptionError(f"the camera id for {folder} is empty")
            path = Path(folder).expanduser()
            self.folders[_absolute(path if path.is_absolute() else root / path)] = str(camera).strip()

    @classmethod
    def parse(cls, entries: Iterable[str], base: str | Path | None = None) -> CameraMap:
        """From `FOLDER=CAMERA_ID` strings (the option's and the mapping file's syntax)."""
        folders: dict[str, str] = {}
        for entry in entries:
            folder, sep, camera = entry.partition("=")
            if not sep or not folder.strip() or not camera.strip():
                raise OptionError(f"a camera mapping is FOLDER=CAMERA_ID, not {entry!r}")
            folders[folder.strip()] = camera.strip()
        return cls(folders, base)

    @classmethod
    def read(cls, mapping_file: str | Path, base: str | Path | None = None) -> list[str]:
        """The `FOLDER=CAMERA_ID` lines of a mapping file (`#` comments and blank lines ignored);
        relative folders there are the archive's, like the option's."""
        try:
            lines = Path(mapping_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise OptionError(f"the camera mapping file {mapping_file} cannot be read: {exc}") from exc
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]

    def camera_of(self, path: str | Path) -> str | None:
        if not self.folders:
            return None
        target = _absolute(Path(path))
        for folder in (target, *target.parents):
            if folder in self.folders:
                return self.folders[folder]
        return None


def camera_for(cameras: CameraMap, path: str | Path, info: PathInfo) -> str | None:
    """The camera of the video at `path` (parsed into `info`), by the module's rule."""
    return cameras.camera_of(path) or info.camera


def _absolute(path: Path) -> PurePath:
    # Not resolve(): an archive of symlinks keeps its own folder names.
    return PurePath(Path(path).absolute().as_posix())


def probe_container(path: str | Path) -> ContainerFacts:
    """Creation time and duration from the container header; (None, None) when unreadable."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            streams = container.streams.video
            tags = [dict(container.metadata)] + ([dict(streams[0].metadata)] if streams else [])
            created = next((t["creation_time"] for t in tags if t.get("creation_time")), None)
            duration = container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        log.debug("no container facts for %s: %s", path, exc)
        return ContainerFacts(None, None)
    return ContainerFacts(_utc(created), duration)


def _utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    # A tag without a zone is UTC by the MP4/QuickTime convention; 1904/1970 epochs mean "never set".
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None if moment.year <= 1970 else moment


def recording_start(info: PathInfo, container: ContainerFacts | None, mtime_ns: int | None) -> tuple[datetime | None, str | None]:
    """(start time, its source) by the module's rule."""
    if info.recorded_at is not None:
        return info.recorded_at, "path"
    if container is not None and container.creation_time is not None:
        return container.creation_time, "container"
    if mtime_ns is not None:
        end = datetime.fromtimestamp(mtime_ns / 1e9, UTC)
        duration = container.duration_s if container is not None and container.duration_s else 0.0
        return end - timedelta(seconds=duration), "mtime"
    return None, None


def time_key(moment: datetime) -> datetime:
    """An aware datetime to order and compare times of any source (naive ones as if UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_time(text: str) -> datetime:
    """An ISO 8601 time from the user (2024-01-02, 2024-01-02T10:00, ...+02:00, ...Z)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise OptionError(f"{text!r} is not an ISO 8601 time (e.g. 2024-01-02T10:00:00)") from exc

"""What to re-score: the videos of an archive, their size and modification time, and the camera
and recording time their paths tell (content hashes: gaitid.contract.file_sha256).

An archive is one of
- a folder, walked recursively for video files (by extension, case-insensitive; hidden files and
  folders skipped), in sorted path order;
- a list file (any file that is not a video): one path per line, `#` comments and blank lines
  ignored, relative paths taken from the list file's folder; missing files are kept, so they are
  reported in the results instead of silently vanishing;
- a single video file.

Camera and time come from the path, matched against regular expressions with the named groups
`camera`, `date` and `time` (or one `datetime` group). The first pattern that matches wins. The
defaults (`DEFAULT_PATH_PATTERNS`) read the two common recorder layouts:

    .../<camera>/<YYYY-MM-DD>/<HH-MM-SS>...      e.g. archive/camA/2024-01-02/10-00-00.avi
    .../cam<id>_<YYYYmmdd>_<HHMMSS>...           e.g. archive/cam7_20240104_083000.mp4 (camera "cam7")

Times are naive local times of the recorder (no time zone is known from a path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

from service.rescore.errors import ArchiveError, OptionError

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".wmv", ".flv", ".3gp", ".h264", ".h265", ".hevc",
})

DEFAULT_PATH_PATTERNS: tuple[str, ...] = (
    r"(?:^|/)(?P<camera>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<time>\d{2}[-_:.]?\d{2}[-_:.]?\d{2})[^/]*$",
    r"(?:^|/)(?P<camera>cam[^/_]+)_(?P<date>\d{8})_(?P<time>\d{6})[^/]*$",
)
_PATTERN_GROUPS = {"camera", "date", "time", "datetime"}
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y_%m_%d", "%Y.%m.%d")
_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y%m%dT%H%M%S", "%Y%m%d_%H%M%S",
                     "%Y%m%d%H%M%S", "%Y-%m-%d_%H-%M-%S")


@dataclass(frozen=True)
class PathInfo:
    """What a video's path says about it."""

    camera: str | None
    recorded_at: datetime | None  # when the recording starts (frame 0), naive local time


class PathParser:
    """Reads camera and start time from paths with a list of regular expressions (first match wins)."""

    def __init__(self, patterns: Sequence[str] = DEFAULT_PATH_PATTERNS):
        if not patterns:
            raise OptionError("at least one path pattern is needed")
        self.patterns = tuple(_compile_pattern(p) for p in patterns)

    def parse(self, path: str | Path) -> PathInfo:
        text = Path(path).as_posix()
        for pattern in self.patterns:
            match = pattern.search(text)
            if match is None:
                continue
            groups = {k: v for k, v in match.groupdict().items() if v}
            return PathInfo(camera=groups.get("camera"), recorded_at=_recorded_at(groups))
        return PathInfo(camera=None, recorded_at=None)


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise OptionError(f"path pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    if not _PATTERN_GROUPS & set(compiled.groupindex):
        raise OptionError(f"path pattern {pattern!r} has none of the named groups camera, date, time, datetime: "
                          r"e.g. (?P<camera>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<time>\d{2}-\d{2}-\d{2})")
    return compiled


def _recorded_at(groups: dict[str, str]) -> datetime | None:
    """A datetime from the matched groups; None when they do not form a valid date and time (a path
    like 2024-13-45 is not a reason to fail a job, just a recording of unknown time)."""
    if "datetime" in groups:
        return _parse_first(groups["datetime"], _DATETIME_FORMATS)
    if "date" not in groups:
        return None
    day = _parse_first(groups["date"], _DATE_FORMATS)
    if day is None:
        return None
    clock = _parse_time(groups["time"]) if "time" in groups else time(0, 0, 0)
    return None if clock is None else datetime.combine(date(day.year, day.month, day.day), clock)


def _parse_first(text: str, formats: Iterable[str]) -> datetime | None:
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _parse_time(text: str) -> time | None:
    """HHMMSS with any single separators (10-00-00, 10:00:00, 10_00_00, 100000)."""
    digits = re.sub(r"[^0-9]", "", text)
    if len(digits) != 6:
        return None
    try:
        return time(int(digits[:2]), int(digits[2:4]), int(digits[4:]))
    except ValueError:
        return None


# -- listing ------------------------------------------------------------------------------------


def list_archive(archive: str | Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """The videos of a folder tree, a list file, or a single video, in a stable order, each once."""
    archive = Path(archive)
    suffixes = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    if archive.is_dir():
        paths = _walk(archive, suffixes)
    elif archive.is_file():
        paths = [archive] if archive.suffix.lower() in suffixes else _read_list(archive)
    else:
        raise ArchiveError(f"the archive {archive} does not exist (give a folder, a list file or a video)")
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise ArchiveError(f"no video files in {archive} (extensions: {', '.join(sorted(suffixes))})")
    return unique


def _walk(root: Path, suffixes: set[str]) -> list[Path]:
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(Path(folder) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in suffixes)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_list(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"the list file {list_file} cannot be read as UTF-8 text: {exc}") from exc
    paths = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


# -- content hashes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStat:
    """Size and modification time: when both are unchanged, the cached content hash is reused."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        stat = path.stat()
        return cls(stat.st_size, stat.st_mtime_ns)

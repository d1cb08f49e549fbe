"""The state of a re-scoring job: one SQLite file next to the results (`<results>.state.sqlite`).

It is the job's journal and the reason re-runs are cheap:
- `paths`: each video path's size, modification time and sha256, so a re-run hashes only files
  whose size or mtime changed;
- `files`: one row per (content sha256, embedding model id): "done" (tracks found, or an error
  that is a fact about the content such as a corrupt file) or "failed" (transient: retried by the
  next run), with the stream facts;
- `tracks`: each track's frame indices, boxes, embedding and strip of aligned silhouettes;
- `thumbnails`: each track's picture (JPEG of the person's crops), shown with sightings;
- `contents`: container facts (creation time, duration) of contents whose path gives no time;
- `sources`: each video of the last run's listing with its camera and start time
  (service.rescore.sources): what results records and sightings show;
- `meta`: the schema version, extraction settings, and the results files and HTML reports made
  from this state (`results:<path>`, `report:<path>`), so that erasing a subject reaches them
  (service.rescore.redact).

A file's row and its tracks are committed in one transaction (synchronous=FULL, WAL), right after
the file is processed: a crash or Ctrl-C loses at most the files in flight, never a finished one,
and a file is never half-recorded. Because embeddings are kept, a later run re-scores finished
files against the current gallery without decoding them again.

Arrays are stored as .npy bytes (np.save, no pickle).
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import numpy as np

from service.rescore.archive import FileStat
from service.rescore.errors import StateError
from service.rescore.extract import FileOutcome
from service.rescore.sources import ContainerFacts, SourceFacts

# Tables added since version 1 (thumbnails, contents, sources) are created on open and ignored by older
# readers, so they need no new version.
SCHEMA_VERSION = 1
STATE_SUFFIX = ".state.sqlite"
_RESULTS_KEY = "results:"  # + absolute path of a results file -> its format
_REPORT_KEY = "report:"  # + absolute path of an HTML report -> ReportSource as JSON

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paths (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error_code TEXT,
    error_message TEXT,
    fps REAL,
    frame_count INTEGER NOT NULL DEFAULT 0,
    width INTEGER,
    height INTEGER,
    seconds REAL NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (sha256, model_id)
);
CREATE TABLE IF NOT EXISTS tracks (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    frame_indices BLOB NOT NULL,
    boxes BLOB NOT NULL,
    embedding BLOB NOT NULL,
    strip_png BLOB NOT NULL,
    PRIMARY KEY (sha256, model_id, track_id),
    FOREIGN KEY (sha256, model_id) REFERENCES files (sha256, model_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS thumbnails (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    image BLOB NOT NULL,
    PRIMARY KEY (sha256, model_id, track_id),
    FOREIGN KEY (sha256, model_id) REFERENCES files (sha256, model_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS contents (
    sha256 TEXT PRIMARY KEY,
    creation_time TEXT,
    duration_s REAL
);
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY,
    sha256 TEXT,
    camera TEXT,
    recorded_at TEXT,
    time_source TEXT
);
"""


def default_state_path(results: str | Path) -> Path:
    results = Path(results)
    return results.with_name(results.name + STATE_SUFFIX)


def find_state(path: str | Path) -> Path:
    """A state file given itself, or the folder holding exactly one `*.state.sqlite` (the folder a
    re-scoring job wrote its results and state to)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*" + STATE_SUFFIX))
        if len(found) == 1:
            return found[0]
        raise StateError(f"{path} holds {len(found)} re-scoring state files ({', '.join(f.name for f in found)}); "
                         "name one" if found else f"{path} holds no re-scoring state (*{STATE_SUFFIX}): run "
                         "`gaitid rescore` first, or name the state file")
    raise StateError(f"the re-scoring state {path} does not exist: run `gaitid rescore` first")


@dataclass(frozen=True)
class FileRecord:
    """A `files` row: what the results need about one processed content."""

    sha256: str
    model_id: str
    status: str  # done | failed
    error_code: str | None
    error_message: str | None
    fps: float | None
    frame_count: int
    size: tuple[int, int] | None
    seconds: float
    processed_at: str


@dataclass(frozen=True)
class ReportSource:
    """What an HTML report was built from, to build it again (service.rescore.report)."""

    report: Path
    results: Path
    format: str | None
    unknown_limit: int


@dataclass(frozen=True)
class StoredTrack:
    track_id: int
    frame_indices: np.ndarray
    boxes: np.ndarray
    embedding: np.ndarray
    rowid: int = -1  # the track's row: its id in the sightings index (service.rescore.sightings)


class RescoreState:
    """The SQLite state file. One writer (the job's consumer thread); reads from any thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # a committed file survives a power cut too
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a usable re-scoring state file ({exc}); "
                             "pass another --state or remove it to start over") from exc
        self._check_version()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ---------------------------------------------------------------------------
    def _check_version(self) -> None:
        stored = self.get_meta("schema_version")
        if stored is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(stored) > SCHEMA_VERSION:
            raise StateError(f"{self.path} was written by a newer gaitid (state schema {stored}); upgrade gaitid")

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _meta_with_prefix(self, prefix: str) -> dict[str, str]:
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                                      (len(prefix), prefix)).fetchall()
        return {key[len(prefix):]: value for key, value in rows}

    # -- what was made from it --------------------------------------------------------------
    def note_results(self, path: str | Path, fmt: str) -> None:
        """Remember a results file written from this state (absolute path)."""
        self.set_meta(_RESULTS_KEY + str(Path(path).resolve()), fmt)

    def results_files(self) -> dict[Path, str]:
        """Results files written from this state (existing or not) -> their format."""
        return {Path(path): fmt for path, fmt in self._meta_with_prefix(_RESULTS_KEY).items()}

    def note_report(self, source: ReportSource) -> None:
        self.set_meta(_REPORT_KEY + str(source.report.resolve()), json.dumps(
            {"results": str(source.results.resolve()), "format": source.format, "unknown_limit": source.unknown_limit}))

    def reports(self) -> list[ReportSource]:
        """HTML reports built with this state's thumbnails (existing or not)."""
        found = []
        for path, value in self._meta_with_prefix(_REPORT_KEY).items():
            entry = json.loads(value)
            found.append(ReportSource(Path(path), Path(entry["results"]), entry["format"], int(entry["unknown_limit"])))
        return found

    # -- what is known ----------------------------------------------------------------------
    def cached_hashes(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> sha256 for the paths whose size and mtime still match the recorded ones."""
        known: dict[str, str] = {}
        with self._lock:
            rows = {r[0]: r[1:] for r in self._conn.execute("SELECT path, size, mtime_ns, sha256 FROM paths")}
        for path in paths:
            row = rows.get(path)
            if row is None:
                continue
            try:
                stat = FileStat.of(Path(path))
            except OSError:
                continue
            if (stat.size, stat.mtime_ns) == (row[0], row[1]):
                known[path] = row[2]
        return known

    def done_hashes(self, model_id: str) -> set[str]:
        """Contents finished with this model (with tracks or with a content error): never redone."""
        with self._lock:
            rows = self._conn.execute("SELECT sha256 FROM files WHERE model_id = ? AND status = 'done'", (model_id,))
            return {r[0] for r in rows}

    def path_hashes(self, paths: Sequence[str]) -> dict[str, str]:
        """path -> sha256 as last recorded (whatever the file's current stat)."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(paths), 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                found.update(self._conn.execute(f"SELECT path, sha256 FROM paths WHERE path IN ({marks})", chunk))
        return found

    # -- writing ----------------------------------------------------------------------------
    def save(self, outcome: FileOutcome) -> None:
        """Record one file's outcome in one transaction. Skipped files only refresh their path row."""
        with self._lock, self._transaction() as conn:
            if outcome.sha256 is not None and outcome.stat is not None:
                conn.execute("INSERT OR REPLACE INTO paths (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                             (outcome.path, outcome.stat.size, outcome.stat.mtime_ns, outcome.sha256))
            if outcome.status == "skipped" or outcome.sha256 is None:
                return
            conn.execute("DELETE FROM files WHERE sha256 = ? AND model_id = ?", (outcome.sha256, outcome.model_id))
            width, height = outcome.size if outcome.size else (None, None)
            conn.execute(
                "INSERT INTO files (sha256, model_id, status, error_code, error_message, fps, frame_count, width, "
                "height, seconds, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (outcome.sha256, outcome.model_id, outcome.status, outcome.error_code, outcome.error_message,
                 outcome.fps, outcome.frame_count, width, height, outcome.seconds,
                 datetime.now(UTC).isoformat(timespec="seconds")),
            )
            conn.executemany(
                "INSERT INTO tracks (sha256, model_id, track_id, frame_indices, boxes, embedding, strip_png) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(outcome.sha256, outcome.model_id, t.track_id, _npy(t.frame_indices), _npy(t.boxes),
                  _npy(t.embedding), t.strip_png) for t in outcome.tracks],
            )
            conn.executemany(
                "INSERT INTO thumbnails (sha256, model_id, track_id, image) VALUES (?, ?, ?, ?)",
                [(outcome.sha256, outcome.model_id, t.track_id, t.thumbnail) for t in outcome.tracks if t.thumbnail],
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- reading ----------------------------------------------------------------------------
    def files(self, hashes: Iterable[str], model_id: str) -> dict[str, FileRecord]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, FileRecord] = {}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._conn.execute(
                    "SELECT sha256, model_id, status, error_code, error_message, fps, frame_count, width, height, "
                    f"seconds, processed_at FROM files WHERE model_id = ? AND sha256 IN ({marks})",
                    (model_id, *chunk)).fetchall()
            for r in rows:
                size = (int(r[7]), int(r[8])) if r[7] is not None else None
                found[r[0]] = FileRecord(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), size, float(r[9]), r[10])
        return found

    def tracks(self, hashes: Iterable[str], model_id: str) -> dict[str, list[StoredTrack]]:
        """sha256 -> its tracks (ordered by track id) with embeddings; strips are not loaded."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, list[StoredTrack]] = {h: [] for h in wanted}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._conn.execute(
                    "SELECT sha256, track_id, frame_indices, boxes, embedding FROM tracks "
                    f"WHERE model_id = ? AND sha256 IN ({marks}) ORDER BY sha256, track_id",
                    (model_id, *chunk)).fetchall()
            for sha, track_id, frames, boxes, embedding in rows:
                found[sha].append(StoredTrack(int(track_id), _array(frames), _array(boxes), _array(embedding)))
        return found

    def iter_tracks(self, model_id: str, *, embeddings: bool = True,
                    chunk: int = 2048) -> Iterator[tuple[str, StoredTrack]]:
        """Every stored track of `model_id`, ordered by (sha256, track id); without `embeddings` the
        embedding is an empty array (listing an archive's tracks without holding their vectors)."""
        column = "embedding" if embeddings else "NULL"
        empty = np.zeros((0, 0), np.float32)
        after: tuple[str, int] = ("", -1)
        while True:  # keyset pages: no read transaction held between pages, bounded memory
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT sha256, track_id, frame_indices, boxes, {column}, rowid FROM tracks WHERE model_id = ? "
                    "AND (sha256, track_id) > (?, ?) ORDER BY sha256, track_id LIMIT ?",
                    (model_id, *after, chunk)).fetchall()
            for sha, track_id, frames, boxes, embedding, rowid in rows:
                yield sha, StoredTrack(int(track_id), _array(frames), _array(boxes),
                                       _array(embedding) if embedding is not None else empty, int(rowid))
            if len(rows) < chunk:
                return
            after = (rows[-1][0], int(rows[-1][1]))

    def embeddings_by_rowid(self, rowids: Sequence[int], model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(the rowids found, ascending; their (n, C, P) embeddings): tracks deleted meanwhile drop out."""
        found: list[tuple[int, np.ndarray]] = []
        for chunk in _chunks([int(r) for r in rowids], 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT rowid, embedding FROM tracks WHERE model_id = ? AND rowid IN ({marks})",
                    (model_id, *chunk)).fetchall()
            found.extend((int(r), _array(e)) for r, e in rows)
        found.sort(key=lambda item: item[0])
        if not found:
            return np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float32)
        return np.array([r for r, _ in found], np.int64), np.stack([e for _, e in found])

    def rowids_processed_since(self, model_id: str, since: str) -> list[int]:
        """Rows of the tracks of files (re)processed after `since` (an ISO time from `files`)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT t.rowid FROM tracks t JOIN files f ON f.sha256 = t.sha256 AND f.model_id = t.model_id "
                "WHERE t.model_id = ? AND f.processed_at > ?", (model_id, since)).fetchall()
        return [int(r[0]) for r in rows]

    def last_processed_at(self, model_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT MAX(processed_at) FROM files WHERE model_id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    def model_ids(self) -> list[str]:
        """Embedding models with tracks in this state."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT model_id FROM tracks ORDER BY model_id")]

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's data_version): when to re-read."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # -- sources: camera and time per listed video --------------------------------------------
    def container_facts(self, hashes: Iterable[str]) -> dict[str, ContainerFacts]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, ContainerFacts] = {}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT sha256, creation_time, duration_s FROM contents WHERE sha256 IN ({marks})", chunk)
                found.update((r[0], ContainerFacts(_time(r[1]), r[2])) for r in rows)
        return found

    def save_container_facts(self, facts: Mapping[str, ContainerFacts]) -> None:
        with self._lock, self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO contents (sha256, creation_time, duration_s) VALUES (?, ?, ?)",
                             [(sha, _iso(f.creation_time), f.duration_s) for sha, f in facts.items()])

    def replace_sources(self, sources: Iterable[SourceFacts]) -> None:
        """The listing of the latest run, in one transaction: sightings show exactly its videos."""
        with self._lock, self._transaction() as conn:
            conn.execute("DELETE FROM sources")
            conn.executemany(
                "INSERT OR REPLACE INTO sources (path, sha256, camera, recorded_at, time_source) VALUES (?, ?, ?, ?, ?)",
                [(s.path, s.sha256, s.camera, _iso(s.recorded_at), s.time_source) for s in sources])

    def sources(self) -> list[SourceFacts]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, sha256, camera, recorded_at, time_source FROM sources ORDER BY path").fetchall()
        return [SourceFacts(r[0], r[1], r[2], _time(r[3]), r[4]) for r in rows]

    def strip(self, sha256: str, model_id: str, track_id: int) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT strip_png FROM tracks WHERE sha256 = ? AND model_id = ? AND track_id = ?",
                (sha256, model_id, int(track_id))).fetchone()
        return bytes(row[0]) if row and row[0] else None

    def thumbnail(self, sha256: str, model_id: str, track_id: int) -> bytes | None:
        """The track's picture: the JPEG of its crops, else (a state written before thumbnails were
        kept) its PNG strip of silhouettes; None for no such track."""
        with self._lock:
            row = self._conn.execute(
                "SELECT image FROM thumbnails WHERE sha256 = ? AND model_id = ? AND track_id = ?",
                (sha256, model_id, int(track_id))).fetchone()
        return bytes(row[0]) if row else self.strip(sha256, model_id, track_id)

    def counts(self, model_id: str) -> dict[str, int]:
        with self._lock:
            files = dict(self._conn.execute(
                "SELECT status, COUNT(*) FROM files WHERE model_id = ? GROUP BY status", (model_id,)).fetchall())
            (tracks,) = self._conn.execute("SELECT COUNT(*) FROM tracks WHERE model_id = ?", (model_id,)).fetchone()
        return {"done": int(files.get("done", 0)), "failed": int(files.get("failed", 0)), "tracks": int(tracks)}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]

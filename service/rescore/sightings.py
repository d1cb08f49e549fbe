"""Sightings: where and when does an enrolled subject appear in a re-scored archive?

    with RescoreState(state_file) as state:
        walks = subject_walks(gallery, "alice", namespace="default")
        archive = ArchiveTracks.load(state, walks.model_id)
        found = find_sightings(archive, walks, SightingFilter(cameras={"camA"}), threshold=0.78, limit=50)

The archive is the latest re-scoring run's listing (the state's `sources`): every (video, track)
with its camera, time (service.rescore.sources), frame range and median box. Identical copies of a
video are one content with one embedding per track, and one sighting per path.

A track's similarity to a subject is its best similarity to any of the subject's enrolled walks
(as the gallery scores a subject by its best sequence). The answer, in this order:
1. the filters (cameras; a time range on the track's start time, bounds included; a track
   without a time never passes a time filter) choose the tracks searched;
2. tracks below `threshold` are dropped;
3. of the rest, the `limit` most similar are kept;
4. they are returned in time order (start time, then video and first frame; tracks without a
   time last, by video).

Search is behind `TrackSearch`: exact (`ExactTrackSearch`, the contract's search vectors held in
memory, one matrix product) for now.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gaitid.contract import search_vectors
from service.rescore.errors import GalleryMismatchError, OptionError, StateError
from service.rescore.sources import time_key
from service.rescore.store import RescoreState, find_state

MAX_LIMIT = 10_000
_VECTOR_CHUNK = 1024  # tracks turned into search vectors at once (their float64 step: 32 MB for 256 x 16)


@dataclass(frozen=True)
class SubjectWalks:
    """An enrolled subject's embeddings of the gallery's active model."""

    subject_id: str
    display_name: str
    model_id: str
    sequence_ids: np.ndarray  # (K,)
    embeddings: np.ndarray  # (K, C, P)


def subject_walks(gallery: Any, subject_id: str, *, namespace: str = "default") -> SubjectWalks:
    """The subject's walks from an open `gallery.Gallery` (SubjectNotFoundError when not enrolled)."""
    record = gallery.get_subject(subject_id, namespace=namespace)
    model_id = gallery.status(namespace).model_id
    ids, subjects, embeddings = gallery.export_embeddings(namespace=namespace)
    mine = np.array([s == record.subject_id for s in subjects], bool)
    if model_id is None or not mine.any():
        raise GalleryMismatchError(
            f"subject {record.subject_id!r} has no embedding of the gallery's model {model_id}: re-embed the gallery")
    return SubjectWalks(record.subject_id, record.display_name, str(model_id), ids[mine], embeddings[mine])


@dataclass(frozen=True)
class SightingFilter:
    """Which tracks are searched: cameras (None: all) and a time range on the track's start (bounds included)."""

    cameras: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and time_key(self.since) > time_key(self.until):
            raise OptionError(f"the time range is empty: since {self.since.isoformat()} is after until "
                              f"{self.until.isoformat()}")

    def admits(self, track: ArchiveTrack) -> bool:
        if self.cameras is not None and track.camera not in self.cameras:
            return False
        if self.since is None and self.until is None:
            return True
        if track.start_time is None:
            return False
        start = time_key(track.start_time)
        return (self.since is None or start >= time_key(self.since)) and \
            (self.until is None or start <= time_key(self.until))


@dataclass(frozen=True)
class ArchiveTrack:
    """One (video, track) of the archive: what a sighting shows, without its similarity."""

    video: str
    sha256: str
    track_id: int
    camera: str | None
    start_time: datetime | None  # the video's start time + first_frame / fps
    end_time: datetime | None
    time_source: str | None  # path | container | mtime (service.rescore.sources)
    first_frame: int
    last_frame: int
    frames: int  # aligned frames of the track
    fps: float | None
    box: tuple[float, float, float, float]  # median xyxy box, upright source pixels
    row: int  # the content track's row in the search (copies of a video share it)

    @property
    def start_s(self) -> float | None:
        return round(self.first_frame / self.fps, 3) if self.fps else None

    @property
    def end_s(self) -> float | None:
        return round(self.last_frame / self.fps, 3) if self.fps else None


@dataclass(frozen=True)
class Sighting:
    track: ArchiveTrack
    similarity: float
    sequence_id: int  # the subject's enrolled walk that matched best


class TrackSearch(Protocol):
    """Similarities of the archive's content tracks (rows) to a subject's walks."""

    def scores(self, queries: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, C, P) queries, candidate rows -> (rows, best similarity, index of the best query) of
        the candidates at or above `threshold`."""
        ...


class ExactTrackSearch:
    """Every candidate compared with every walk: the contract's search vectors, one matrix product."""

    def __init__(self, vectors: np.ndarray | None):
        """vectors: (N, D) search vectors of the tracks (gaitid.contract.search_vectors), or None for none."""
        self.vectors = vectors if vectors is not None else np.zeros((0, 0), np.float32)

    def scores(self, queries: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not len(rows):
            return rows, np.zeros(0, np.float32), np.zeros(0, np.int64)
        similarity = self.vectors[rows] @ search_vectors(queries).T  # (n, K)
        best_query = similarity.argmax(axis=1)
        best = similarity[np.arange(len(rows)), best_query]
        keep = best >= threshold
        return rows[keep], best[keep], best_query[keep]


@dataclass
class ArchiveTracks:
    """The archive's tracks of one embedding model, searchable."""

    model_id: str
    tracks: list[ArchiveTrack]  # one per (video, track), in listing order
    keys: list[tuple[str, int]]  # content track of each search row: (sha256, track id)
    search: TrackSearch

    @classmethod
    def load(cls, state: RescoreState, model_id: str) -> ArchiveTracks:
        sources = [s for s in state.sources() if s.sha256 is not None]
        if not sources:
            raise StateError(f"{state.path} lists no re-scored video: run `gaitid rescore` with this state first")
        wanted = {s.sha256 for s in sources}
        files = state.files(wanted, model_id)
        keys: list[tuple[str, int]] = []
        vectors: list[np.ndarray] = []  # search vectors, a chunk at a time: float32, never all embeddings at once
        pending: list[np.ndarray] = []
        content: dict[str, list[tuple[int, int, np.ndarray, np.ndarray]]] = {}  # row, track id, frames, boxes
        for sha, stored in state.iter_tracks(model_id):
            if sha not in wanted:
                continue
            content.setdefault(sha, []).append((len(keys), stored.track_id, stored.frame_indices, stored.boxes))
            keys.append((sha, stored.track_id))
            pending.append(stored.embedding)
            if len(pending) == _VECTOR_CHUNK:
                vectors.append(search_vectors(np.stack(pending)))
                pending = []
        if pending:
            vectors.append(search_vectors(np.stack(pending)))
        if not keys and not state.counts(model_id)["done"]:
            models = state.model_ids()
            raise GalleryMismatchError(
                f"{state.path} has no track of the gallery's model {model_id}"
                + (f" (it holds tracks of {', '.join(models)})" if models else "")
                + ": re-score the archive with the gallery's model")
        tracks = []
        for source in sources:
            file = files.get(source.sha256)
            fps = file.fps if file is not None and file.fps else None
            for row, track_id, frame_indices, boxes in content.get(source.sha256, []):
                frames = frame_indices.astype(np.int64)
                first, last = int(frames.min()), int(frames.max())
                box = tuple(float(v) for v in np.round(np.median(boxes.astype(np.float64), axis=0), 1))
                tracks.append(ArchiveTrack(
                    video=source.path, sha256=source.sha256, track_id=track_id, camera=source.camera,
                    start_time=_at(source.recorded_at, first, fps), end_time=_at(source.recorded_at, last, fps),
                    time_source=source.time_source,
                    first_frame=first, last_frame=last, frames=len(frames), fps=fps, box=box, row=row))  # type: ignore[arg-type]
        return cls(model_id, tracks, keys, ExactTrackSearch(np.concatenate(vectors) if vectors else None))

    def cameras(self) -> list[str]:
        return sorted({t.camera for t in self.tracks if t.camera is not None})


class SightingsArchive:
    """A re-scoring state opened for many queries (the service): each model's tracks are loaded once
    and again after the state changes (a re-scoring run's commit). Thread-safe."""

    def __init__(self, path: str | Path):
        self.state = RescoreState(find_state(path))
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[int, ArchiveTracks]] = {}

    def tracks(self, model_id: str) -> ArchiveTracks:
        with self._lock:
            version = self.state.data_version()
            cached = self._loaded.get(model_id)
            if cached is None or cached[0] != version:
                cached = (version, ArchiveTracks.load(self.state, model_id))
                self._loaded = {model_id: cached}  # one model's vectors held at a time
            return cached[1]

    def close(self) -> None:
        self.state.close()


def _at(start: datetime | None, frame: int, fps: float | None) -> datetime | None:
    if start is None or not fps:
        return None
    return start + timedelta(seconds=round(frame / fps, 3))


def find_sightings(archive: ArchiveTracks, walks: SubjectWalks, where: SightingFilter = SightingFilter(), *,
                   threshold: float, limit: int = 100) -> list[Sighting]:
    """The subject's sightings by the module's rule (filter, threshold, most similar `limit`, time order)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise OptionError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if walks.model_id != archive.model_id:
        raise GalleryMismatchError(f"the subject's walks are embeddings of model {walks.model_id}, the archive's "
                                   f"tracks of model {archive.model_id}")
    admitted = [t for t in archive.tracks if where.admits(t)]
    rows = np.unique(np.array([t.row for t in admitted], np.int64))
    found_rows, best, best_query = archive.search.scores(walks.embeddings, rows, float(threshold))
    by_row = {int(r): (float(s), int(walks.sequence_ids[q])) for r, s, q in zip(found_rows, best, best_query)}
    sightings = [Sighting(t, *by_row[t.row]) for t in admitted if t.row in by_row]
    sightings.sort(key=lambda s: (-s.similarity, s.track.video, s.track.first_frame))
    return in_time_order(sightings[:limit])


def in_time_order(sightings: Sequence[Sighting]) -> list[Sighting]:
    """Start time, then video and first frame; sightings without a time last, by video and first frame."""
    timed = [s for s in sightings if s.track.start_time is not None]
    untimed = [s for s in sightings if s.track.start_time is None]
    timed.sort(key=lambda s: (time_key(s.track.start_time), s.track.video, s.track.first_frame, s.track.track_id))
    untimed.sort(key=lambda s: (s.track.video, s.track.first_frame, s.track.track_id))
    return timed + untimed


def sighting_record(sighting: Sighting) -> dict[str, Any]:
    """A sighting as plain JSON values (the CLI's lines and the HTTP answer's items)."""
    t = sighting.track
    return {
        "video": t.video, "camera": t.camera,
        "start_time": t.start_time.isoformat(timespec="milliseconds") if t.start_time else None,
        "end_time": t.end_time.isoformat(timespec="milliseconds") if t.end_time else None,
        "time_source": t.time_source, "first_frame": t.first_frame, "last_frame": t.last_frame,
        "frames": t.frames, "fps": t.fps, "start_s": t.start_s, "end_s": t.end_s, "box": list(t.box),
        "similarity": round(sighting.similarity, 6), "sequence_id": sighting.sequence_id,
        "sha256": t.sha256, "track_id": t.track_id,
    }


def image_media_type(image: bytes) -> str:
    """image/jpeg for JPEG bytes (a track's crops), else image/png (a strip of silhouettes)."""
    return "image/jpeg" if image[:3] == b"\xff\xd8\xff" else "image/png"


def parse_cameras(cameras: Collection[str] | None) -> frozenset[str] | None:
    """None or empty: every camera."""
    chosen = frozenset(c.strip() for c in cameras or () if c.strip())
    return chosen or None

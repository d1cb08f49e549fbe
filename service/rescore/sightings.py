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

Search (`CompactTrackSearch`) uses gallery.compact_index over the archive's tracks, kept beside the
state (`<state>.sightings-<model id>.idx`) and brought up to date with the state on load: tracks are
shortlisted by their compressed codes (~100 bytes each in memory) and scored exactly from the
state's embeddings. Archives under `INDEX_SPEC.train_size` (4,096) tracks are held exactly and
searched exhaustively: the compact index's own fallback, so there is one search path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gaitid.contract import search_vectors
from gallery.compact_index import CompactIndex, CompactSpec, FullVectors
from gallery.index import IndexFileError
from service.rescore.errors import GalleryMismatchError, OptionError, StateError
from service.rescore.sources import time_key
from service.rescore.store import RescoreState, StoredTrack, find_state

log = logging.getLogger("gaitid.rescore")

MAX_LIMIT = 10_000
RELOAD_S = 30.0  # the service reloads a changed archive at most this often
# The shortlist margin: how far below its exact score a track's compressed score may lie. Measured
# on each index when it learns its compression (`calibrate_margin`: the largest shortfall among the
# nearest neighbours of sampled tracks, plus MARGIN_SLACK); on the shipped model's real CASIA-B
# embeddings ~0.4, with which every track above the threshold was found (bench/sightings.py).
MARGIN_SLACK = 0.02
CALIBRATION_QUERIES = 128
CALIBRATION_NEIGHBOURS = 32
# The archive's index holds its first 4,096 tracks exactly, then learns its compression from them
# (gallery.compact_index: PCA to 256 dimensions, 4-bit PQ: 64 bytes of codes + 8 of id a track,
# plus ~4 MB of learnt tables; 413 bytes a track in all at 12k tracks, bench/sightings.py).
INDEX_SPEC = CompactSpec(train_size=4096)
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
    """The subject's walks from an open `gallery.Gallery` (SubjectNotFoundError when not enrolled,
    or erased: an erased subject has no walk to search with, so no sighting, only "not found")."""
    record = gallery.get_subject(subject_id, namespace=namespace)
    model_id = gallery.status(namespace).model_id
    ids, embeddings = gallery.subject_embeddings(record.subject_id, namespace=namespace)
    if not len(ids):  # erased since the look-up: say so, not "re-embed"
        gallery.get_subject(subject_id, namespace=namespace)
    if model_id is None or not len(ids):
        raise GalleryMismatchError(
            f"subject {record.subject_id!r} has no embedding of the gallery's model {model_id}: re-embed the gallery")
    return SubjectWalks(record.subject_id, record.display_name, str(model_id), ids, embeddings)


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
    row: int  # the content track's row id in the state and the index (copies of a video share it)

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
    """Similarities of the archive's tracks (by row id) to a subject's walks."""

    def scores(self, queries: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, C, P) queries, candidate row ids -> (row ids, best similarity, index of the best query)
        of the candidates at or above `threshold`."""
        ...


class CompactTrackSearch:
    """The archive's tracks in a `gallery.compact_index.CompactIndex` (ids: the tracks' row ids).

    Every track at or above the threshold is found, not a fixed top-k: a walk's shortlist (compressed
    scores) grows fourfold until its weakest entry scores below `threshold - margin` or it holds
    every track (margin: the index's measured compression error, `calibrate_margin`); the shortlisted tracks are then scored exactly (the contract's search vectors,
    read from the state) and kept at or above `threshold`. Below `INDEX_SPEC.train_size` tracks the
    index holds the vectors exactly, so small archives are searched exhaustively and exactly.
    """

    def __init__(self, index: CompactIndex, full_vectors: FullVectors, margin: float):
        self.index = index
        self.full_vectors = full_vectors
        self.margin = margin  # 0 while the index holds its vectors exactly

    def scores(self, queries: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        admitted = np.asarray(rows, np.int64)
        if not len(admitted) or not self.index.ntotal:
            return admitted[:0], np.zeros(0, np.float32), np.zeros(0, np.int64)
        vectors = search_vectors(queries)
        candidates = [self._shortlist(query, threshold - self.margin) for query in vectors]
        union = np.unique(np.concatenate(candidates))
        union = union[np.isin(union, admitted)]
        if not len(union):
            return union, np.zeros(0, np.float32), np.zeros(0, np.int64)
        found, full = self.full_vectors(union)
        similarity = full @ vectors.T  # (n, K): exact
        best_query = similarity.argmax(axis=1)
        best = similarity[np.arange(len(found)), best_query]
        keep = best >= threshold
        return found[keep], best[keep], best_query[keep]

    def _shortlist(self, query: np.ndarray, floor: float) -> np.ndarray:
        k = self.index.spec.shortlist
        while True:
            approx, ids = self.index.shortlist(query[None], k)
            ids, approx = ids[0], approx[0]
            held = ids >= 0
            if k >= self.index.ntotal or not held.all() or approx[held][-1] < floor:
                return ids[held & (approx >= floor)]
            k *= 4


def sightings_index_path(state: RescoreState, model_id: str) -> Path:
    """The archive's compact index beside its state: rebuilt from the state whenever missing or unreadable."""
    return state.path.with_name(f"{state.path.name}.sightings-{model_id}.idx")


def sync_index(state: RescoreState, model_id: str, current: np.ndarray,
               spec: CompactSpec | None = None) -> tuple[CompactIndex, float]:
    """The compact index of the state's tracks of `model_id` (`current`: their row ids), brought up
    to date, and its shortlist margin.

    Loaded from its file; tracks gone (or whose file was processed again: SQLite may give their new
    rows the old ids) are removed, then tracks new since are added. Plain removal is safe since
    CompactIndex.remove clears the slots faiss's fast-scan removal left stale
    (`_clear_fast_scan_padding`); a file written before then (its header counts "dead" entries kept
    in place of removals) is rebuilt once. The margin is measured again when the index learnt its
    compression or doubled since. Saved when anything changed; built from scratch when there is no
    usable file."""
    path = sightings_index_path(state, model_id)
    synced_at = state.last_processed_at(model_id) or ""
    index, header = None, {}
    if path.is_file():
        try:
            index, header = CompactIndex.load(path)
            if header.get("model_id") != model_id or int(header.get("dead", 0)):
                index, header = None, {}
        except IndexFileError as exc:
            log.warning("rebuilding the sightings index %s: %s", path, exc)
            index, header = None, {}
    changed = index is None
    if index is not None:
        held = np.unique(index.ids())
        redone = np.array(state.rowids_processed_since(model_id, str(header.get("synced_at") or "")), np.int64)
        gone = np.union1d(np.setdiff1d(held, current), np.intersect1d(redone, held))
        fresh = np.union1d(np.setdiff1d(current, held), np.intersect1d(redone, current))
        index.remove(gone)
        for ids, vectors in _vector_chunks(state, model_id, fresh):
            index.add(ids, vectors)
        changed = bool(len(gone)) or bool(len(fresh)) or header.get("synced_at") != synced_at
    if index is None:
        index = _build(state, model_id, current, spec)
        header = {}
    if index is None:  # no track of this model at all
        return CompactIndex(1, spec or INDEX_SPEC), 0.0
    margin, calibrated_at = float(header.get("margin", 0.0)), int(header.get("calibrated_at", 0))
    if not index.trained:
        margin, calibrated_at = 0.0, 0
    elif not calibrated_at or index.ntotal >= 2 * calibrated_at:
        margin, calibrated_at = calibrate_margin(index, state_vectors(state, model_id)), index.ntotal
        changed = True
    if changed:
        try:
            index.save(path, {"model_id": model_id, "synced_at": synced_at, "margin": margin,
                              "calibrated_at": calibrated_at})
        except OSError as exc:  # a read-only archive: search from memory, rebuild next time
            log.warning("the sightings index cannot be saved to %s: %s", path, exc)
    return index, margin


def calibrate_margin(index: CompactIndex, full_vectors: FullVectors, seed: int = 0) -> float:
    """The largest shortfall of a compressed score below the exact one, among the nearest
    neighbours (by compressed score) of up to CALIBRATION_QUERIES sampled tracks, plus MARGIN_SLACK."""
    ids = np.sort(index.ids())
    sample = np.sort(np.random.default_rng(seed).choice(ids, min(CALIBRATION_QUERIES, len(ids)), replace=False))
    _, queries = full_vectors(sample)
    approx, neighbours = index.shortlist(queries, CALIBRATION_NEIGHBOURS)
    held = neighbours >= 0
    known, vectors = full_vectors(np.unique(neighbours[held]))
    positions = np.searchsorted(known, neighbours[held])
    exact = np.einsum("nd,nd->n", vectors[positions], np.repeat(queries, held.sum(axis=1), axis=0))
    return float(max(0.0, (exact - approx[held]).max())) + MARGIN_SLACK


def _build(state: RescoreState, model_id: str, rowids: np.ndarray, spec: CompactSpec | None) -> CompactIndex | None:
    """A new index of the tracks (None when there are none): exact until it holds spec.train_size
    tracks, then it learns its compression from them."""
    dim = _dim(state, model_id, rowids)
    if not dim:
        return None
    index = CompactIndex(dim, spec or INDEX_SPEC)
    for ids, vectors in _vector_chunks(state, model_id, rowids):
        index.add(ids, vectors)
    return index


def _dim(state: RescoreState, model_id: str, rowids: np.ndarray) -> int:
    if not len(rowids):
        return 0
    _, first = state.embeddings_by_rowid(rowids[:1], model_id)
    return int(np.prod(first.shape[1:]))


def _vector_chunks(state: RescoreState, model_id: str, rowids: np.ndarray, size: int = _VECTOR_CHUNK):
    for start in range(0, len(rowids), size):
        found, embeddings = state.embeddings_by_rowid(rowids[start:start + size], model_id)
        if len(found):
            yield found, search_vectors(embeddings)


def state_vectors(state: RescoreState, model_id: str) -> FullVectors:
    """The compact index's re-ranking callback: exact search vectors of row ids, read from the state."""
    def fetch(rowids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found, embeddings = state.embeddings_by_rowid(rowids, model_id)
        return found, search_vectors(embeddings) if len(found) else np.zeros((0, 0), np.float32)

    return fetch


@dataclass
class ArchiveTracks:
    """The archive's tracks of one embedding model, searchable."""

    model_id: str
    tracks: list[ArchiveTrack]  # one per (video, track), in listing order
    search: TrackSearch

    @classmethod
    def load(cls, state: RescoreState, model_id: str, spec: CompactSpec | None = None) -> ArchiveTracks:
        sources = [s for s in state.sources() if s.sha256 is not None]
        if not sources:
            raise StateError(f"{state.path} lists no re-scored video: run `gaitid rescore` with this state first")
        if not state.counts(model_id)["done"]:
            models = state.model_ids()
            raise GalleryMismatchError(
                f"{state.path} has no track of the gallery's model {model_id}"
                + (f" (it holds tracks of {', '.join(models)})" if models else "")
                + ": re-score the archive with the gallery's model")
        wanted = {s.sha256 for s in sources}
        files = state.files(wanted, model_id)
        content: dict[str, list[StoredTrack]] = {}
        rowids = []  # every track of the model, listed or not: what the index holds
        for sha, stored in state.iter_tracks(model_id, embeddings=False):
            rowids.append(stored.rowid)
            if sha in wanted:
                content.setdefault(sha, []).append(stored)
        tracks = []
        for source in sources:
            file = files.get(source.sha256)
            fps = file.fps if file is not None and file.fps else None
            for stored in content.get(source.sha256, []):
                frames = stored.frame_indices.astype(np.int64)
                first, last = int(frames.min()), int(frames.max())
                box = tuple(float(v) for v in np.round(np.median(stored.boxes.astype(np.float64), axis=0), 1))
                tracks.append(ArchiveTrack(
                    video=source.path, sha256=source.sha256, track_id=stored.track_id, camera=source.camera,
                    start_time=_at(source.recorded_at, first, fps), end_time=_at(source.recorded_at, last, fps),
                    time_source=source.time_source, first_frame=first, last_frame=last, frames=len(frames), fps=fps,
                    box=box, row=stored.rowid))  # type: ignore[arg-type]
        index, margin = sync_index(state, model_id, np.array(sorted(rowids), np.int64), spec)
        return cls(model_id, tracks, CompactTrackSearch(index, state_vectors(state, model_id), margin))

    def cameras(self) -> list[str]:
        return sorted({t.camera for t in self.tracks if t.camera is not None})


class SightingsArchive:
    """A re-scoring state opened for many queries (the service): each model's tracks are loaded once
    and again after the state changed (a re-scoring run commits each file), at most every
    `reload_s` seconds so a running job does not make every query reload. Thread-safe."""

    def __init__(self, path: str | Path, reload_s: float = RELOAD_S):
        self.state = RescoreState(find_state(path))
        self.reload_s = reload_s
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[int, float, ArchiveTracks]] = {}

    def tracks(self, model_id: str) -> ArchiveTracks:
        with self._lock:
            version = self.state.data_version()
            cached = self._loaded.get(model_id)
            stale = cached is not None and cached[0] != version and time.monotonic() - cached[1] >= self.reload_s
            if cached is None or stale:
                cached = (version, time.monotonic(), ArchiveTracks.load(self.state, model_id))
                self._loaded = {model_id: cached}  # one model's tracks held at a time
            return cached[2]

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

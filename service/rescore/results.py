"""The results file: one record per (video, track), scored against the gallery, in JSONL, CSV or Parquet.

The file is a view of the state (service.rescore.store), never a journal: it is rewritten from the
state at the end of every run, and also when a run stops early (exception, Ctrl-C), through a
temporary file in the same folder and an atomic rename. So a reader never sees a half-written file,
and a re-run never duplicates a record. Every write re-scores all stored embeddings against the
gallery as it is now (a FAISS search per track: milliseconds), which is what makes "the gallery
changed" cheap: no video is decoded again.

Record fields (RECORD_FIELDS, in this order):
    video            the path as listed (folder walk or list file)
    camera           from the camera mapping or the path (service.rescore.sources), or null
    recorded_at      start of the recording (service.rescore.sources: from the path, naive local
                     time; else the container's creation time or the file's mtime, UTC with
                     +00:00), ISO 8601, or null
    sha256, model_id the content hash and the embedding model: the state's key
    track_id         the person track within the video (null on an error record)
    first_frame, last_frame, frames   source-stream frame range and number of aligned frames
    start_s, end_s   the track's frame range in seconds from the start of the video
    start_time, end_time   recorded_at + start_s / end_s (null without recorded_at)
    fps              the stream's frame rate
    frame_indices, boxes   per aligned frame: source frame index and xyxy box (upright source pixels)
    candidates       the top-k subjects, best first: subject_id, display_name, similarity
                     (mean per-part cosine in [-1, 1])
    decision         "match" (best similarity >= threshold), "unknown", or "error"
    subject_id, similarity   the match (subject null when unknown) and the best similarity
    threshold, namespace, gallery_generation   what the decision was made with
    error_code, error   why a video has no track (invalid_video, no_person, too_few_frames,
                     clip_too_long, unreadable, internal_error); null on track records
    redacted         true when a subject erased from the gallery was taken out of this record
                     afterwards (service.rescore.redact); it never says who
CSV stores the list fields as JSON text; Parquet as typed lists and structs.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.rescore.errors import GalleryMismatchError, OptionError
from service.rescore.extract import FileOutcome
from service.rescore.sources import SourceFacts
from service.rescore.store import FileRecord, RescoreState, StoredTrack

ResultsFormat = Literal["jsonl", "csv", "parquet"]
FORMAT_BY_SUFFIX: dict[str, ResultsFormat] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
}
RECORD_FIELDS = (
    "video", "camera", "recorded_at", "sha256", "model_id", "track_id", "first_frame", "last_frame", "frames",
    "start_s", "end_s", "start_time", "end_time", "fps", "frame_indices", "boxes", "candidates", "decision",
    "subject_id", "similarity", "threshold", "namespace", "gallery_generation", "error_code", "error", "redacted",
)
_LIST_FIELDS = ("frame_indices", "boxes", "candidates")
_CHUNK_FILES = 256  # files whose tracks are scored in one gallery search


def results_format(path: str | Path, explicit: str | None = None) -> ResultsFormat:
    """The format asked for, else the one the file name says."""
    if explicit:
        if explicit not in ("jsonl", "csv", "parquet"):
            raise OptionError(f"--format must be jsonl, csv or parquet, not {explicit!r}")
        return explicit  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise OptionError(f"cannot tell the results format from {Path(path).name!r}: name it .jsonl, .csv or "
                          ".parquet, or pass --format")
    return FORMAT_BY_SUFFIX[suffix]


# -- scoring ----------------------------------------------------------------------------------


class GalleryScorer:
    """Top-k subjects and the open-set decision for batches of embeddings, from one gallery namespace."""

    def __init__(self, gallery: Any, *, namespace: str, top_k: int, threshold: float | None = None):
        self.gallery = gallery
        self.namespace = namespace
        self.top_k = int(top_k)
        self.threshold = float(gallery.threshold if threshold is None else threshold)
        self.generation = int(gallery.status(namespace).generation)

    def check_model(self, model_id: str) -> None:
        """Fail before any work when the namespace holds another model's embeddings."""
        status = self.gallery.status(self.namespace)
        if status.needs_reembed(model_id):
            raise GalleryMismatchError(
                f"gallery namespace {self.namespace!r} holds embeddings of model {status.model_id}, but re-scoring "
                f"uses model {model_id}: re-embed the gallery with this model, or re-score with the gallery's model")

    def score(self, embeddings: np.ndarray, model_id: str) -> list[Any]:
        """(N, C, P) -> N `gallery.Identification`s."""
        if not len(embeddings):
            return []
        from gallery import ModelMismatchError

        try:
            return self.gallery.search(embeddings, model_id=model_id, namespace=self.namespace, top_k=self.top_k,
                                       threshold=self.threshold)
        except ModelMismatchError as exc:
            raise GalleryMismatchError(str(exc)) from exc


# -- records ----------------------------------------------------------------------------------


def build_records(paths: Sequence[str], state: RescoreState, model_id: str, scorer: GalleryScorer,
                  sources: Mapping[str, SourceFacts],
                  run_failures: dict[str, FileOutcome] | None = None) -> Iterator[dict]:
    """Records of every listed video the state knows, in listing order. Videos not processed yet
    (an interrupted run) have none. `sources`: camera and start time per path. `run_failures`:
    this run's failures that have no content hash (unreadable files), which the state cannot hold."""
    run_failures = run_failures or {}
    for start in range(0, len(paths), _CHUNK_FILES):
        chunk = list(paths[start:start + _CHUNK_FILES])
        hashes = state.path_hashes([p for p in chunk if p not in run_failures])
        files = state.files(hashes.values(), model_id)
        tracks = state.tracks([h for h in hashes.values() if h in files], model_id)
        ordered = [(p, t) for p in chunk if hashes.get(p) in files for t in tracks[hashes[p]]]
        answers = scorer.score(np.stack([t.embedding for _, t in ordered]) if ordered else np.zeros((0,)), model_id)
        by_track = {(p, t.track_id): a for (p, t), a in zip(ordered, answers)}
        for path in chunk:
            info = sources.get(path) or SourceFacts(path, None, None, None, None)
            if path in run_failures:
                failure = run_failures[path]
                yield _error_record(path, info, failure.sha256, model_id, failure.error_code, failure.error_message,
                                    scorer)
                continue
            sha = hashes.get(path)
            if sha is None or sha not in files:
                continue
            file = files[sha]
            if not tracks[sha]:
                yield _error_record(path, info, sha, model_id, file.error_code or "no_person",
                                    file.error_message or "no usable person track", scorer, fps=file.fps)
                continue
            for track in tracks[sha]:
                yield _track_record(path, info, file, track, by_track[(path, track.track_id)], scorer)


def _base(path: str, info: Any, sha: str | None, model_id: str, scorer: GalleryScorer) -> dict:
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(video=path, camera=info.camera, recorded_at=_iso(info.recorded_at), sha256=sha, model_id=model_id,
                  threshold=scorer.threshold, namespace=scorer.namespace, gallery_generation=scorer.generation,
                  frame_indices=[], boxes=[], candidates=[], frames=0, redacted=False)
    return record


def _track_record(path: str, info: Any, file: FileRecord, track: StoredTrack, answer: Any,
                  scorer: GalleryScorer) -> dict:
    record = _base(path, info, file.sha256, file.model_id, scorer)
    frames = track.frame_indices.astype(np.int64)
    first, last = int(frames.min()), int(frames.max())
    fps = file.fps or None
    start_s = round(first / fps, 3) if fps else None
    end_s = round(last / fps, 3) if fps else None
    best = answer.best
    record.update(
        track_id=track.track_id, first_frame=first, last_frame=last, frames=len(frames),
        start_s=start_s, end_s=end_s, fps=fps,
        start_time=_offset(info.recorded_at, start_s), end_time=_offset(info.recorded_at, end_s),
        frame_indices=frames.tolist(), boxes=np.round(track.boxes.astype(np.float64), 1).tolist(),
        candidates=[{"subject_id": c.subject_id, "display_name": c.display_name, "similarity": round(c.score, 6)}
                    for c in answer.candidates],
        decision="match" if answer.is_known else "unknown",
        subject_id=answer.subject_id,
        similarity=None if best is None else round(best.score, 6),
    )
    return record


def _error_record(path: str, info: Any, sha: str | None, model_id: str, code: str | None, message: str | None,
                  scorer: GalleryScorer, fps: float | None = None) -> dict:
    record = _base(path, info, sha, model_id, scorer)
    record.update(decision="error", error_code=code or "internal_error", error=message or "", fps=fps)
    return record


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def _offset(moment: datetime | None, seconds: float | None) -> str | None:
    if moment is None or seconds is None:
        return None
    return _iso(moment + timedelta(seconds=seconds))


# -- writing ----------------------------------------------------------------------------------


class ResultsWriter:
    """Writes records to a temporary file beside `path`; `commit()` renames it over `path` atomically."""

    def __init__(self, path: str | Path, fmt: ResultsFormat):
        self.path = Path(path)
        self.format = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(handle)
        self._tmp = Path(tmp)
        self.count = 0
        self._file = None
        self._csv = None
        self._parquet = None
        if fmt == "parquet":
            import pyarrow.parquet as pq  # optional dependency: gaitid[parquet]

            self._parquet = pq.ParquetWriter(self._tmp, parquet_schema())
        else:
            self._file = open(self._tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 -- closed in commit/abort
            if fmt == "csv":
                self._csv = csv.DictWriter(self._file, fieldnames=RECORD_FIELDS)
                self._csv.writeheader()

    def write(self, records: Sequence[dict]) -> None:
        if not records:
            return
        if self._parquet is not None:
            import pyarrow as pa

            self._parquet.write_table(pa.Table.from_pylist(list(records), schema=parquet_schema()))
        elif self._csv is not None:
            self._csv.writerows(_csv_row(r) for r in records)
        else:
            assert self._file is not None
            self._file.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self.count += len(records)

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        else:
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            if self._parquet is not None:
                self._parquet.close()
            elif self._file is not None:
                self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def write_results(path: str | Path, records: Iterator[dict], fmt: ResultsFormat, chunk: int = 1000) -> int:
    """Write all records atomically; returns how many."""
    writer = ResultsWriter(path, fmt)
    try:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= chunk:
                writer.write(batch)
                batch = []
        writer.write(batch)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.count


def parquet_schema():
    import pyarrow as pa

    candidate = pa.struct([("subject_id", pa.string()), ("display_name", pa.string()), ("similarity", pa.float64())])
    types = {
        "track_id": pa.int64(), "first_frame": pa.int64(), "last_frame": pa.int64(), "frames": pa.int64(),
        "start_s": pa.float64(), "end_s": pa.float64(), "fps": pa.float64(), "similarity": pa.float64(),
        "threshold": pa.float64(), "gallery_generation": pa.int64(), "redacted": pa.bool_(),
        "frame_indices": pa.list_(pa.int64()), "boxes": pa.list_(pa.list_(pa.float64())),
        "candidates": pa.list_(candidate),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in RECORD_FIELDS])


def _csv_row(record: dict) -> dict:
    return {k: json.dumps(v) if k in _LIST_FIELDS else ("" if v is None else v) for k, v in record.items()}


# -- reading ----------------------------------------------------------------------------------


def read_results(path: str | Path, fmt: str | None = None) -> list[dict]:
    """Records of a results file in any of the three formats, with list fields as lists again."""
    return list(iter_results(path, fmt))


def iter_results(path: str | Path, fmt: str | None = None, batch: int = 1000) -> Iterator[dict]:
    """read_results one record at a time (a large file is never held whole)."""
    path = Path(path)
    if not path.exists():
        raise OptionError(f"the results file {path} does not exist")
    kind = results_format(path, fmt)
    if kind == "parquet":
        import pyarrow.parquet as pq

        for chunk in pq.ParquetFile(path).iter_batches(batch_size=batch):
            yield from chunk.to_pylist()
        return
    with open(path, encoding="utf-8", newline="") as handle:
        if kind == "jsonl":
            yield from (json.loads(line) for line in handle if line.strip())
        else:
            yield from (_from_csv_row(row) for row in csv.DictReader(handle))


def results_fields(path: str | Path, fmt: str | None = None) -> frozenset[str]:
    """The field names a results file declares (its first record's, its CSV header, its Parquet
    schema); empty for an empty or unreadable file. Cheap: reads no more than one record."""
    try:
        kind = results_format(path, fmt)
        if kind == "parquet":
            import pyarrow.parquet as pq

            return frozenset(pq.read_schema(path).names)
        with open(path, encoding="utf-8", newline="") as handle:
            if kind == "csv":
                return frozenset(csv.DictReader(handle).fieldnames or ())
            for line in handle:
                if line.strip():
                    first = json.loads(line)
                    return frozenset(first) if isinstance(first, dict) else frozenset()
    except Exception:  # noqa: BLE001 -- not a results file, whatever the reason
        return frozenset()
    return frozenset()


_CSV_INTS = ("track_id", "first_frame", "last_frame", "frames", "gallery_generation")
_CSV_FLOATS = ("start_s", "end_s", "fps", "similarity", "threshold")
_CSV_BOOLS = ("redacted",)


def _from_csv_row(row: dict) -> dict:
    record: dict[str, Any] = {}
    for key, value in row.items():
        if key in _LIST_FIELDS:
            record[key] = json.loads(value) if value else []
        elif value == "":
            record[key] = None
        elif key in _CSV_INTS:
            record[key] = int(value)
        elif key in _CSV_FLOATS:
            record[key] = float(value)
        elif key in _CSV_BOOLS:
            record[key] = value == "True"
        else:
            record[key] = value
    return record

"""One archived video -> its person tracks, each with an embedding, boxes and a thumbnail strip.

The work is split in two so the local runner can overlap them (`Extractor.prepare` in a pool of
producer threads: hash, decode, segment, track, depth, align; `Extractor.finish` in the consumer:
embed) and the Ray runner can do both in one actor call (`Extractor.extract`). Both paths run the
same code, so they give the same records.

What happens to a file's failure:
- a `PipelineError` (corrupt video, nobody walking, too short a walk, too long a clip) is a fact
  about the file's content: the file is "done" with an error and is not retried;
- anything else (the file vanished or cannot be read, an unexpected exception) may be transient:
  the file is "failed", reported, and retried by the next run;
- `BaseException`s that are not `Exception`s (Ctrl-C, SystemExit) stop the job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from gaitid.contract import SequenceEmbedder, file_sha256, model_id
from service.pipeline.config import PipelineSettings, require_model
from service.pipeline.decode import even_sample
from service.pipeline.errors import PipelineError
from service.pipeline.pipeline import ClipProcessor, ClipResult, build_pipeline
from service.pipeline.thumbnails import strip_of
from service.pipeline.types import AlignedSequence, ClipOverrides
from service.rescore.archive import FileStat
from service.rescore.errors import OptionError

log = logging.getLogger("gaitid.rescore")

STRIP_FRAMES = 8  # aligned frames shown per track in the report
THUMBNAIL_QUALITY = 80  # JPEG quality of a track's thumbnail: ~10 KB for a strip of 8 crops 96 px high
FileStatus = Literal["done", "failed", "skipped"]


@dataclass(frozen=True)
class FileJob:
    """A video to look at; `known_sha256` when the state's cached hash still matches the file's stat;
    `overrides`: its camera's processing settings (service.cameras), None for the server's."""

    path: str
    known_sha256: str | None = None
    overrides: ClipOverrides | None = None


@dataclass
class TrackOutcome:
    track_id: int
    frame_indices: np.ndarray  # (T,) int64 source-stream frame indices of the aligned frames
    boxes: np.ndarray  # (T, 4) float32 xyxy in the upright source video's pixels
    embedding: np.ndarray  # (C, P) float32
    strip_png: bytes  # a few aligned silhouettes side by side (depth below them when computed)
    thumbnail: bytes = b""  # JPEG of the person's crops over the walk (service.pipeline.thumbnails), ~10 KB


@dataclass
class FileOutcome:
    """Everything the state keeps about one video for one embedding model."""

    path: str
    model_id: str
    status: FileStatus
    sha256: str | None = None
    stat: FileStat | None = None
    tracks: list[TrackOutcome] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    fps: float | None = None
    frame_count: int = 0  # frames decoded (after sampling)
    size: tuple[int, int] | None = None  # (width, height) of the processed frames
    seconds: float = 0.0  # wall time spent on this file
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Prepared:
    """A producer's result, waiting for the embedder."""

    job: FileJob
    sha256: str | None = None
    stat: FileStat | None = None
    result: ClipResult | None = None
    strips: dict[int, bytes] = field(default_factory=dict)
    thumbnails: dict[int, bytes] = field(default_factory=dict)
    outcome: FileOutcome | None = None  # already final: skipped or failed before embedding
    started: float = field(default_factory=time.perf_counter)


class ContentClaims:
    """Content hashes being processed in this run, so identical copies of a video are embedded once.

    Thread-safe. The copies are recorded as "skipped" and share the first copy's tracks in the results.
    """

    def __init__(self) -> None:
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, sha256: str) -> bool:
        with self._lock:
            if sha256 in self._claimed:
                return False
            self._claimed.add(sha256)
            return True


class Extractor:
    """A clip pipeline (built without an embedder: it stops at aligned sequences) plus the embedder;
    safe to share between threads."""

    def __init__(self, pipeline: ClipProcessor, embedder: SequenceEmbedder, strip_frames: int = STRIP_FRAMES):
        self.pipeline = pipeline
        self.embedder = embedder
        self.strip_frames = strip_frames

    @property
    def model_id(self) -> str:
        return str(self.embedder.model_id)

    def prepare(self, job: FileJob, done: Container[str] = frozenset(),
                claims: ContentClaims | None = None) -> Prepared:
        """Hash, skip when done, else run the pipeline up to aligned sequences. Never raises an Exception."""
        prepared = Prepared(job)
        try:
            prepared.stat = FileStat.of(Path(job.path))
            prepared.sha256 = job.known_sha256 or file_sha256(job.path)
        except OSError as exc:
            prepared.outcome = self._failed(prepared, "unreadable", f"the file cannot be read: {exc.strerror or exc}")
            return prepared
        if prepared.sha256 in done or (claims is not None and not claims.claim(prepared.sha256)):
            prepared.outcome = self._outcome(prepared, "skipped")
            return prepared
        try:
            prepared.result = self.pipeline.process(job.path, job.overrides)
            prepared.strips = {s.track_id: self.strip(s) for s in prepared.result.sequences}
            prepared.thumbnails = {s.track_id: track_thumbnail(s) for s in prepared.result.sequences}
        except PipelineError as exc:
            prepared.outcome = self._outcome(prepared, "done", error_code=exc.code, error_message=exc.message)
        except Exception as exc:  # one bad file must not stop an archive
            log.exception("unexpected failure on %s", job.path)
            prepared.outcome = self._failed(prepared, "internal_error", f"{type(exc).__name__}: {exc}")
        return prepared

    def finish(self, prepared: Prepared) -> FileOutcome:
        """Embed the prepared sequences. Never raises an Exception."""
        if prepared.outcome is not None:
            return prepared.outcome
        result = prepared.result
        assert result is not None
        tracks = []
        started = time.perf_counter()
        # Boxes in the upright source video's pixels: what a viewer of the archived file sees.
        to_source = np.array([result.source_size[0] / result.size[0], result.source_size[1] / result.size[1]] * 2,
                             np.float32)
        try:
            embeddings = self.embedder.embed([sequence.model_input() for sequence in result.sequences])
            for sequence, embedding in zip(result.sequences, embeddings):
                tracks.append(TrackOutcome(
                    track_id=int(sequence.track_id),
                    frame_indices=np.asarray(sequence.frame_indices, np.int64),
                    boxes=np.asarray(sequence.boxes, np.float32) * to_source,
                    embedding=np.asarray(embedding, np.float32),
                    strip_png=prepared.strips.get(sequence.track_id, b""),
                    thumbnail=prepared.thumbnails.get(sequence.track_id, b""),
                ))
        except Exception as exc:
            log.exception("embedding failed on %s", prepared.job.path)
            return self._failed(prepared, "internal_error", f"embedding failed: {type(exc).__name__}: {exc}")
        outcome = self._outcome(prepared, "done")
        outcome.tracks = tracks
        outcome.fps = float(result.fps)
        outcome.frame_count = int(result.frame_count)
        outcome.size = (int(result.size[0]), int(result.size[1]))
        outcome.timings = {**{k: float(v) for k, v in result.timings.items()}, "embed": time.perf_counter() - started}
        return outcome

    def extract(self, job: FileJob, done: Container[str] = frozenset(),
                claims: ContentClaims | None = None) -> FileOutcome:
        return self.finish(self.prepare(job, done, claims))

    def strip(self, sequence: AlignedSequence) -> bytes:
        return track_strip_png(sequence, self.strip_frames)

    def _outcome(self, prepared: Prepared, status: FileStatus, **fields) -> FileOutcome:
        return FileOutcome(path=prepared.job.path, model_id=self.model_id, status=status, sha256=prepared.sha256,
                           stat=prepared.stat, seconds=time.perf_counter() - prepared.started, **fields)

    def _failed(self, prepared: Prepared, code: str, message: str) -> FileOutcome:
        return self._outcome(prepared, "failed", error_code=code, error_message=message)


def track_strip_png(sequence: AlignedSequence, frames: int = STRIP_FRAMES) -> bytes:
    """`frames` aligned silhouettes spread over the track, side by side, as a grey PNG (a few KB).

    With depth, a second row shows the aligned depth of the same frames (brighter = nearer).
    """
    count = len(sequence.silhouettes)
    picks = even_sample(count, frames)
    rows = [np.hstack(list(sequence.silhouettes[picks]))]
    if sequence.depth is not None:  # uint8 already (gaitid.contract.quantise_depth)
        rows.append(np.hstack(list(sequence.depth[picks])))
    ok, png = cv2.imencode(".png", np.vstack(rows))
    return png.tobytes() if ok else b""


def track_thumbnail(sequence: AlignedSequence, quality: int = THUMBNAIL_QUALITY) -> bytes:
    """The person's crops over the walk (the pipeline's preview; its aligned silhouettes without one)
    as a JPEG: what a sighting shows, kept in the state so the archive need not stay online."""
    strip = strip_of(sequence)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes() if ok else b""


@dataclass(frozen=True)
class ExtractorSpec:
    """How to build an `Extractor`: picklable, so a Ray actor can build its own copy once.

    settings: the pipeline's settings (embedding model, providers, threads, segmenter, limits, and
    `background_clip`, an empty-scene clip for background subtraction on fixed cameras).
    """

    settings: PipelineSettings

    @property
    def model_path(self) -> Path:
        return self.settings.embedding_path

    def model_id(self) -> str:
        """The id the embedder will tag embeddings with, without loading the model. The Ray runner
        checks every worker's embeddings carry it, so a drift between nodes cannot go unnoticed."""
        self.check()
        return model_id(self.model_path)

    def build(self) -> Extractor:
        from service.pipeline.embed import OnnxEmbedder  # onnx + onnxruntime: only when a job really runs

        self.check()
        settings = self.settings
        embedder = OnnxEmbedder(self.model_path, providers=settings.providers, threads=settings.threads)
        # The pipeline stops at aligned sequences: embedding runs in the consumer (see the module doc).
        pipeline = build_pipeline(settings, None, with_depth=embedder.metadata.needs_depth,
                                  background=settings.background_clip)
        return Extractor(pipeline, embedder)

    def check(self) -> None:
        """Fail early, with what to change, on a missing model or background clip or an unknown segmenter."""
        require_model(self.model_path, "embedding")
        background = self.settings.background_clip
        if background is not None and not Path(background).is_file():
            raise OptionError(f"the background clip {background} does not exist")
        if self.settings.segmenter not in ("auto", "yolo", "bgsub"):
            raise OptionError(f"unknown segmenter {self.settings.segmenter!r}: use auto, yolo or bgsub")

"""Records that go in and out of the gallery. Plain frozen dataclasses over numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

# Exact float32 inner product (default) or float16 codes (half the memory, scores within ~1e-3), or
# "compact": ~100 bytes/sequence of learned codes that shortlist, re-ranked exactly (gallery.compact_index).
IndexKind = Literal["flat", "fp16", "compact"]
IfExists = Literal["append", "replace", "error"]

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class SequenceInput:
    """One aligned walking sequence to enroll, with the embedding the current model made of it.

    silhouettes and depth are what the model took as input (gaitid.contract.ModelInput), so the
    gallery can feed them to a new model later: silhouettes (T, 64, 44) uint8 0..255; depth
    (T, 64, 44) uint8 (disparity quantised by `gaitid.contract.quantise_depth`) or None;
    embedding: (C, P) float (OpenGait layout, e.g. 256 x 16); metadata: JSON-serialisable facts
    about where the sequence came from (video name, track id, frame range...).
    """

    silhouettes: np.ndarray
    embedding: np.ndarray
    depth: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_aligned(cls, sequence: Any, embedding: np.ndarray,
                     metadata: Mapping[str, Any] | None = None) -> SequenceInput:
        """From an aligned sequence of the clip pipeline (`.silhouettes`, `.depth`: the model's
        inputs) and its embedding."""
        return cls(silhouettes=sequence.silhouettes, embedding=embedding, depth=sequence.depth,
                   metadata=dict(metadata or {}))


@dataclass(frozen=True)
class SequenceRecord:
    """What the gallery keeps about one enrolled sequence (arrays not loaded)."""

    sequence_id: int  # stable int64 id, also the vector's id in the FAISS index
    subject_id: str
    frames: int
    has_depth: bool
    model_ids: tuple[str, ...]  # models that have an embedding of this sequence
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class StoredSequence:
    """A sequence with its arrays decompressed (for re-embedding or inspection)."""

    record: SequenceRecord
    silhouettes: np.ndarray  # (T, 64, 44) uint8
    depth: np.ndarray | None  # (T, 64, 44) uint8 or None


@dataclass(frozen=True)
class SubjectSummary:
    namespace: str
    subject_id: str
    display_name: str
    metadata: dict[str, Any]
    sequence_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SubjectRecord(SubjectSummary):
    sequences: tuple[SequenceRecord, ...] = ()


@dataclass(frozen=True)
class SubjectIdProblem:
    """A stored subject id that breaks today's subject-id rule (gallery.subject_ids), and why."""

    namespace: str
    subject_id: str
    problem: str


@dataclass(frozen=True)
class Candidate:
    """One enrolled subject proposed for a query, scored by its best-matching sequence."""

    subject_id: str
    display_name: str
    score: float  # the model's similarity (part-cosine: mean per-part cosine in [-1, 1])
    sequence_id: int  # the subject's sequence that matched best


@dataclass(frozen=True)
class Identification:
    """Answer for one query: the top-k subjects (each subject once), best first, and the
    open-set decision: the best candidate if its score >= threshold, else unknown."""

    candidates: tuple[Candidate, ...]
    threshold: float

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def is_known(self) -> bool:
        return self.best is not None and self.best.score >= self.threshold

    @property
    def subject_id(self) -> str | None:
        """The identified subject, or None for "unknown"."""
        return self.best.subject_id if self.is_known and self.best else None


@dataclass(frozen=True)
class IndexInfo:
    kind: IndexKind
    device: Literal["cpu", "gpu"]
    vectors: int
    generation: int  # the database generation the index reflects
    loaded_from: Literal["file", "rebuilt", "empty"]  # how it was obtained at its last (re)load
    path: str  # the index file of this namespace (may not exist yet)
    rebuild_reason: str | None = None  # why the file was not used: missing | stale: ... | corrupt: ...


@dataclass(frozen=True)
class GalleryStatus:
    namespace: str
    model_id: str | None  # the model whose embeddings are searched; None while empty
    embedding_shape: tuple[int, int] | None  # (C, P)
    subjects: int
    sequences: int
    generation: int  # bumped by every change to what the index holds
    index: IndexInfo | None

    def needs_reembed(self, model_id: str) -> bool:
        """True when queries of `model_id` cannot be compared with this gallery."""
        return self.sequences > 0 and self.model_id is not None and self.model_id != model_id


@dataclass(frozen=True)
class EnrollResult:
    namespace: str
    subject_id: str
    sequence_ids: tuple[int, ...]  # ids given to the new sequences
    replaced_sequence_ids: tuple[int, ...]  # removed by if_exists="replace"
    created: bool  # the subject did not exist before
    generation: int


@dataclass(frozen=True)
class ReembedReport:
    namespace: str
    old_model_id: str | None
    new_model_id: str
    embedded: int  # sequences embedded by this call
    sequences: int  # sequences in the namespace when the new model was activated
    seconds: float

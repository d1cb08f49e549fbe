"""gaitid gallery: enrolled subjects in SQLite (source of truth) + a FAISS index per namespace.

    from gallery import Gallery, SequenceInput
    with Gallery(".gaitid/gallery", threshold=0.5, similarity=embedder.metadata.similarity) as g:
        g.enroll("alice", [SequenceInput(silhouettes, embedding, depth)], model_id=embedder.model_id)
        answer = g.search(query_embedding, model_id=embedder.model_id)[0]
        answer.subject_id  # "alice", or None for unknown

The package imports nothing of the project but gaitid.contract (array layouts, similarity, the
embedding interface). Read in this order: gallery.gallery (the facade and its guarantees: namespaces,
models, crash safety, concurrency), gallery.validation, gallery.namespace_state (search answers),
gallery.namespace_indexes (index load / rebuild / persist), gallery.store (SQLite), gallery.index
(FAISS and its file format), gallery.reembedding, and gallery.calibration for choosing the
threshold (CLI: `gaitid calibrate`).
"""

from gallery.calibration import CalibrationReport, calibrate, calibrate_file
from gallery.errors import (
    GalleryClosedError,
    GalleryError,
    InvalidInputError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from gallery.gallery import Gallery
from gallery.types import (
    DEFAULT_NAMESPACE,
    Candidate,
    EnrollResult,
    GalleryStatus,
    Identification,
    IndexInfo,
    IndexKind,
    ReembedReport,
    SequenceInput,
    SequenceRecord,
    StoredSequence,
    SubjectRecord,
    SubjectSummary,
)
from gallery.validation import MAX_DISPLAY_NAME_CHARS, MAX_ID_CHARS, check_namespace

__all__ = [
    "DEFAULT_NAMESPACE",
    "MAX_DISPLAY_NAME_CHARS",
    "MAX_ID_CHARS",
    "CalibrationReport",
    "Candidate",
    "EnrollResult",
    "Gallery",
    "GalleryClosedError",
    "GalleryError",
    "GalleryStatus",
    "Identification",
    "IndexInfo",
    "IndexKind",
    "InvalidInputError",
    "ModelMismatchError",
    "ReembedReport",
    "SequenceInput",
    "SequenceNotFoundError",
    "SequenceRecord",
    "StoredSequence",
    "SubjectExistsError",
    "SubjectNotFoundError",
    "SubjectRecord",
    "SubjectSummary",
    "calibrate",
    "calibrate_file",
    "check_namespace",
]

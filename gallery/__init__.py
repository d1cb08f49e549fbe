"""gaitid gallery: enrolled subjects in SQLite (source of truth) + a FAISS index per namespace.

    from gallery import Gallery, SequenceInput
    with Gallery(".gaitid/gallery", threshold=0.5) as g:
        g.enroll("alice", [SequenceInput(silhouettes, embedding, depth)], model_id=embedder.model_id)
        answer = g.search(query_embedding, model_id=embedder.model_id)[0]
        answer.subject_id  # "alice", or None for unknown

See gallery.gallery for the guarantees (metric, namespaces, crash safety, concurrency) and
gallery.calibration for choosing the threshold (CLI: `python -m gallery calibrate`).
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
from gallery.gallery import EmbedFunction, Gallery, namespace_for_api_key
from gallery.metric import mean_part_cosine, normalize_embeddings, similarity_matrix
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

__all__ = [
    "DEFAULT_NAMESPACE",
    "CalibrationReport",
    "Candidate",
    "EmbedFunction",
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
    "mean_part_cosine",
    "namespace_for_api_key",
    "normalize_embeddings",
    "similarity_matrix",
]


"""gaitid gallery: enrolled subjects in SQLite (source of truth) + a FAISS index per namespace.

    from gallery import Gallery, SequenceInput
    with Gallery(".gaitid/gallery", threshold=0.5, similarity=embedder.metadata.similarity) as g:
        g.enroll("alice", [SequenceInput(silhouettes, embedding, depth)], model_id=embedder.model_id)
        answer = g.search(query_embedding, model_id=embedder.model_id)[0]
        answer.subject_id  # "alice", or None for unknown

The package imports nothing of the project but gaitid.contract (array layouts, similarity, the
embedding interface). Read in this order: gallery.gallery (the facade and its guarantees: namespaces,
models, crash safety, audit, concurrency), gallery.subject_ids (the subject-id rule),
gallery.metadata (its bounds), gallery.audit (the audit log), gallery.api_keys (stored keys and
roles), gallery.validation, gallery.namespace_state (search answers),
gallery.namespace_indexes (index load / rebuild / persist), gallery.store (SQLite), gallery.backends
(where the search vectors live: FAISS files, or Milvus with `Gallery(..., backend="milvus")`),
gallery.index (FAISS and its file format), gallery.reembedding, and gallery.calibration for choosing the
threshold (CLI: `gaitid calibrate`).
"""

from gallery.api_keys import ROLES, ApiKeyRecord, hash_secret, role_allows
from gallery.audit import ACTIONS, AuditContext, AuditEntry
from gallery.calibration import CalibrationReport, calibrate, calibrate_file
from gallery.errors import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    ApiKeyNotRemovableError,
    GalleryClosedError,
    GalleryError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidSubjectIdError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from gallery.gallery import Gallery
from gallery.metadata import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, metadata_from_json
from gallery.subject_ids import MAX_ID_CHARS, check_new_subject_id
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
    SubjectIdProblem,
    SubjectRecord,
    SubjectSummary,
)
from gallery.validation import MAX_DISPLAY_NAME_CHARS, MAX_PAGE_OFFSET, check_namespace

__all__ = [
    "ACTIONS",
    "DEFAULT_NAMESPACE",
    "MAX_DISPLAY_NAME_CHARS",
    "MAX_ID_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_PAGE_OFFSET",
    "ROLES",
    "ApiKeyExistsError",
    "ApiKeyNotFoundError",
    "ApiKeyNotRemovableError",
    "ApiKeyRecord",
    "AuditContext",
    "AuditEntry",
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
    "InvalidMetadataError",
    "InvalidSubjectIdError",
    "ModelMismatchError",
    "ReembedReport",
    "SequenceInput",
    "SequenceNotFoundError",
    "SequenceRecord",
    "StoredSequence",
    "SubjectExistsError",
    "SubjectIdProblem",
    "SubjectNotFoundError",
    "SubjectRecord",
    "SubjectSummary",
    "calibrate",
    "calibrate_file",
    "check_namespace",
    "check_new_subject_id",
    "hash_secret",
    "metadata_from_json",
    "role_allows",
]

"""Typed gallery errors. Each carries a stable `code` so the HTTP layer can map it to a status
without parsing messages (suggested: invalid_input 422, subject_not_found 404, subject_exists 409,
model_mismatch 409, sequence_not_found 404, key_exists 409, key_not_found 404, key_not_removable 409).

Messages name the namespace, for operators and library users; the HTTP layer never shows them to a
tenant as they are (service.errors words them without it)."""

from __future__ import annotations


class GalleryError(Exception):
    """Base class of every error the gallery raises on purpose."""

    code = "gallery_error"


class InvalidInputError(GalleryError, ValueError):
    """An argument has the wrong shape, type or value (the message says which and why)."""

    code = "invalid_input"


class InvalidSubjectIdError(InvalidInputError):
    """A new subject id breaks the subject-id rule (gallery.subject_ids)."""

    code = "invalid_subject_id"

    def __init__(self, subject_id: str, problem: str):
        super().__init__(f"subject_id {subject_id!r} {problem}")
        self.subject_id = subject_id
        self.problem = problem


class InvalidMetadataError(InvalidInputError):
    """Metadata is not a JSON object within the size and nesting bounds (gallery.validation)."""

    code = "invalid_metadata"


class SubjectNotFoundError(GalleryError, LookupError):
    code = "subject_not_found"

    def __init__(self, subject_id: str, namespace: str):
        super().__init__(f"subject {subject_id!r} is not enrolled in namespace {namespace!r}")
        self.subject_id = subject_id
        self.namespace = namespace


class SequenceNotFoundError(GalleryError, LookupError):
    code = "sequence_not_found"

    def __init__(self, sequence_id: int, namespace: str):
        super().__init__(f"sequence {sequence_id} does not exist in namespace {namespace!r}")
        self.sequence_id = sequence_id
        self.namespace = namespace


class SubjectExistsError(GalleryError):
    code = "subject_exists"

    def __init__(self, subject_id: str, namespace: str):
        super().__init__(f"subject {subject_id!r} is already enrolled in namespace {namespace!r}")
        self.subject_id = subject_id
        self.namespace = namespace


class ModelMismatchError(GalleryError):
    """The gallery's embeddings were made by another model: they must never be compared.

    Fix: re-embed the gallery with the new model (`Gallery.reembed`), or use the gallery's model.
    """

    code = "model_mismatch"

    def __init__(self, namespace: str, gallery_model_id: str, model_id: str):
        super().__init__(
            f"namespace {namespace!r} holds embeddings of model {gallery_model_id!r}, not {model_id!r}: "
            "re-embed the gallery with the new model (needs re-embed) or use the gallery's model"
        )
        self.namespace = namespace
        self.gallery_model_id = gallery_model_id
        self.model_id = model_id


class GalleryClosedError(GalleryError):
    code = "gallery_closed"

    def __init__(self) -> None:
        super().__init__("the gallery is closed")


class ApiKeyExistsError(GalleryError):
    code = "key_exists"

    def __init__(self, name: str, same_secret: bool = False):
        super().__init__(f"an API key with this {'secret' if same_secret else 'name'} exists already"
                         + ("" if same_secret else f": {name!r}"))
        self.name = name


class ApiKeyNotFoundError(GalleryError, LookupError):
    code = "key_not_found"

    def __init__(self, name: str, namespace: str):
        super().__init__(f"no API key named {name!r} opens namespace {namespace!r}")
        self.name = name
        self.namespace = namespace


class ApiKeyNotRemovableError(GalleryError):
    """The key is the namespace's last admin key, or it belongs to the operator's configuration."""

    code = "key_not_removable"

"""Validation of what callers hand the gallery: names, ids, numbers, pages, metadata, embeddings, sequences.

Every check raises InvalidInputError (or a subclass with its own code) saying which argument is
wrong and why. Subject ids follow their own rule (gallery.subject_ids), metadata its bounds
(gallery.metadata). Array layouts and the similarity are the embedding-model contract's
(gaitid.contract); its ContractError is reported as InvalidInputError here, so callers of the
gallery see one error type for bad input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from gaitid.contract import ContractError, ModelInput, Similarity, as_embedding_batch, search_vectors
from gallery.errors import InvalidInputError
from gallery.metadata import json_object
from gallery.store import NewSequence, encode_array
from gallery.subject_ids import MAX_ID_CHARS
from gallery.types import IfExists, IndexKind, SequenceInput

# Namespace names become file names (index/<namespace>.faiss): a conservative alphabet, no paths.
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_DISPLAY_NAME_CHARS = 256
# Paging: SQLite takes signed 64-bit integers; no gallery comes near a billion rows.
MAX_PAGE_OFFSET = 1_000_000_000
MAX_INT64 = 2**63 - 1
INDEX_KINDS: tuple[IndexKind, ...] = ("flat", "fp16", "compact")
IF_EXISTS: tuple[IfExists, ...] = ("append", "replace", "error")


@contextmanager
def contract_errors_as_invalid_input(where: str = "") -> Iterator[None]:
    """Report a contract violation in the caller's input as InvalidInputError (prefixed by `where`)."""
    try:
        yield
    except ContractError as exc:
        raise InvalidInputError(f"{where}{exc}") from exc


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
        raise InvalidInputError(f"namespace must be 1-64 chars of [a-z0-9_.-] starting with a letter or digit, "
                                f"got {namespace!r}")
    return namespace


def check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{what} must be a non-empty string of at most {MAX_ID_CHARS} chars, got {value!r}")
    if value != value.strip() or any(unicodedata.category(c).startswith("C") for c in value):
        raise InvalidInputError(f"{what} must not contain control characters or surrounding spaces: {value!r}")
    return value


def check_page(offset: int, limit: int | None) -> tuple[int, int | None]:
    """0 <= offset <= MAX_PAGE_OFFSET, limit None (all) or 0 <= limit <= 2**63-1."""
    for name, value in (("offset", offset), ("limit", limit)):
        if value is None and name == "limit":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if not 0 <= offset <= MAX_PAGE_OFFSET:
        raise InvalidInputError(f"offset must be between 0 and {MAX_PAGE_OFFSET}, got {offset}")
    if limit is not None and not 0 <= limit <= MAX_INT64:
        raise InvalidInputError(f"limit must be between 0 and {MAX_INT64}, got {limit}")
    return int(offset), None if limit is None else int(limit)


def check_display_name(value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_DISPLAY_NAME_CHARS:
        raise InvalidInputError(f"display_name must be a string of at most {MAX_DISPLAY_NAME_CHARS} chars")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise InvalidInputError("display_name must not contain control characters or unpaired surrogates")
    return value


def check_threshold(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value):
        raise InvalidInputError(f"threshold must be a finite number, got {value!r}")
    return float(value)


def check_top_k(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"top_k must be a positive integer, got {value!r}")
    return int(value)


def check_choice(value: Any, allowed: Sequence[str], what: str) -> Any:
    if value not in allowed:
        raise InvalidInputError(f"{what} must be {' | '.join(allowed)}, got {value!r}")
    return value


def check_similarity(similarity: Similarity) -> Similarity:
    """A similarity the contract can compute (the contract alone knows which exist)."""
    with contract_errors_as_invalid_input():
        search_vectors(np.ones((1, 1, 1), np.float32), similarity)
    return similarity


def embedding_batch(embeddings: np.ndarray, expected_shape: tuple[int, int] | None = None,
                    where: str = "") -> np.ndarray:
    """One (C, P) or several (N, C, P) embeddings -> validated float32 (N, C, P)."""
    with contract_errors_as_invalid_input(where):
        return as_embedding_batch(embeddings, expected_shape)


def prepare_sequences(sequences: Sequence[SequenceInput]) -> list[NewSequence]:
    """Validate sequences to enroll (one embedding shape for all) and compress their arrays."""
    if isinstance(sequences, SequenceInput):
        sequences = [sequences]
    if not sequences:
        raise InvalidInputError("enroll needs at least one sequence")
    prepared = [_prepare_sequence(i, s) for i, s in enumerate(sequences)]
    shapes = {p.embedding.shape for p in prepared}
    if len(shapes) != 1:
        raise InvalidInputError(f"sequences have embeddings of different shapes: {sorted(shapes)}")
    return prepared


def _prepare_sequence(position: int, sequence: SequenceInput) -> NewSequence:
    where = f"sequences[{position}]"
    if not isinstance(sequence, SequenceInput):
        raise InvalidInputError(f"{where} must be a SequenceInput, got {type(sequence).__name__}")
    # The arrays are what a model takes as input (re-embedding feeds them back): the contract checks them.
    with contract_errors_as_invalid_input(f"{where}: "):
        ModelInput(sequence.silhouettes, sequence.depth)
    if np.ndim(sequence.embedding) != 2:
        raise InvalidInputError(f"{where}.embedding must be one (C, P) embedding, got {np.shape(sequence.embedding)}")
    embedding = embedding_batch(sequence.embedding, where=f"{where}.embedding: ")[0]
    depth_blob = None if sequence.depth is None else encode_array(sequence.depth)
    return NewSequence(frames=len(sequence.silhouettes), silhouettes_blob=encode_array(sequence.silhouettes),
                       depth_blob=depth_blob, metadata_json=json_object(sequence.metadata, f"{where}.metadata"),
                       embedding=embedding)

"""The gallery's similarity: mean per-part cosine of OpenGait (C, P) embeddings.

DepthGait / DeepGaitV2 produce one C-dimensional feature per horizontal body part (P parts). The
model is evaluated part by part, so the gallery compares the same way:

    similarity(a, b) = (1 / P) * sum_p  cos(a[:, p], b[:, p])          in [-1, 1]

To get that from one inner product, every embedding is turned into a flat vector `v`:
each part is L2-normalised, the parts are laid out part-major (P blocks of C values) and the
whole vector is scaled by 1 / sqrt(P). Then

    <v(a), v(b)> = sum_p <a_p/|a_p|, b_p/|b_p|> / P = mean per-part cosine,

exactly up to float32 rounding (for P = 16 the scale is 1/4, a power of two, so it adds no
rounding at all). `v` has unit L2 norm, which also keeps reduced-precision index codes in range.
A part whose norm is zero has no direction; it contributes 0 to the mean (never NaN).
"""

from __future__ import annotations

import numpy as np

from gallery.errors import InvalidInputError

# Norms below this count as zero (a float32 network never emits such tiny non-zero parts).
_ZERO_NORM = 1e-12


def as_embedding_batch(embeddings: np.ndarray, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate one (C, P) or several (N, C, P) embeddings; returns float32 (N, C, P)."""
    array = np.asarray(embeddings)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise InvalidInputError(f"embeddings must be (C, P) or (N, C, P) with N, C, P > 0, got {np.shape(embeddings)}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidInputError(f"embeddings must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidInputError("embeddings contain NaN or infinite values")
    if expected_shape is not None and tuple(array.shape[1:]) != tuple(expected_shape):
        raise InvalidInputError(
            f"embeddings must be (C, P) = {tuple(expected_shape)} for this model, got {tuple(array.shape[1:])}"
        )
    return array


def normalize_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """(C, P) or (N, C, P) embeddings -> (N, P*C) float32 vectors whose inner product is the mean
    per-part cosine (see the module docstring)."""
    batch = as_embedding_batch(embeddings).astype(np.float64)
    parts = batch.shape[2]
    parts_first = np.transpose(batch, (0, 2, 1))  # (N, P, C): each part contiguous
    norms = np.linalg.norm(parts_first, axis=2, keepdims=True)
    unit = np.where(norms > _ZERO_NORM, parts_first / np.maximum(norms, _ZERO_NORM), 0.0)
    flat = unit.reshape(batch.shape[0], -1) / np.sqrt(parts)
    return np.ascontiguousarray(flat, dtype=np.float32)


def mean_part_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Reference similarity of two (C, P) embeddings, computed part by part in float64."""
    a64 = np.asarray(a, np.float64)
    b64 = np.asarray(b, np.float64)
    if a64.shape != b64.shape or a64.ndim != 2:
        raise InvalidInputError(f"two (C, P) embeddings of one shape expected, got {a64.shape} and {b64.shape}")
    total = 0.0
    for part in range(a64.shape[1]):
        na = np.linalg.norm(a64[:, part])
        nb = np.linalg.norm(b64[:, part])
        if na > _ZERO_NORM and nb > _ZERO_NORM:
            total += float(a64[:, part] @ b64[:, part]) / (na * nb)
    return total / a64.shape[1]


def similarity_matrix(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(Nq, C, P) x (Nr, C, P) -> (Nq, Nr) mean per-part cosines (float32)."""
    return normalize_embeddings(queries) @ normalize_embeddings(references).T

"""Synthetic embeddings, sequences and a stand-in embedding model for the gallery tests, and an
independent float64 reference of the similarity (written out part by part, not through gaitid.contract)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from gaitid.contract import EmbeddingModelMetadata, ModelInput, quantise_depth
from gallery import SequenceInput

C, P = 256, 16


def embedding(rng: np.random.Generator, center: np.ndarray | None = None, noise: float = 1.0) -> np.ndarray:
    e = rng.standard_normal((C, P)).astype(np.float32) * noise
    return e if center is None else (center + e).astype(np.float32)


def sequence(rng: np.random.Generator, emb: np.ndarray, frames: int = 3, depth: bool = False) -> SequenceInput:
    sils = (rng.random((frames, 64, 44)) > 0.5).astype(np.uint8) * 255
    dep = quantise_depth(rng.random((frames, 64, 44))) if depth else None
    return SequenceInput(silhouettes=sils, embedding=emb, depth=dep, metadata={"frames": frames})


def direct_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over parts of the cosine of the C-dim part features, written out independently."""
    cosines = []
    for p in range(a.shape[1]):
        x, y = a[:, p].astype(np.float64), b[:, p].astype(np.float64)
        cosines.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return float(np.mean(cosines))


def labelled(rng: np.random.Generator, subjects: int, per_subject: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of `subjects` identities (`per_subject` noisy samples each) and their labels."""
    centers = [embedding(rng) for _ in range(subjects)]
    embs = np.stack([c + embedding(rng, noise=noise) for c in centers for _ in range(per_subject)])
    labels = np.repeat([f"id{i}" for i in range(subjects)], per_subject)
    return embs, labels


@functools.lru_cache(maxsize=1)
def _projection() -> np.ndarray:
    return np.random.default_rng(99).standard_normal((64 * 44, C * P)).astype(np.float32)


def embed_from_silhouettes(sils: np.ndarray) -> np.ndarray:
    """A stand-in 'new model': a fixed random projection of the mean silhouette."""
    return (sils.mean(axis=0).reshape(1, -1) / 255.0 @ _projection()).reshape(C, P)


class ProjectionEmbedder:
    """A gaitid.contract.SequenceEmbedder over `embed_from_silhouettes` that records its calls.
    `fail_on_call` makes that call (1-based) raise, like a runtime falling over mid-run."""

    def __init__(self, model_id: str, fail_on_call: int | None = None):
        self.model_id = model_id
        self.metadata = EmbeddingModelMetadata(variant="silhouette", inputs=["sils"], embedding_channels=C,
                                               embedding_parts=P)
        self.calls: list[list[ModelInput]] = []
        self.fail_on_call = fail_on_call

    def embed(self, sequences: Sequence[ModelInput]) -> np.ndarray:
        self.calls.append(list(sequences))
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("GPU fell over")
        return np.stack([embed_from_silhouettes(s.sils) for s in sequences])

"""The contract of an embedding model: what the exporter writes and every other part reads.

An embedding model is an ONNX file whose metadata (key `gaitid`, JSON of `EmbeddingModelMetadata`)
states everything below. Training, export, evaluation, the clip pipeline, the gallery and re-scoring
all read these facts from here, so none of them can drift from the others.

Inputs. One tensor per modality, named in `inputs` ("sils", "depths"), each **uint8**
(batch, frames, 64, 44) with values 0..255, any number of frames:
  - sils:   binary silhouettes, 0 background / 255 person (CASIA-B / OpenGait convention);
  - depths: masked relative disparity min-max normalised to [0, 1], quantised to 0..255
            (`quantise_depth`), exactly as the training trees store it.
Scaling to [0, 1] happens inside the network (its first operation), in exactly one place; nothing
outside the network divides by 255.

Output. `embedding`: float32 (batch, C, P), C channels per horizontal body part, P parts (OpenGait
layout). Which feature that is (pre-BNNeck, BNNeck, centred) is the model's business and stated in
`embedding_feature`; consumers only compare embeddings.

Similarity. `similarity` names how two embeddings are compared; every consumer calls
`search_vectors` and takes inner products, so the gallery, evaluation and calibration compute the
same number. The one similarity today is "part-cosine": the mean over parts of the cosine of each
part's C-vector, in [-1, 1]. Each part is L2-normalised, laid out part-major and scaled by 1/sqrt(P),
so the inner product of two search vectors *is* that mean (exactly, up to float32 rounding; for
P = 16 the scale is a power of two and adds no rounding). A part of zero norm contributes 0.

Open-set threshold. `open_set_threshold` is the similarity below which the model's answer should be
"unknown", as measured by `gaitid calibrate --write-threshold` on subjects the model never trained on
(None if never calibrated); the service uses it unless GAITID_UNKNOWN_THRESHOLD says otherwise.

Model id. The first 16 hex digits of the file's sha256: embeddings of different models are never
compared (the gallery tags every vector with it).

Embedding interface. `SequenceEmbedder` is the one interface to embed sequences (ONNX Runtime in the
service, torch in training tooling); `ModelInput` is one aligned sequence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

METADATA_KEY = "gaitid"
# 1: float inputs scaled by the caller, metric "euclidean" declared but never honoured.
# 2: uint8 inputs scaled inside the graph; the declared similarity is the one every consumer computes.
CONTRACT_VERSION = 2

# The network's input size (paper §3.2): aligned to 64x64, then 10 px trimmed each side -> 64x44.
ALIGNED_HEIGHT = 64
ALIGNED_WIDTH = 44
INPUT_DTYPE = np.uint8
INPUT_MAX = 255  # the network multiplies its inputs by 1 / INPUT_MAX

Modality = Literal["sils", "depths"]
MODALITIES: tuple[Modality, ...] = ("sils", "depths")
OUTPUT_NAME = "embedding"
Similarity = Literal["part-cosine"]

# Norms below this count as zero (a float32 network never emits such tiny non-zero parts).
_ZERO_NORM = 1e-12


class ContractError(ValueError):
    """A model file or an array does not follow the contract."""


class EmbeddingModelMetadata(BaseModel):
    """What an exported embedding model declares about itself (stored in the ONNX file)."""

    model_config = ConfigDict(extra="forbid")

    contract_version: int = CONTRACT_VERSION
    architecture: str = "DepthGait"  # DepthGait | DeepGaitV2 | GaitBase
    variant: str  # silhouette | depth | plus | concat | attention | mcf (DepthGait), or the source's mode
    inputs: list[Modality]  # ONNX input names, in order
    input_height: int = ALIGNED_HEIGHT
    input_width: int = ALIGNED_WIDTH
    embedding_channels: int = 256  # C
    embedding_parts: int = 16  # P
    embedding_feature: str = "pre-bnneck"  # which feature `embedding` is (informative)
    similarity: Similarity = "part-cosine"
    open_set_threshold: float | None = None  # from calibration; the service's default threshold
    training_data: str = ""
    git_commit: str = ""
    # Where the weights came from: config name, source checkpoint sha256, the metric the source
    # project evaluates with, ... (informative; nothing reads it to compute).
    provenance: dict[str, Any] = Field(default_factory=dict)

    @property
    def needs_depth(self) -> bool:
        return "depths" in self.inputs

    @property
    def needs_silhouettes(self) -> bool:
        return "sils" in self.inputs

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return (self.embedding_channels, self.embedding_parts)


def read_metadata(path: str | Path) -> EmbeddingModelMetadata:
    """The contract of an ONNX embedding model, or ContractError saying what is wrong with it."""
    import onnx  # here, not at import time: only model files need it

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several unrelated types for a damaged file
        raise ContractError(f"{path} is not a readable ONNX file: {exc}") from exc
    return metadata_of(model, str(path))


def metadata_of(model: Any, where: str = "model") -> EmbeddingModelMetadata:
    """The contract stored in an onnx.ModelProto (see read_metadata)."""
    props = {p.key: p.value for p in model.metadata_props}
    return metadata_from_json(props.get(METADATA_KEY), where)


def metadata_from_json(text: str | None, where: str = "model") -> EmbeddingModelMetadata:
    if text is None:
        raise ContractError(f"{where} has no '{METADATA_KEY}' metadata: export it with `gaitid export`")
    raw = json.loads(text)
    version = raw.get("contract_version", 1)
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"{where} follows embedding-model contract v{version}, this gaitid reads v{CONTRACT_VERSION}: "
            f"upgrade it with `gaitid models upgrade {where} NEW.onnx` or export it again"
        )
    return EmbeddingModelMetadata.model_validate(raw)


def write_metadata(model: Any, metadata: EmbeddingModelMetadata) -> None:
    """Store `metadata` in an onnx.ModelProto (replacing any earlier gaitid entry)."""
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.model_dump_json()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_id(path: str | Path) -> str:
    """The id that tags every embedding a model file makes."""
    return file_sha256(path)[:16]


# --- inputs -----------------------------------------------------------------------------------


def quantise_depth(depth: np.ndarray) -> np.ndarray:
    """Disparity in [0, 1] (float) -> the contract's uint8 0..255, as the training trees store it."""
    return np.rint(np.clip(depth, 0.0, 1.0) * INPUT_MAX).astype(INPUT_DTYPE)


@dataclass(frozen=True)
class ModelInput:
    """One aligned walking sequence as an embedding model takes it: (T, 64, 44) uint8 per modality."""

    sils: np.ndarray
    depths: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in MODALITIES:
            array = getattr(self, name)
            if array is None:
                continue
            if not isinstance(array, np.ndarray) or array.dtype != INPUT_DTYPE or array.ndim != 3 \
                    or array.shape[1:] != (ALIGNED_HEIGHT, ALIGNED_WIDTH) or len(array) == 0:
                raise ContractError(
                    f"{name} must be uint8 (T, {ALIGNED_HEIGHT}, {ALIGNED_WIDTH}) with T >= 1, got "
                    f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
                )
        if self.depths is not None and len(self.depths) != len(self.sils):
            raise ContractError(f"sils and depths differ in length: {len(self.sils)} vs {len(self.depths)}")

    @property
    def frames(self) -> int:
        return len(self.sils)


@runtime_checkable
class SequenceEmbedder(Protocol):
    """The one interface to embed sequences: any lengths in one call; the implementation batches what
    its runtime allows (equal lengths together: the network pools over time, so padding would change
    the answer). Returns float32 (N, C, P)."""

    metadata: EmbeddingModelMetadata
    model_id: str

    def embed(self, sequences: Sequence[ModelInput]) -> np.ndarray: ...


def batches_by_length(sequences: Sequence[ModelInput], max_frames: int = 0) -> list[list[int]]:
    """Indices of `sequences` grouped by length, for implementations of SequenceEmbedder: each group
    can run as one batch. `max_frames` > 0 splits groups so a batch holds at most that many frames."""
    groups: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        groups.setdefault(seq.frames, []).append(i)
    out = []
    for length, indices in groups.items():
        per_batch = max(1, max_frames // length) if max_frames > 0 else len(indices)
        out.extend(indices[i:i + per_batch] for i in range(0, len(indices), per_batch))
    return out


# --- embeddings and similarity ----------------------------------------------------------------


def as_embedding_batch(embeddings: np.ndarray, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate one (C, P) or several (N, C, P) embeddings; returns float32 (N, C, P)."""
    array = np.asarray(embeddings)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise ContractError(f"embeddings must be (C, P) or (N, C, P) with N, C, P > 0, got {np.shape(embeddings)}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ContractError(f"embeddings must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ContractError("embeddings contain NaN or infinite values")
    if expected_shape is not None and tuple(array.shape[1:]) != tuple(expected_shape):
        raise ContractError(
            f"embeddings must be (C, P) = {tuple(expected_shape)} for this model, got {tuple(array.shape[1:])}"
        )
    return array


def search_vectors(embeddings: np.ndarray, similarity: Similarity = "part-cosine") -> np.ndarray:
    """(C, P) or (N, C, P) embeddings -> (N, P*C) float32 vectors whose inner product is `similarity`
    (see the module docstring). Unit L2 norm, which keeps reduced-precision index codes in range."""
    if similarity != "part-cosine":
        raise ContractError(f"unknown similarity {similarity!r}")
    batch = as_embedding_batch(embeddings).astype(np.float64)
    parts = batch.shape[2]
    parts_first = np.transpose(batch, (0, 2, 1))  # (N, P, C): each part contiguous
    norms = np.linalg.norm(parts_first, axis=2, keepdims=True)
    unit = np.where(norms > _ZERO_NORM, parts_first / np.maximum(norms, _ZERO_NORM), 0.0)
    flat = unit.reshape(batch.shape[0], -1) / np.sqrt(parts)
    return np.ascontiguousarray(flat, dtype=np.float32)


def similarities(queries: np.ndarray, references: np.ndarray, similarity: Similarity = "part-cosine") -> np.ndarray:
    """(Nq, C, P) x (Nr, C, P) -> (Nq, Nr) similarities, higher = more alike."""
    return search_vectors(queries, similarity) @ search_vectors(references, similarity).T

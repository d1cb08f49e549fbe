"""DepthGait embeddings with ONNX Runtime, and the metadata contract stored inside the ONNX file.

`gaitid export` writes `EmbeddingModelMetadata` as JSON under the ONNX metadata key `gaitid`; the
service reads it to know which inputs the network needs (a silhouette-only model skips depth
entirely), the embedding layout, the metric, and which model made an embedding (the gallery never
compares embeddings made by different models).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel, Field

from service.runtime import make_session

METADATA_KEY = "gaitid"


class EmbeddingModelMetadata(BaseModel):
    architecture: str = "DepthGait"
    variant: str  # silhouette | depth | plus | concat | attention | mcf
    inputs: list[str]  # ONNX input names in order: ["sils"] or ["sils", "depths"] or ["depths"]
    input_height: int = 64
    input_width: int = 44
    embedding_channels: int = 256  # C: output is (batch, C, parts)
    embedding_parts: int = 16  # P: horizontal pyramid bins
    metric: str = "euclidean"  # evaluation metric the model was selected with: euclidean | cosine
    training_data: str = ""
    git_commit: str = ""
    extra: dict = Field(default_factory=dict)

    @property
    def needs_depth(self) -> bool:
        return "depths" in self.inputs

    @property
    def needs_silhouettes(self) -> bool:
        return "sils" in self.inputs


def read_metadata(path: str | Path) -> EmbeddingModelMetadata:
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with `gaitid export`")
    return EmbeddingModelMetadata.model_validate(json.loads(props[METADATA_KEY]))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class GaitEmbedder:
    """Runs the exported DepthGait network. Sequences of any length; one or many per call."""

    def __init__(self, path: str | Path, providers: str | list[str] = "auto", threads: int = 1):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.model_id = file_sha256(self.path)[:16]  # embeddings are tagged with this
        self.session = make_session(self.path, providers, threads)

    @property
    def needs_depth(self) -> bool:
        return self.metadata.needs_depth

    def embed(self, silhouettes: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """One sequence: silhouettes (T, 64, 44) uint8 0..255, depth (T, 64, 44) float [0,1].

        Returns the (C, P) embedding (pre-BNNeck features, OpenGait layout).
        """
        return self.embed_batch([silhouettes], None if depth is None else [depth])[0]

    def embed_batch(
        self, silhouettes: list[np.ndarray], depth: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Several sequences. Equal lengths run as one batch; unequal ones run one by one (the
        network pools over time, so padding would change the answer)."""
        if self.needs_depth and depth is None:
            raise ValueError(f"this model needs depth sequences (variant {self.metadata.variant})")
        lengths = {len(s) for s in silhouettes}
        if len(lengths) == 1:
            return self._run(silhouettes, depth)
        out = [self._run([s], None if depth is None else [d]) for s, d in
               zip(silhouettes, depth if depth is not None else [None] * len(silhouettes))]
        return np.concatenate(out, axis=0)

    def _run(self, silhouettes: list[np.ndarray], depth: list[np.ndarray] | None) -> np.ndarray:
        feeds = {}
        if self.metadata.needs_silhouettes:
            feeds["sils"] = np.stack(silhouettes).astype(np.float32) / 255.0
        if self.metadata.needs_depth:
            feeds["depths"] = np.stack(depth).astype(np.float32)
        (embedding,) = self.session.run(["embedding"], feeds)
        return embedding

"""Embedding a dataset tree for evaluation and calibration: a model file (ONNX or checkpoint) or any
gaitid.contract.SequenceEmbedder, and sequences of an OpenGait-layout pkl tree -> (n, C, P) embeddings.

ONNX files run on the service's ONNX Runtime embedder (service.pipeline.embed), checkpoints on
model.embedder.TorchEmbedder; both are imported only when used, so evaluating an ONNX file needs no
torch. Frames go to the model as the contract's uint8: nothing here scales them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaitid.contract import ContractError, ModelInput, SequenceEmbedder
from gaitid.progress import progress_bar
from model.dataset import SequenceInfo, load_sequence, trim_to_network_width
from model.evaluation.errors import EvaluationError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Sequences read into memory at a time (each is T x 64 x 44 uint8): embedding batches form within one.
SEQUENCES_PER_CHUNK = 256


@dataclass
class EmbeddedSequences:
    embeddings: np.ndarray  # (n, C, P) float32, one per entry of `sequences`
    sequences: list[SequenceInfo]  # the sequences embedded, in input order
    skipped: list[SequenceInfo]  # sequences with no frames
    model: str  # what made the embeddings
    seconds: float


def open_embedder(model: str | Path | SequenceEmbedder, device: str = "auto") -> SequenceEmbedder:
    """The embedder for an exported .onnx file, a training checkpoint (.pt/.pth/.ckpt), or an embedder."""
    if isinstance(model, SequenceEmbedder):
        return model
    if not isinstance(model, (str, Path)):
        raise EvaluationError(f"cannot embed with a {type(model).__name__}: pass a model file")
    path = Path(model)
    if not path.is_file():
        raise EvaluationError(f"model file {path} not found")
    if path.suffix == ".onnx":
        from service.pipeline.embed import OnnxEmbedder

        try:
            return OnnxEmbedder(path, providers=device)
        except ValueError as exc:  # not the contract (no or old metadata), provider not available
            raise EvaluationError(str(exc)) from exc
    if path.suffix in CHECKPOINT_SUFFIXES:
        from model.embedder import TorchEmbedder

        try:
            return TorchEmbedder.from_checkpoint(path, device)
        except Exception as exc:  # unpickling, missing keys, config validation, state-dict mismatch
            raise EvaluationError(f"{path} is not a gaitid training checkpoint: {exc}") from exc
    raise EvaluationError(f"{path}: expected an exported .onnx model or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")


def describe(embedder: SequenceEmbedder) -> str:
    """What made the embeddings, for reports."""
    described = getattr(embedder, "description", None)
    return described or f"{type(embedder).__name__} {embedder.metadata.variant} ({embedder.model_id})"


def _load_frames(seq_dir: Path, what: str, key: str, size: tuple[int, int]) -> np.ndarray:
    try:
        frames = trim_to_network_width(load_sequence(seq_dir))
    except FileNotFoundError as exc:
        raise EvaluationError(f"{key}: no {what} sequence at {seq_dir}") from exc
    except Exception as exc:  # a truncated or foreign pickle: name the file instead of a library traceback
        raise EvaluationError(f"{key}: cannot read the {what} sequence in {seq_dir}: {exc}") from exc
    if frames.ndim != 3 or (len(frames) and frames.shape[1:] != size):
        raise EvaluationError(
            f"{key}: {what} frames are {frames.shape[1:]} after trimming; the network takes {size} "
            f"(OpenGait 64x64 pkl trees)")
    return frames


def _model_input(info: SequenceInfo, sils: np.ndarray, depth_root: Path | None, size: tuple[int, int]) -> ModelInput:
    depths = None
    if depth_root is not None:
        depths = _load_frames(depth_root / info.subject / info.condition / info.view, "depth", info.key, size)
        if len(depths) != len(sils):
            raise EvaluationError(f"{info.key}: {len(sils)} silhouette frames but {len(depths)} depth frames")
    try:
        return ModelInput(sils=sils, depths=depths)
    except ContractError as exc:  # e.g. a tree of float arrays: the contract takes uint8 0..255
        raise EvaluationError(f"{info.key}: {exc}") from exc


def embed_dataset(
    model: str | Path | SequenceEmbedder,
    sequences: Sequence[SequenceInfo],
    depth_root: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> EmbeddedSequences:
    """Embed every sequence with all its frames (equal lengths batched by the embedder).

    Silhouettes come from each sequence's folder; a model that needs depth reads
    depth_root/subject/condition/view (same layout and frame count). Frames are trimmed to 64x44 and
    passed on as uint8. Sequences with no frames are skipped.
    """
    embedder = open_embedder(model, device)
    meta = embedder.metadata
    if meta.needs_depth and depth_root is None:
        raise EvaluationError("this model needs depth: pass the depth tree (--depth-root)")
    depths_from = Path(depth_root) if meta.needs_depth else None
    size = (meta.input_height, meta.input_width)
    began = time.monotonic()
    kept, skipped, out = [], [], []
    with progress_bar(total=len(sequences), desc="embedding", unit="seq", disable=not progress) as bar:
        for start in range(0, len(sequences), SEQUENCES_PER_CHUNK):
            chunk_infos, chunk_inputs = [], []
            for info in sequences[start:start + SEQUENCES_PER_CHUNK]:
                sils = _load_frames(info.path, "silhouette", info.key, size)
                if len(sils) == 0:
                    skipped.append(info)
                    continue
                chunk_inputs.append(_model_input(info, sils, depths_from, size))
                chunk_infos.append(info)
            if chunk_inputs:
                out.append(np.asarray(embedder.embed(chunk_inputs), dtype=np.float32))
                kept.extend(chunk_infos)
            bar.update(len(sequences[start:start + SEQUENCES_PER_CHUNK]))
    embeddings = np.concatenate(out) if out else np.zeros((0, 0, 0), dtype=np.float32)
    return EmbeddedSequences(embeddings, kept, skipped, describe(embedder), time.monotonic() - began)

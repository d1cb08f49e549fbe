"""`TorchEmbedder`: the contract's SequenceEmbedder for a torch network or a training checkpoint.

Training-time validation, evaluation and calibration of checkpoints embed through it; exported ONNX
files are embedded by the service's ONNX Runtime embedder (service.pipeline.embed), which implements the
same interface. Sequences of equal length run as one batch (gaitid.contract.batches_by_length); inputs
go to the network as the contract's uint8, which scales them itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gaitid.contract import EmbeddingModelMetadata, ModelInput, batches_by_length, model_id
from model.checkpoint import load_model, resolve_device
from model.config import ExperimentConfig, ModelConfig
from model.depthgait import DepthGait

# Frames per forward pass: bounds memory (OpenGait's evaluator caps a batch at 720 frames); a longer
# sequence still runs whole, alone.
DEFAULT_MAX_FRAMES = 512
UNSAVED_MODEL_ID = "unsaved-network"


def network_metadata(cfg: ModelConfig, **fields) -> EmbeddingModelMetadata:
    """What a DepthGait network of this config declares under the contract (export adds provenance)."""
    return EmbeddingModelMetadata(
        architecture="DepthGait",
        variant=cfg.variant,
        inputs=cfg.modalities,
        embedding_channels=cfg.embedding_dim,
        embedding_parts=cfg.parts,
        embedding_feature=cfg.inference_feature,
        **fields,
    )


class TorchEmbedder:
    """gaitid.contract.SequenceEmbedder over a DepthGait network (eval mode, inference only)."""

    def __init__(self, net: DepthGait, device: str | torch.device = "auto", *,
                 identity: str = UNSAVED_MODEL_ID, max_frames: int = DEFAULT_MAX_FRAMES,
                 config: ExperimentConfig | None = None):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.net = net
        self.config = config  # the experiment the network was trained with, when known
        self.metadata = network_metadata(net.cfg)
        self.model_id = identity
        self.max_frames = max_frames
        source = "checkpoint" if config is not None else "torch"
        self.description = f"{source} {net.cfg.variant} on {self.device}"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kw) -> TorchEmbedder:
        """A training checkpoint (model/checkpoint.py); its id is the contract's id of the file."""
        net, cfg = load_model(path, device)
        return cls(net, device, identity=model_id(path), config=cfg, **kw)

    def embed(self, sequences: Sequence[ModelInput]) -> np.ndarray:
        """(N, C, P) float32 embeddings, in the order of `sequences`."""
        channels, parts = self.metadata.embedding_shape
        out = np.empty((len(sequences), channels, parts), dtype=np.float32)
        was_training = self.net.training
        self.net.eval().to(self.device)
        try:
            with torch.inference_mode():
                for batch in batches_by_length(sequences, self.max_frames):
                    out[batch] = self._run([sequences[i] for i in batch])
        finally:
            self.net.train(was_training)
        return out

    def _run(self, batch: list[ModelInput]) -> np.ndarray:
        feeds = {}
        for name in self.metadata.inputs:
            arrays = [getattr(seq, name) for seq in batch]
            if any(a is None for a in arrays):
                raise ValueError(f"this model ({self.metadata.variant}) needs {name}")
            feeds[name] = torch.from_numpy(np.stack(arrays)).to(self.device)
        return self.net(**feeds)["embedding"].float().cpu().numpy()

"""`OnnxEmbedder`: the embedding model on ONNX Runtime, an implementation of
`gaitid.contract.SequenceEmbedder`.

The contract (gaitid/contract.py) says what the file holds: uint8 inputs named in its metadata,
scaled inside the network, and an `embedding` output (N, C, P). This class feeds the arrays as
they are (no scaling here) and batches sequences of equal length together.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gaitid.contract import (
    INPUT_DTYPE,
    OUTPUT_NAME,
    ContractError,
    ModelInput,
    as_embedding_batch,
    batches_by_length,
    model_id,
    read_metadata,
)
from service.runtime import make_session

_ORT_UINT8 = "tensor(uint8)"


class OnnxEmbedder:
    """Runs an exported embedding model. Sequences of any length, one or many per call.

    max_batch_frames > 0 caps the frames of one network call (memory on a GPU); 0: a whole group of
    equal-length sequences runs at once.
    """

    def __init__(self, path: str | Path, providers: str | list[str] = "auto", threads: int = 1,
                 max_batch_frames: int = 0):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)  # ContractError for an old or foreign file
        self.model_id = model_id(self.path)
        self.max_batch_frames = max_batch_frames
        self.session = make_session(self.path, providers, threads)
        self._check_io()

    def embed(self, sequences: Sequence[ModelInput]) -> np.ndarray:
        """(N, C, P) float32 embeddings of `sequences`, in order."""
        out = np.empty((len(sequences), *self.metadata.embedding_shape), np.float32)
        for batch in batches_by_length(sequences, self.max_batch_frames):
            feeds = {name: np.stack([self._input(sequences[i], name) for i in batch]) for name in self.metadata.inputs}
            (embedding,) = self.session.run([OUTPUT_NAME], feeds)
            out[batch] = as_embedding_batch(embedding, self.metadata.embedding_shape)
        return out

    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _input(self, sequence: ModelInput, name: str) -> np.ndarray:
        array = getattr(sequence, name)
        if array is None:
            raise ContractError(f"the model {self.path.name} needs {name}, the sequence has none "
                                f"(variant {self.metadata.variant})")
        return array

    def _check_io(self) -> None:
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        wrong = [f"{name} ({inputs.get(name, 'missing')})" for name in self.metadata.inputs
                 if inputs.get(name) != _ORT_UINT8]
        if wrong or OUTPUT_NAME not in outputs:
            raise ContractError(
                f"{self.path} does not match its metadata: inputs {self.metadata.inputs} must be "
                f"{np.dtype(INPUT_DTYPE).name} (wrong: {', '.join(wrong) or 'none'}) and the output must be "
                f"named {OUTPUT_NAME!r} (outputs: {sorted(outputs)})"
            )

"""Re-embedding a namespace with a new model, from the sequences it stores (no footage needed).

New embeddings are committed in batches next to the old ones, so searches keep using the old
model meanwhile and an interrupted run resumes where it stopped. The switch to the new model,
which drops the old embeddings and rebuilds the index, is one transaction, and it appends the
audit entry; sequences enrolled with the old model while this runs are embedded too before the switch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gaitid.contract import ModelInput, SequenceEmbedder
from gallery import audit
from gallery.audit import AuditContext
from gallery.errors import InvalidInputError
from gallery.namespace_indexes import NamespaceIndexes
from gallery.namespace_state import NamespaceState
from gallery.store import fault_point
from gallery.types import ReembedReport
from gallery.validation import check_identifier, embedding_batch

Progress = Callable[[int, int], None]  # (sequences embedded so far, sequences to embed)


def reembed(indexes: NamespaceIndexes, embedder: SequenceEmbedder, namespace: str, *, batch_size: int,
            progress: Progress | None = None, audit_context: AuditContext | None = None) -> ReembedReport:
    """Embed every stored sequence of `namespace` with `embedder`, then make its model the active one."""
    if not isinstance(embedder, SequenceEmbedder):
        raise InvalidInputError(f"embedder must follow gaitid.contract.SequenceEmbedder "
                                f"(metadata, model_id, embed), got {type(embedder).__name__}")
    model_id = check_identifier(embedder.model_id, "embedder.model_id")
    if embedder.metadata.similarity != indexes.similarity:
        raise InvalidInputError(f"model {model_id!r} compares embeddings by {embedder.metadata.similarity!r}, "
                                f"this gallery by {indexes.similarity!r}: open the gallery with that similarity")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError("batch_size must be >= 1")
    store = indexes.store
    started = time.perf_counter()
    state = indexes.get(namespace)
    with store.read() as conn:
        row = store.namespace(conn, namespace)
        total = store.count_missing(conn, namespace, model_id)
        _, sequences = store.counts(conn, namespace)
    old_model = row.model_id if row else None
    if row is None or old_model == model_id:
        return ReembedReport(namespace, old_model, model_id, 0, sequences, time.perf_counter() - started)
    embedded = 0
    while True:
        with store.read() as conn:
            missing = store.sequences_missing(conn, namespace, model_id, batch_size)
            arrays = [store.sequence_arrays(conn, i) for i in missing]
        if not missing:
            activated = _activate_model(indexes, state, model_id, old_model, audit_context)
            if activated is not None:
                return ReembedReport(namespace, old_model, model_id, embedded, activated,
                                     time.perf_counter() - started)
            continue  # enrolled meanwhile with the old model: embed those too
        output = embedder.embed([ModelInput(sils, depth) for sils, depth in arrays])
        new = embedding_batch(output, embedder.metadata.embedding_shape, where=f"model {model_id!r}: ")
        if len(new) != len(missing):
            raise InvalidInputError(f"model {model_id!r} returned {len(new)} embeddings for {len(missing)} sequences")
        with store.write() as conn:
            for sequence_id, embedding in zip(missing, new):
                if store.sequence_exists(conn, sequence_id):  # not deleted meanwhile
                    store.insert_embedding(conn, sequence_id, model_id, embedding)
        embedded += len(missing)
        if progress is not None:
            progress(embedded, max(total, embedded))


def _activate_model(indexes: NamespaceIndexes, state: NamespaceState, model_id: str, old_model_id: str | None,
                    audit_context: AuditContext | None) -> int | None:
    """Switch the namespace to `model_id` if every sequence has its embedding; returns the number
    of sequences, or None when some are still missing."""
    store = indexes.store
    with state.lock.gen_wlock():
        with store.write() as conn:
            if store.sequences_missing(conn, state.name, model_id, 1):
                return None
            shapes = store.embedding_shapes(conn, state.name, model_id)
            if len(shapes) > 1:
                raise InvalidInputError(f"model {model_id!r} has embeddings of several shapes {shapes}")
            store.set_active_model(conn, state.name, model_id, shapes[0] if shapes else None)
            store.drop_other_embeddings(conn, state.name, model_id)
            store.bump_generation(conn, state.name)
            _, sequences = store.counts(conn, state.name)
            audit.append(conn, state.name, audit_context, audit.REEMBEDDED, old_model_id=old_model_id,
                         new_model_id=model_id, sequences=sequences)
            fault_point("reembed:activating")
        indexes.forget_file(state)
        indexes.reload(state, persist=True)
    return sequences

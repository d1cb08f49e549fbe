"""Each namespace's index, kept in step with the database: loaded, rebuilt, reloaded and persisted.

The database (gallery.store) is the source of truth; the stored index -- an index file
(index/<namespace>.faiss, see gallery.index) or a Milvus collection (gallery.backends.milvus), the
backend's `IndexStore` (gallery.backends) -- is only a copy of it. At load it is used only if its
header's database id, generation, generation token, model, similarity, kind, dimension and size
match the database and its ids are the database's; otherwise the index is rebuilt from the stored
embeddings (and the reason kept in `rebuild_reason`). Files are written atomically, only when
stale; a write-through store (Milvus) gets its header after every change.

A compact index (FAISS backend) re-ranks with index/<namespace>.vectors (gallery.vector_file): the
namespace's search vectors, checked at load as the index file is (header and ids), rebuilt from the
stored embeddings when missing, stale or torn, appended and cleared as the index changes, its header
saved with the index file.

Freshness across processes: before a search the namespace's database generation is compared with
the one its view reflects; another process's write makes them differ and the view reloads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gaitid.contract import Similarity, search_vectors
from gallery.backends import IndexStore, SearchIndex
from gallery.backends.faiss_files import FaissFiles
from gallery.compact_index import CompactIndex, FullVectors
from gallery.index import IndexFileError
from gallery.namespace_state import NOT_LOADED, NamespaceState
from gallery.store import NamespaceRow, Store
from gallery.types import IndexInfo, IndexKind
from gallery.vector_file import VectorFile
from gallery.vector_file import read_header as read_vector_header

log = logging.getLogger("gaitid.gallery")


class NamespaceIndexes:
    """The in-memory state of every namespace this process has touched, created on first use."""

    def __init__(self, store: Store, index_store: IndexStore, *, kind: IndexKind, similarity: Similarity):
        self.store = store
        self.index_store = index_store
        self.kind: IndexKind = kind
        self.similarity: Similarity = similarity
        self._states: dict[str, NamespaceState] = {}
        self._states_lock = threading.Lock()

    def location(self, namespace: str) -> str:
        """Where the namespace's index is kept (a file, a Milvus collection)."""
        return self.index_store.location(namespace)

    def vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """Validated (N, C, P) embeddings -> the index's vectors (inner product = the similarity)."""
        return search_vectors(embeddings, self.similarity)

    def get(self, namespace: str) -> NamespaceState:
        """The namespace's state, loaded on first use."""
        with self._states_lock:
            state = self._states.get(namespace)
            if state is None:
                state = self._states[namespace] = NamespaceState(namespace)
        if not state.loaded:
            with state.lock.gen_wlock():
                if not state.loaded:
                    self.reload(state, persist=True)
        return state

    def fresh(self, namespace: str) -> NamespaceState:
        """The namespace's state, reloaded first if the database moved on without it (another
        process wrote, or an index update failed)."""
        state = self.get(namespace)
        if self.store.generation(namespace) != state.generation:
            with state.lock.gen_wlock():
                if self.store.generation(namespace) != state.generation:
                    self.reload(state, persist=False)
        return state

    def loaded(self, namespace: str | None = None) -> list[NamespaceState]:
        """States in memory (all, or the one of `namespace`)."""
        with self._states_lock:
            return [s for n, s in self._states.items() if namespace is None or n == namespace]

    def reload(self, state: NamespaceState, persist: bool) -> None:
        """(Re)load the namespace from the database, from its index file when that file provably
        matches the database, else by rebuilding. Caller holds the write lock."""
        with self.store.read() as conn:  # one snapshot: generation, ids and vectors agree
            row = self.store.namespace(conn, state.name)
            if row is None or row.model_id is None or row.embedding_shape is None:
                self._set_empty(state, row)
                return
            ids, subjects = self.store.active_sequence_map(conn, state.name, row.model_id)
            names = self.store.display_names(conn, state.name)
            index, reason = self._stored_index(row, ids)
            compact = self.kind == "compact"  # FAISS only: open_index_store refuses compact for Milvus
            rows = None
            if index is None:
                index = self.index_store.create(state.name, _dim(row))
                chunks = self._vector_chunks(conn, row)
                if compact:  # the vector file is written from the same pass over the embeddings
                    chunks = self._tee(chunks, index)
                    rows = self._write_vector_file(row, len(ids), chunks, "index rebuilt")
                else:
                    for chunk_ids, vectors in chunks:
                        index.add(chunk_ids, vectors)
            elif compact:
                rows, why = self._stored_vector_file(row, ids)
                if rows is None:
                    rows = self._write_vector_file(row, len(ids), self._vector_chunks(conn, row), why)
        if rows is not None:  # a compact index re-ranks its shortlist with the vector file's rows
            index.attach_rows(rows)
        if isinstance(state.index, CompactIndex):  # the index replaced (always a new object) closes its rows
            state.index.attach_rows(None)
        state.index = index
        state.model_id, state.shape = row.model_id, row.embedding_shape
        state.generation, state.generation_token = row.generation, row.generation_token
        state.set_subjects(ids.tolist(), subjects, names)
        state.rebuild_reason = reason
        if reason is None:
            state.loaded_from, state.saved_generation = "file", row.generation
        else:
            state.loaded_from = "rebuilt"
            log.info("rebuilt index of namespace %s (%d vectors): %s", state.name, index.ntotal, reason)
            if persist or self.index_store.write_through:  # a write-through store's new index must replace the old
                self.persist(state)

    # -- a compact index's vector file (gallery.vector_file) -----------------------------------------
    def vector_path(self, namespace: str) -> Path:
        """index/<namespace>.vectors, beside the index file (FAISS backend, compact index)."""
        assert isinstance(self.index_store, FaissFiles)
        return self.index_store.vector_path(namespace)

    def _vector_chunks(self, conn, row: NamespaceRow) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for chunk_ids, embeddings in self.store.iter_embeddings(conn, row.name, row.model_id):
            yield chunk_ids, self.vectors(embeddings)

    @staticmethod
    def _tee(chunks: Iterator[tuple[np.ndarray, np.ndarray]],
             index: CompactIndex) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for chunk_ids, vectors in chunks:
            index.add(chunk_ids, vectors)
            yield chunk_ids, vectors

    def _header(self, row: NamespaceRow | NamespaceState) -> dict:
        """What a stored index or vector file vouches for: the database state it reflects."""
        return {"db_instance": self.store.instance_id, "namespace": row.name, "generation": row.generation,
                "generation_token": row.generation_token, "model_id": row.model_id, "similarity": self.similarity}

    @staticmethod
    def _stale(header: dict, expected: dict) -> str | None:
        """Why a stored header does not vouch for `expected` ("stale: k a != b, ..."); None when it does."""
        differing = [k for k, v in expected.items() if header.get(k) != v]
        if not differing:
            return None
        return "stale: " + ", ".join(f"{k} {header.get(k)!r} != {expected[k]!r}" for k in differing)

    def _write_vector_file(self, row: NamespaceRow, count: int, chunks, reason: str | None) -> VectorFile:
        rows = VectorFile.write(self.vector_path(row.name), self._header(row), _dim(row), count, chunks)
        rows.loaded_from, rows.rebuild_reason = "rebuilt", reason
        log.info("rebuilt vector file of namespace %s (%d vectors): %s", row.name, count, reason)
        return rows

    def _stored_vector_file(self, row: NamespaceRow, ids: np.ndarray) -> tuple[VectorFile | None, str | None]:
        """The namespace's vector file if it reflects exactly this database state; else (None, why)."""
        path = self.vector_path(row.name)
        expected = dict(self._header(row), dim=_dim(row), ntotal=len(ids))
        if not path.exists():
            return None, "missing"
        try:
            header = read_vector_header(path)
        except IndexFileError as exc:
            return None, f"corrupt: {exc}"
        stale = self._stale(header, expected)
        if stale is not None:
            return None, stale
        try:
            rows = VectorFile(path, header)  # the header just read and checked: not read (and hashed) again
        except (IndexFileError, OSError, ValueError) as exc:
            return None, f"corrupt: {exc}"
        if not np.array_equal(rows.ids(), ids):
            rows.close()
            return None, "stale: ids differ from the database"
        return rows, None

    def close(self) -> None:
        """Close every namespace's vector file, then the index store."""
        for state in self.loaded():
            if isinstance(state.index, CompactIndex):
                state.index.attach_rows(None)
        self.index_store.close()

    def database_full_vectors(self, model_id: str) -> FullVectors:
        """A compact index's fetch: the search vectors of sequence ids, read from the database (what
        re-ranking used before the vector file). The gallery's compact indexes always re-rank with
        their vector file; this is kept to compare with it (bench/gallery_search.py's before/after,
        tests/gallery/test_vector_file.py)."""
        def fetch(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with self.store.read() as conn:
                found, embeddings = self.store.embeddings_by_id(conn, model_id, ids)
            return found, self.vectors(embeddings) if len(found) else np.zeros((0, 0), np.float32)

        return fetch

    def changed(self, state: NamespaceState) -> None:
        """After a change applied to the index: a write-through store records the new generation now
        (a file waits for flush). Caller holds the write lock."""
        if self.index_store.write_through:
            self.persist(state)

    def persist(self, state: NamespaceState) -> None:
        """Write the namespace's index file if it is stale. Only reads the index: a read lock suffices."""
        if state.index is None or not state.loaded or state.saved_generation == state.generation:
            return
        if self.store.generation(state.name) != state.generation:
            return  # another process moved the database on: this index would be stale on arrival
        header = self._header(state)  # both copy it, adding their own keys
        rows = getattr(state.index, "rows", None)
        if isinstance(rows, VectorFile):  # rows fsynced, then the header vouches for this generation
            rows.save_header(header)
        self.index_store.save(state.name, state.index, header)
        state.saved_generation = header["generation"]

    def forget_file(self, state: NamespaceState) -> None:
        """The stored index no longer vouches for the database: delete the namespace's index file
        (it may hold vectors that were just deleted), or invalidate its Milvus header."""
        self.index_store.forget(state.name)
        state.saved_generation = NOT_LOADED

    def info(self, state: NamespaceState) -> IndexInfo | None:
        if state.index is None:
            return None
        return IndexInfo(kind=state.index.kind, device=state.index.device, vectors=state.index.ntotal,
                         generation=state.generation, loaded_from=state.loaded_from,  # type: ignore[arg-type]
                         path=self.location(state.name), rebuild_reason=state.rebuild_reason)

    def _set_empty(self, state: NamespaceState, row: NamespaceRow | None) -> None:
        if isinstance(state.index, CompactIndex):
            state.index.attach_rows(None)
        state.index = None
        state.model_id = row.model_id if row else None
        state.shape = row.embedding_shape if row else None
        state.generation = row.generation if row else 0
        state.generation_token = row.generation_token if row else ""
        state.set_subjects([], [], {})
        state.loaded_from, state.rebuild_reason = "empty", None
        self.index_store.drop(state.name)  # a compact index's vector file too
        state.saved_generation = NOT_LOADED

    def _stored_index(self, row: NamespaceRow, ids: np.ndarray) -> tuple[SearchIndex | None, str | None]:
        """The namespace's stored index if it reflects exactly this database state; else (None, why)."""
        expected = dict(self._header(row), kind=self.kind, dim=_dim(row), ntotal=len(ids))
        try:
            header = self.index_store.read_header(row.name)
            if header is None:
                return None, "missing"
            stale = self._stale(header, expected)
            if stale is not None:
                return None, stale
            index = self.index_store.open(row.name)
        except IndexFileError as exc:
            return None, f"corrupt: {exc}"
        if not np.array_equal(np.sort(index.ids()), ids):
            return None, "stale: ids differ from the database"
        return index, None


def _dim(row: NamespaceRow) -> int:
    """The dimension of the namespace's search vectors: C x P of its embeddings."""
    assert row.embedding_shape is not None
    return row.embedding_shape[0] * row.embedding_shape[1]

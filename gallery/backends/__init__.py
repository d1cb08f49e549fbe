"""Where a namespace's vectors live: the two protocols every index backend implements, and the choice.

The database (gallery.store) is the source of truth of every backend; an index backend holds a
rebuildable copy of the active model's search vectors, one index per namespace, tagged with a
header (database id, generation, generation token, model, similarity, kind, dimension, size).
gallery.namespace_indexes trusts a stored index only when its header and its ids match the
database, and rebuilds it from the stored embeddings otherwise -- whichever backend holds it.

- `SearchIndex`: one namespace's vectors (int64 ids = sequence ids, inner-product search).
  gallery.index.VectorIndex (FAISS, in memory) and gallery.backends.milvus.MilvusIndex implement it.
- `IndexStore`: where those indexes are kept between runs and how a changed one is saved.
  FaissFiles (index/<namespace>.faiss files beside the database, written on flush) and
  MilvusCollections (one collection per namespace in a Milvus server or a milvus-lite file,
  changed as the gallery changes, `write_through`).

Backends: "faiss" (default, embedded) and "milvus" (`milvus_uri`: a server such as
http://milvus:19530, or a local milvus-lite file; default <gallery root>/milvus.db).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from gallery.errors import InvalidInputError
from gallery.types import IndexKind

Backend = Literal["faiss", "milvus"]
BACKENDS: tuple[Backend, ...] = ("faiss", "milvus")
INDEX_DIRNAME = "index"  # FAISS index files, under the gallery root
MILVUS_LITE_FILENAME = "milvus.db"  # the default milvus-lite folder, under the gallery root


class SearchIndex(Protocol):
    """Inner-product search over float32 vectors with int64 ids (one namespace's active model)."""

    kind: IndexKind
    device: Literal["cpu", "gpu"]

    @property
    def ntotal(self) -> int: ...

    def ids(self) -> np.ndarray:
        """Every id held, in any order (what the index really holds: consistency checks read it)."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n, k'), ids (n, k')), best first, k' = min(k, ntotal)."""
        ...


class IndexStore(Protocol):
    """Keeps each namespace's SearchIndex between runs, with the header that says what it reflects."""

    backend: Backend
    # True: the stored index changes with every add/remove (a server), so the header is saved after
    # each change; False: the stored copy is a file written on flush / close.
    write_through: bool

    def location(self, namespace: str) -> str:
        """Where the namespace's index is kept (a file path, a Milvus collection)."""
        ...

    def read_header(self, namespace: str) -> dict[str, Any] | None:
        """The stored index's header; None when there is none. Raises IndexFileError when unreadable."""
        ...

    def open(self, namespace: str) -> SearchIndex:
        """The stored index (after its header matched the database). Raises IndexFileError."""
        ...

    def create(self, namespace: str, dim: int) -> SearchIndex:
        """A new empty index for a rebuild; it replaces the stored one when saved."""
        ...

    def save(self, namespace: str, index: SearchIndex, header: dict[str, Any]) -> None:
        """Make `index` the namespace's stored index, vouching for `header`."""
        ...

    def forget(self, namespace: str) -> None:
        """The stored index vouches for nothing any more (it may hold vectors just deleted)."""
        ...

    def drop(self, namespace: str) -> None:
        """Remove the namespace's stored index altogether (the namespace has no vectors)."""
        ...

    def close(self) -> None: ...


def open_index_store(backend: Backend, root: Path, *, database_id: str, kind: IndexKind, device: Any = "auto",
                     replica_factory: Any = None, milvus_uri: str | None = None) -> IndexStore:
    """The store of `backend` for the gallery at `root` whose database is `database_id` (names its
    Milvus collections). pymilvus is imported only for "milvus"."""
    if backend == "faiss":
        from gallery.backends.faiss_files import FaissFiles

        return FaissFiles(root / INDEX_DIRNAME, kind=kind, device=device, replica_factory=replica_factory)
    if backend == "milvus":
        try:
            from gallery.backends.milvus import MilvusCollections
        except ModuleNotFoundError as exc:
            raise InvalidInputError(f"the Milvus backend needs pymilvus (pip install 'gaitid[milvus]'): {exc}") from exc
        if kind != "flat":
            raise InvalidInputError(f"index_kind {kind!r} is FAISS's; the Milvus backend searches exact float32 "
                                    "(index_kind 'flat')")
        return MilvusCollections(milvus_uri or str(root / MILVUS_LITE_FILENAME), database_id)
    raise InvalidInputError(f"backend must be {' | '.join(BACKENDS)}, got {backend!r}")

"""The FAISS backend's store: each namespace's in-memory FAISS index saved as index/<namespace>.faiss.

A file is a cache of the database (its format and checks are gallery.index's): written atomically
when the gallery flushes or closes and after a rebuild at load, deleted when it may hold vectors
of a deleted subject. A compact index's vector file, index/<namespace>.vectors (gallery.vector_file,
kept in step by gallery.namespace_indexes), lies beside it and goes with it when the namespace is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gallery.compact_index import CompactIndex
from gallery.index import Device, ReplicaFactory, VectorIndex
from gallery.types import IndexKind


class FaissFiles:
    """IndexStore of VectorIndex files in `directory`, one per namespace."""

    backend = "faiss"
    write_through = False

    def __init__(self, directory: Path, *, kind: IndexKind, device: Device = "auto",
                 replica_factory: ReplicaFactory | None = None):
        self.directory = directory
        self.kind: IndexKind = kind
        self._device: Device = device
        self._replica_factory = replica_factory

    def path(self, namespace: str) -> Path:
        return self.directory / f"{namespace}.faiss"

    def location(self, namespace: str) -> str:
        return str(self.path(namespace))

    def vector_path(self, namespace: str) -> Path:
        """A compact index's vector file, beside its index file."""
        return self.directory / f"{namespace}.vectors"

    def read_header(self, namespace: str) -> dict[str, Any] | None:
        path = self.path(namespace)
        return VectorIndex.read_header(path) if path.exists() else None

    def open(self, namespace: str) -> VectorIndex | CompactIndex:
        if self.kind == "compact":
            return CompactIndex.load(self.path(namespace))[0]
        index, _ = VectorIndex.load(self.path(namespace), device=self._device, replica_factory=self._replica_factory)
        return index

    def create(self, namespace: str, dim: int) -> VectorIndex | CompactIndex:
        if self.kind == "compact":
            return CompactIndex(dim)
        return VectorIndex(dim, self.kind, device=self._device, replica_factory=self._replica_factory)

    def save(self, namespace: str, index: Any, header: dict[str, Any]) -> None:
        index.save(self.path(namespace), header)

    def forget(self, namespace: str) -> None:
        self.path(namespace).unlink(missing_ok=True)

    def drop(self, namespace: str) -> None:
        self.forget(namespace)
        if self.kind == "compact":
            self.vector_path(namespace).unlink(missing_ok=True)

    def close(self) -> None:
        pass

"""FAISS inner-product index with stable int64 ids, and its crash-safe file format.

The master copy is a CPU `IndexIDMap2` over an exact float32 flat index ("flat") or float16
scalar-quantised codes ("fp16": half the memory, scores within ~1e-3 of exact). Ids are the
gallery's sequence ids; `remove` really deletes the vectors (flat codes are compacted).

When faiss sees a GPU, searches run on a GPU replica (a flat index + an id array kept here)
because GPU flat indexes cannot remove vectors: additions are appended to the replica, a removal
marks it stale and the next search re-uploads it from the CPU master. GPU indexes are not safe
for concurrent use, so replica searches are serialised.

File format (one file, written to a temporary name, fsynced, then renamed over the old one):
    b"GAITIDX1" | u32 little-endian header length | header JSON | faiss index bytes | sha256
where the sha256 covers everything before it. The checksum is verified before faiss parses a
byte, so a torn or corrupt file is rejected (IndexFileError) instead of crashing the process.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from gallery.types import IndexKind

MAGIC = b"GAITIDX1"
_HASH_BYTES = 32
_IO_BLOCK = 1 << 20
# Reconstructing/uploading vectors to a replica in chunks bounds the temporary memory.
_REPLICA_CHUNK = 16384

Device = Literal["auto", "cpu", "gpu"]
ReplicaFactory = Callable[[int], Any]  # dim -> a faiss index without ids (flat, inner product)


class IndexFileError(ValueError):
    """The index file is missing, torn, corrupt or not an index file."""


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


_gpu_resources: Any = None
_gpu_resources_lock = threading.Lock()


def _gpu_replica_factory(kind: IndexKind) -> ReplicaFactory:
    def make(dim: int) -> Any:
        global _gpu_resources
        with _gpu_resources_lock:
            if _gpu_resources is None:
                _gpu_resources = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.useFloat16 = kind == "fp16"
        return faiss.GpuIndexFlatIP(_gpu_resources, dim, config)

    return make


def _make_master(dim: int, kind: IndexKind) -> Any:
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind == "fp16":
        base = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r}: flat | fp16")
    return faiss.IndexIDMap2(base)


class VectorIndex:
    """Inner-product search over `dim`-dimensional float32 vectors with int64 ids."""

    def __init__(self, dim: int, kind: IndexKind = "flat", device: Device = "auto",
                 replica_factory: ReplicaFactory | None = None, _master: Any = None):
        if dim <= 0:
            raise ValueError(f"dimension must be positive, got {dim}")
        self.dim = dim
        self.kind: IndexKind = kind
        self._master = _master if _master is not None else _make_master(dim, kind)
        self.device: Literal["cpu", "gpu"] = "cpu"
        if replica_factory is None and (device == "gpu" or (device == "auto" and gpu_available())):
            if not gpu_available():
                raise RuntimeError("device='gpu' but faiss sees no GPU (install faiss-gpu)")
            replica_factory = _gpu_replica_factory(kind)
            self.device = "gpu"
        self._replica_factory = replica_factory
        self._replica: Any = None
        self._replica_ids = np.zeros(0, np.int64)
        self._replica_lock = threading.Lock()

    @property
    def ntotal(self) -> int:
        return int(self._master.ntotal)

    @property
    def uses_replica(self) -> bool:
        return self._replica_factory is not None

    def ids(self) -> np.ndarray:
        """All ids, in storage order."""
        return faiss.vector_to_array(self._master.id_map).astype(np.int64, copy=False)

    def memory_bytes(self) -> int:
        """Bytes held by the vector codes and ids (the part that grows with the gallery)."""
        codes = self._master.index.sa_code_size() * self.ntotal
        return int(codes + 8 * self.ntotal)

    # -- mutation (callers serialise these; searches may run concurrently only between them) --
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"need (n, {self.dim}) vectors and n ids, got {vectors.shape} and {ids.shape}")
        if len(ids) == 0:
            return
        self._master.add_with_ids(vectors, ids)
        with self._replica_lock:
            if self._replica is not None:
                self._replica.add(vectors)
                self._replica_ids = np.concatenate([self._replica_ids, ids])

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        removed = int(self._master.remove_ids(ids))
        with self._replica_lock:
            self._replica = None  # re-uploaded lazily: GPU flat indexes cannot remove
        return removed

    # -- search --------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores (n, k') float32, ids (n, k') int64), best first,
        k' = min(k, ntotal)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"need (n, {self.dim}) queries, got {queries.shape}")
        k = min(int(k), self.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if not self.uses_replica:
            scores, ids = self._master.search(queries, k)
            return scores, ids
        with self._replica_lock:
            self._sync_replica()
            scores, positions = self._replica.search(queries, k)
            ids = np.where(positions >= 0, self._replica_ids[np.maximum(positions, 0)], -1)
        return scores, ids

    def _sync_replica(self) -> None:
        if self._replica is not None and self._replica.ntotal == self.ntotal:
            return
        assert self._replica_factory is not None
        replica = self._replica_factory(self.dim)
        base = self._master.index
        for start in range(0, self.ntotal, _REPLICA_CHUNK):
            count = min(_REPLICA_CHUNK, self.ntotal - start)
            replica.add(base.reconstruct_n(start, count))
        self._replica = replica
        self._replica_ids = self.ids().copy()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path, header: dict[str, Any]) -> None:
        """Write atomically: a reader sees the old file or the new one, never a mix."""
        write_index_file(path, dict(header, kind=self.kind, dim=self.dim, ntotal=self.ntotal), self._master)

    @staticmethod
    def read_header(path: str | Path) -> dict[str, Any]:
        """The header alone (cheap): lets a caller see that a file is stale before reading it all."""
        return read_index_header(path)

    @classmethod
    def load(cls, path: str | Path, device: Device = "auto",
             replica_factory: ReplicaFactory | None = None) -> tuple[VectorIndex, dict[str, Any]]:
        """Read a file written by `save`; returns the index and its header. Raises IndexFileError."""
        header, master = read_index_file(path)
        if not isinstance(master, faiss.IndexIDMap2):
            raise IndexFileError(f"{path}: holds {type(master).__name__}, expected IndexIDMap2")
        try:
            dim, kind, ntotal = int(header["dim"]), header["kind"], int(header["ntotal"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFileError(f"{path}: header lacks dim / kind / ntotal ({exc})") from exc
        if master.d != dim or master.ntotal != ntotal:
            raise IndexFileError(f"{path}: header says {ntotal} x {dim}, index holds {master.ntotal} x {master.d}")
        return cls(dim, kind, device=device, replica_factory=replica_factory, _master=master), header


# -- the file format (shared by every index kind: gallery.compact_index writes it too) ---------
def write_index_file(path: str | Path, header: dict[str, Any], index: Any) -> None:
    """Write `header` and the faiss `index` atomically (temporary file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header_bytes = json.dumps(dict(header, format=1), sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as fh:
            def write(chunk: bytes) -> int:
                digest.update(chunk)
                fh.write(chunk)
                return len(chunk)

            write(MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes)
            writer = faiss.PyCallbackIOWriter(write, _IO_BLOCK)
            faiss.write_index(index, writer)
            del writer  # flushes its buffer through `write`
            fh.write(digest.digest())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_index_header(path: str | Path) -> dict[str, Any]:
    """The header of an index file alone (cheap). Raises IndexFileError."""
    try:
        with open(path, "rb") as fh:
            return _read_header(fh)[0]
    except OSError as exc:
        raise IndexFileError(f"{path}: {exc}") from exc
    except (ValueError, struct.error) as exc:
        if isinstance(exc, IndexFileError):
            raise
        raise IndexFileError(f"{path}: bad header ({exc})") from exc


def read_index_file(path: str | Path) -> tuple[dict[str, Any], Any]:
    """(header, faiss index) of a file written by `write_index_file`, checksum verified before faiss
    parses a byte. Raises IndexFileError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header, payload_start = _read_header(fh)
            payload_end = size - _HASH_BYTES
            if payload_end < payload_start:
                raise IndexFileError(f"{path}: truncated")
            _verify_checksum(fh, payload_end)
            fh.seek(payload_start)
            remaining = [payload_end - payload_start]

            def read(n: int) -> bytes:
                n = min(n, remaining[0])
                remaining[0] -= n
                return fh.read(n)

            index = faiss.read_index(faiss.PyCallbackIOReader(read, _IO_BLOCK))
    except OSError as exc:
        raise IndexFileError(f"{path}: {exc}") from exc
    except (RuntimeError, ValueError, KeyError, json.JSONDecodeError, struct.error) as exc:
        if isinstance(exc, IndexFileError):
            raise
        raise IndexFileError(f"{path}: not a readable index ({exc})") from exc
    return header, index


def _read_header(fh: Any) -> tuple[dict[str, Any], int]:
    if fh.read(len(MAGIC)) != MAGIC:
        raise IndexFileError("not a gaitid index file (bad magic)")
    (length,) = struct.unpack("<I", fh.read(4))
    raw = fh.read(length)
    if len(raw) != length:
        raise IndexFileError("truncated header")
    header = json.loads(raw)
    if not isinstance(header, dict) or header.get("format") != 1:
        raise IndexFileError("unknown index file format")
    return header, len(MAGIC) + 4 + length


def _verify_checksum(fh: Any, payload_end: int) -> None:
    fh.seek(0)
    digest = hashlib.sha256()
    remaining = payload_end
    while remaining > 0:
        block = fh.read(min(_IO_BLOCK, remaining))
        if not block:
            raise IndexFileError("truncated")
        digest.update(block)
        remaining -= len(block)
    if fh.read(_HASH_BYTES) != digest.digest():
        raise IndexFileError("checksum mismatch (torn or corrupt file)")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""The full search vectors a compact index re-ranks its shortlist with, in a memory-mapped file.

Why: re-ranking from SQLite (Store.embeddings_by_id) costs a query of 256 16-KiB blobs plus turning
raw (C, P) embeddings into search vectors (gaitid.contract.search_vectors, float64): 12 ms of a
16 ms search at 50k sequences (bench/gallery_search.py --through-gallery). This file holds the
search vectors themselves, so a re-rank is a gather of 256 rows from the page cache (or 256 reads
announced together when cold).

It is a derived copy, like the index file beside it (index/<namespace>.vectors next to
index/<namespace>.faiss): SQLite stays the source of truth, and gallery.namespace_indexes uses the
file only when its header (database id, generation, generation token, model, similarity, dimension,
size) and its ids match the database, rebuilding it from the stored embeddings otherwise.

Layout (little-endian):
    [0, 4096)                     header page: b"GAITVEC1" | u32 length | header JSON | sha256 of
                                  everything before it (a torn header is rejected)
    [4096, 4096 + 8 capacity)     int64 id of each row; -1 = cleared (deleted) or never written
    [.., .. + 4 dim capacity)     float32 search vector of each row (each row starts page-aligned)

The file's size is fixed by `capacity` (the unused tail is sparse: it takes no disk blocks); a row
past `rows` is never read. A new file (a rebuild, or a full file that must grow) is written to a
temporary name, fsynced and renamed. Changes in place: `append` writes new rows after the last one,
`clear` overwrites deleted rows with -1 and zeros at once (fsynced: a deleted person's vectors do
not stay on disk). The header -- what the file vouches for -- is rewritten (after an fsync of the
rows) only by `save_header`, when the gallery persists its index: a crash in between leaves a
header older than the database, so the file is rebuilt, never trusted half-changed.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gallery.index import IndexFileError

MAGIC = b"GAITVEC1"
KIND = "vectors"
HEADER_BYTES = 4096
_ALIGN_ROWS = 512  # capacity granularity: the ids section (8 B/row) ends on a page boundary
_MIN_CAPACITY = 1024
_HASH_BYTES = 32


def _capacity_for(rows: int) -> int:
    wanted = max(_MIN_CAPACITY, rows + rows // 4)
    return -(-wanted // _ALIGN_ROWS) * _ALIGN_ROWS


def _file_size(capacity: int, dim: int) -> int:
    """Header page, then `capacity` int64 ids, then `capacity` rows of `dim` float32."""
    return HEADER_BYTES + capacity * (8 + 4 * dim)


def _vectors_offset(capacity: int) -> int:
    """Where row 0's vector starts: after the header page and the ids."""
    return HEADER_BYTES + 8 * capacity


def _header_page(header: dict[str, Any]) -> bytes:
    body = json.dumps(header, sort_keys=True).encode()
    head = MAGIC + struct.pack("<I", len(body)) + body
    page = head + hashlib.sha256(head).digest()
    if len(page) > HEADER_BYTES:
        raise ValueError(f"vector file header too long ({len(page)} bytes)")
    return page.ljust(HEADER_BYTES, b"\0")


def read_header(path: str | Path) -> dict[str, Any]:
    """The header of a vector file; IndexFileError when it is torn, corrupt or not one."""
    try:
        with open(path, "rb") as fh:
            page = fh.read(HEADER_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise IndexFileError(f"{path}: unreadable ({exc})") from exc
    if len(page) < len(MAGIC) + 4 or page[:len(MAGIC)] != MAGIC:
        raise IndexFileError(f"{path}: not a gaitid vector file")
    (length,) = struct.unpack("<I", page[len(MAGIC):len(MAGIC) + 4])
    end = len(MAGIC) + 4 + length
    if end + _HASH_BYTES > len(page) or hashlib.sha256(page[:end]).digest() != page[end:end + _HASH_BYTES]:
        raise IndexFileError(f"{path}: torn or corrupt header (checksum mismatch)")
    try:
        header = json.loads(page[len(MAGIC) + 4:end])
        dim, capacity, rows = int(header["dim"]), int(header["capacity"]), int(header["rows"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{path}: bad header ({exc})") from exc
    if header.get("kind") != KIND or dim <= 0 or capacity % _ALIGN_ROWS or not 0 <= rows <= capacity:
        raise IndexFileError(f"{path}: bad header {header}")
    expected = _file_size(capacity, dim)
    if size != expected:
        raise IndexFileError(f"{path}: torn: {size} bytes, the header says {expected}")
    return header


class VectorFile:
    """One namespace's search vectors by sequence id, memory-mapped. Callers serialise `append`,
    `clear` and `save_header` against each other and against `fetch` (the namespace's write lock);
    `fetch` calls may run concurrently."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = Path(path)
        self.header = dict(header)
        self.dim = int(header["dim"])
        self.capacity = int(header["capacity"])
        self.rows = int(header["rows"])
        self.loaded_from = "file"
        self.rebuild_reason: str | None = None
        self._fd = os.open(self.path, os.O_RDWR)
        try:
            self._map()
        except BaseException:
            os.close(self._fd)
            raise
        file_ids = np.array(self._ids[:self.rows])
        live = np.flatnonzero(file_ids >= 0)
        order = np.argsort(file_ids[live], kind="stable")
        self._live_ids = file_ids[live][order]
        self._live_rows = live[order].astype(np.int64)

    # -- opening and writing whole files --------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> VectorFile:
        """Open an existing file (its header checked); IndexFileError when torn or corrupt."""
        return cls(Path(path), read_header(path))

    @classmethod
    def write(cls, path: str | Path, header: dict[str, Any], dim: int, rows: int,
              chunks: Iterator[tuple[np.ndarray, np.ndarray]]) -> VectorFile:
        """Write a new file of the (ids, (n, dim) float32 vectors) chunks (about `rows` in all)
        atomically (temporary name, fsync, rename) and open it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            capacity = _capacity_for(rows)
            written = 0
            with os.fdopen(fd, "r+b") as fh:
                fh.truncate(_file_size(capacity, dim))
                for ids, vectors in chunks:
                    ids = np.ascontiguousarray(ids, np.int64)
                    vectors = np.ascontiguousarray(vectors, np.float32)
                    if vectors.shape != (len(ids), dim) or written + len(ids) > capacity:
                        raise ValueError(f"need ({len(ids)}, {dim}) vectors and at most {rows} rows in all")
                    os.pwrite(fh.fileno(), ids.tobytes(), HEADER_BYTES + 8 * written)
                    os.pwrite(fh.fileno(), vectors.tobytes(), _vectors_offset(capacity) + 4 * dim * written)
                    written += len(ids)
                # ids of the unused rows: -1 (a sparse hole reads as 0, a valid id)
                os.pwrite(fh.fileno(), np.full(capacity - written, -1, np.int64).tobytes(),
                          HEADER_BYTES + 8 * written)
                full = dict(header, kind=KIND, dim=dim, capacity=capacity, rows=written, ntotal=written)
                fh.flush()
                os.fsync(fh.fileno())
                os.pwrite(fh.fileno(), _header_page(full), 0)
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return cls.open(path)

    # -- facts ------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return len(self._live_ids)

    def ids(self) -> np.ndarray:
        """The ids held (ascending), as read from the file when opened and changed since."""
        return self._live_ids.copy()

    def file_ids(self) -> np.ndarray:
        """The ids the file's rows hold now (ascending, cleared rows left out): what a check compares."""
        ids = np.array(self._ids[:self.rows])
        return np.sort(ids[ids >= 0])

    # -- reading ----------------------------------------------------------------------------------
    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A compact index's FullVectors: sorted unique ids -> (the ids held, their (n, dim) vectors)."""
        ids = np.asarray(ids, np.int64)
        if len(self._live_ids) == 0 or len(ids) == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        at = self._locate(ids)
        found, rows = self._live_ids[at], self._live_rows[at]
        row_bytes = 4 * self.dim
        start = _vectors_offset(self.capacity)
        for row in rows.tolist():  # announce every read first: cold rows are fetched in parallel
            offset = start + row * row_bytes
            page = offset - offset % mmap.PAGESIZE
            self._mmap.madvise(mmap.MADV_WILLNEED, page, offset + row_bytes - page)
        vectors = self._vectors[rows]
        current = self._ids[rows] == found  # rows another process cleared meanwhile drop out
        if not current.all():
            found, vectors = found[current], vectors[current]
        return found, vectors

    # -- changes in place -------------------------------------------------------------------------
    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"need ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        if len(ids) == 0:
            return
        if self.rows + len(ids) > self.capacity:
            self._grow(self.ntotal + len(ids))
        os.pwrite(self._fd, vectors.tobytes(), _vectors_offset(self.capacity) + 4 * self.dim * self.rows)
        os.pwrite(self._fd, ids.tobytes(), HEADER_BYTES + 8 * self.rows)
        rows = np.arange(self.rows, self.rows + len(ids), dtype=np.int64)
        self.rows += len(ids)
        all_ids = np.concatenate([self._live_ids, ids])
        all_rows = np.concatenate([self._live_rows, rows])
        if len(self._live_ids) and ids.min() <= self._live_ids[-1] or not np.all(np.diff(ids) > 0):
            order = np.argsort(all_ids, kind="stable")
            all_ids, all_rows = all_ids[order], all_rows[order]
        self._live_ids, self._live_rows = all_ids, all_rows

    def clear(self, ids: np.ndarray) -> int:
        """Overwrite the rows of `ids` (those held) with id -1 and zeros, durably; how many."""
        ids = np.unique(np.asarray(ids, np.int64))
        if len(ids) == 0 or len(self._live_ids) == 0:
            return 0
        at = self._locate(ids)
        if len(at) == 0:
            return 0
        row_bytes = 4 * self.dim
        zeros = bytes(row_bytes)
        for row in self._live_rows[at].tolist():
            os.pwrite(self._fd, struct.pack("<q", -1), HEADER_BYTES + 8 * row)
            os.pwrite(self._fd, zeros, _vectors_offset(self.capacity) + row_bytes * row)
        os.fsync(self._fd)
        self._live_ids = np.delete(self._live_ids, at)
        self._live_rows = np.delete(self._live_rows, at)
        return len(at)

    def save_header(self, header: dict[str, Any]) -> None:
        """Vouch for `header` (the database state the rows now reflect): rows fsynced, then the header."""
        full = dict(header, kind=KIND, dim=self.dim, capacity=self.capacity, rows=self.rows, ntotal=self.ntotal)
        os.fsync(self._fd)
        os.pwrite(self._fd, _header_page(full), 0)
        os.fsync(self._fd)
        self.header = full

    def close(self) -> None:
        if self._fd < 0:
            return
        self._vectors = self._ids = None  # type: ignore[assignment]
        try:
            self._mmap.close()
        except BufferError:  # a fetch's view still alive: the mapping goes with it
            pass
        os.close(self._fd)
        self._fd = -1

    # -- helpers ----------------------------------------------------------------------------------
    def _locate(self, ids: np.ndarray) -> np.ndarray:
        """Positions in the (non-empty) live ids of those of the sorted `ids` held."""
        at = np.minimum(np.searchsorted(self._live_ids, ids), len(self._live_ids) - 1)
        return at[self._live_ids[at] == ids]

    def _map(self) -> None:
        size = _file_size(self.capacity, self.dim)
        self._mmap = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        self._mmap.madvise(mmap.MADV_RANDOM)  # a re-rank reads scattered rows: no read-ahead around them
        self._ids = np.frombuffer(self._mmap, np.int64, self.capacity, HEADER_BYTES)
        self._vectors = np.frombuffer(self._mmap, np.float32, self.capacity * self.dim,
                                      _vectors_offset(self.capacity)).reshape(self.capacity, self.dim)

    def _grow(self, rows: int) -> None:
        """Rewrite the file with room for more rows, leaving cleared rows out (atomic rename); the
        header keeps what it vouched for (the caller saves the new state later)."""
        order = np.argsort(self._live_rows, kind="stable")
        ids, rows_at = self._live_ids[order], self._live_rows[order]

        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for start in range(0, len(ids), 4096):
                yield ids[start:start + 4096], np.array(self._vectors[rows_at[start:start + 4096]])

        header = {k: v for k, v in self.header.items() if k not in ("capacity", "rows", "ntotal")}
        # The new header names what the old one vouched for (older than these rows: a crash before the
        # next save_header leaves a stale file, rebuilt); capacity for `rows` rows.
        grown = VectorFile.write(self.path, header, self.dim, max(rows, len(ids)), chunks())
        self.close()
        self.__dict__.update(grown.__dict__)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable. An OSError propagates (gallery.index._fsync_dir ignores one)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

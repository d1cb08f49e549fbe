"""Compact index: a learned compression of the search vectors shortlists, full vectors re-rank exactly.

Why: a full search vector is 16 KiB (256 x 16 float32); a million of them do not fit in memory and
an exhaustive scan of them takes ~0.4 s. This index holds ~200 bytes per sequence in memory:

    search vector (P*C float32) --uncentred PCA--> 256 floats --> 64-byte PQ codes (faiss "fast
    scan", 4 bits per pair of dimensions): scanned whole, best 8 x shortlist kept
                                                  --> 128-byte PQ codes (4 bits per dimension):
                                                      re-scored, best `shortlist` kept
                                                  --> full vectors: exact scores, best k

A search asks the compressed index for a shortlist of `spec.shortlist` sequences (approximate
scores), fetches their full vectors through a `FullVectors` callback (the gallery reads its
memory-mapped vector file, gallery.vector_file, attached with `attach_rows`; a benchmark its own) and re-ranks them exactly: the inner product of the contract's
search vectors (`gaitid.contract.search_vectors`) *is* the model's similarity, so a re-ranked score
is the score exhaustive search gives, and the answer equals exhaustive search's whenever the
shortlist holds the true best sequences (measured: bench/gallery_search.py).

The compression is learned from real embeddings: `train(sample)`, or by itself -- until
`spec.train_size` vectors have been added they are held exactly (uncompressed, searched
exhaustively: a small gallery is exact and costs what a flat index costs); the moment that many
are held, the index learns its compression from them and compresses them. A gallery rebuilt from
its database therefore learns from its first `train_size` stored sequences.

    index = CompactIndex(dim=4096, spec=CompactSpec())
    index.add(ids, vectors)                       # (n,) int64, (n, dim) float32 search vectors
    index.remove(ids)
    approx_scores, ids = index.shortlist(queries, 200)     # compressed scores only
    scores, ids = index.search(queries, 10, full_vectors)  # shortlist + exact re-ranking
    index.save(path, header); index, header = CompactIndex.load(path)

Files use gallery.index's format (header JSON + faiss bytes + sha256, written to a temporary
name, fsynced and renamed), so a torn file is rejected, never half-read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from gallery.index import IndexFileError, read_index_file, write_index_file

KIND = "compact"

# Sorted unique ids -> (the ids still stored, ascending; their (n, dim) float32 search vectors).
# Ids missing from the answer (deleted meanwhile) drop out of the re-ranked result.
FullVectors = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class VectorRows(Protocol):
    """Where the full vectors live when the index keeps them in step itself (gallery.vector_file):
    every add is appended, every removal cleared, and searches re-rank with `fetch`."""

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def clear(self, ids: np.ndarray) -> int: ...

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...

_PQ_BLOCK = 32  # faiss fast-scan stores codes in blocks of 32 vectors
PCA_SAMPLE = 8192  # vectors the projection is learned from (256 directions need far fewer)
MIN_TRAIN = 1024  # 4-bit PQ learns 16 centroids per sub-vector: faiss asks >= 39 points each


@dataclass(frozen=True)
class CompactSpec:
    """How vectors are compressed and searched (chosen by measurement: bench/gallery_search.py).

    reduced_dim: PCA output dimensions (real embeddings concentrate in a few hundred directions).
    subquantizers: PQ sub-vectors of 4 bits each: codes are subquantizers / 2 bytes per sequence.
        256 (one per reduced dimension) ranked the true top-10 subjects into a 256-shortlist for
        100 % of queries at 100k where 128 gave 94.5 % (bench/gallery_search.py, real embeddings).
    lists: IVF cells (0: none, every code is scanned). Measured on real embeddings, an IVF over the
        reduced vectors loses true neighbours (70 % top-10 agreement, 256 cells, 64 probed): off.
    probe: IVF cells visited per query.
    shortlist: sequences re-ranked exactly per query (at least the k asked for).
    prefilter: sub-quantizers of a coarser fast-scan code scanned first (0: none, the main codes
        are scanned). Its best prefilter_factor x shortlist candidates are re-scored with the main
        codes (then plain 4-bit PQ, faiss IndexRefine). Measured at 1M (real embeddings): 128 (64 B)
        x 8: 14.7 ms/query, top-10 = exhaustive for 100 %; 64 (32 B): 71.5 %; none (128 B scanned
        whole): 32.5 ms.
    train_size: vectors held exactly before the index learns its compression from them.
    """

    reduced_dim: int = 256
    subquantizers: int = 256
    lists: int = 0
    probe: int = 32
    shortlist: int = 256
    prefilter: int = 128
    prefilter_factor: int = 8
    train_size: int = 32768

    def __post_init__(self) -> None:
        if self.reduced_dim <= 0 or self.subquantizers <= 0 or self.reduced_dim % self.subquantizers:
            raise ValueError(f"reduced_dim {self.reduced_dim} must be a positive multiple of subquantizers "
                             f"{self.subquantizers}")
        if self.lists < 0 or self.probe <= 0 or self.shortlist <= 0:
            raise ValueError("lists must be >= 0, probe and shortlist > 0")
        if self.prefilter < 0 or (self.prefilter and (self.reduced_dim % self.prefilter or self.lists)) \
                or self.prefilter_factor < 1:
            raise ValueError("prefilter must divide reduced_dim, without lists; prefilter_factor >= 1")
        if self.train_size < max(self.reduced_dim, MIN_TRAIN):
            raise ValueError(f"train_size must be >= reduced_dim and >= {MIN_TRAIN}, got {self.train_size}")

    def factory(self, samples: int) -> str:
        """The faiss index_factory string of the codes of reduced vectors, trained on `samples`."""
        # faiss wants >= 39 training points per IVF cell; fewer cells when the sample is small.
        lists = min(self.lists, samples // 39)
        ivf = f"IVF{lists}," if lists >= 2 else ""
        return f"{ivf}PQ{self.subquantizers}x4fs"


def uncentred_pca(sample: np.ndarray, reduced_dim: int, iterations: int = 4, seed: int = 0) -> Any:
    """The top `reduced_dim` eigenvectors of the sample's second-moment matrix as a faiss PCAMatrix
    with zero mean. Uncentred on purpose: a centred projection scores (q - m).(x - m), whose -m.x
    term reorders the database for inner-product search; projecting q and x alike keeps
    q.P'Px ~ q.x. Randomised subspace iteration: seconds, where a full 4096-dim eigendecomposition
    (faiss PCAMatrix.train, numpy eigh) takes minutes on one core."""
    dim = sample.shape[1]
    second_moment = (sample.T @ sample) / len(sample)
    basis = np.random.default_rng(seed).standard_normal((dim, min(dim, reduced_dim + 64))).astype(np.float32)
    for _ in range(iterations):
        basis, _ = np.linalg.qr(second_moment @ basis)
    values, vectors = np.linalg.eigh(basis.T @ second_moment @ basis)
    top = np.argsort(values)[::-1][:reduced_dim]
    components = np.ascontiguousarray((basis @ vectors[:, top]).T, dtype=np.float32)  # (reduced, dim)
    projection = faiss.PCAMatrix(dim, reduced_dim)
    faiss.copy_array_to_vector(np.zeros(dim, np.float32), projection.mean)
    faiss.copy_array_to_vector(values[top].astype(np.float32), projection.eigenvalues)
    faiss.copy_array_to_vector(components.ravel(), projection.PCAMat)
    projection.prepare_Ab()
    projection.is_trained = True
    return projection


def rerank(queries: np.ndarray, shortlist_ids: np.ndarray, full_vectors: FullVectors,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query among its shortlist (ids, -1 = none): (scores, ids) (n, k), best
    first, padded with -inf / -1. One fetch of the union of the shortlists."""
    n = len(queries)
    scores = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    wanted = np.unique(shortlist_ids[shortlist_ids >= 0])
    if len(wanted) == 0 or k == 0:
        return scores, ids
    found_ids, found = full_vectors(wanted)
    found_ids = np.asarray(found_ids, np.int64)
    if len(found_ids) == 0:
        return scores, ids
    found = np.ascontiguousarray(found, dtype=np.float32)
    for row in range(n):
        candidates = shortlist_ids[row]
        positions = np.searchsorted(found_ids, candidates)
        positions = np.minimum(positions, len(found_ids) - 1)
        keep = (candidates >= 0) & (found_ids[positions] == candidates)
        candidates, positions = candidates[keep], positions[keep]
        exact = found[positions] @ queries[row]  # inner product of search vectors = the similarity
        order = np.argsort(-exact, kind="stable")[:k]
        scores[row, :len(order)] = exact[order]
        ids[row, :len(order)] = candidates[order]
    return scores, ids


DEFAULT_SPEC = CompactSpec()  # what a gallery's "compact" index uses


class CompactIndex:
    """Compressed inner-product index with int64 ids and exact re-ranking (see the module docstring).

    Callers serialise mutations (add / remove / train); searches may run concurrently between them.
    `full_vectors` is the default fetch callback of `search` (the gallery sets it per namespace).
    """

    kind = KIND

    def __init__(self, dim: int, spec: CompactSpec | None = None, *, full_vectors: FullVectors | None = None,
                 _faiss: Any = None, _trained_on: int = 0):
        if dim <= 0:
            raise ValueError(f"dimension must be positive, got {dim}")
        self.dim = dim
        self.spec = spec or DEFAULT_SPEC
        self.full_vectors = full_vectors
        self.device = "cpu"
        self.trained_on = _trained_on  # vectors the compression was learned from (0: not trained)
        self._index = _faiss if _faiss is not None else faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        self._keep: tuple = ()
        self.rows: VectorRows | None = None  # see attach_rows

    def attach_rows(self, rows: VectorRows | None) -> None:
        """Keep `rows` in step with the index (adds appended, removals cleared) and re-rank with them
        (the gallery's index/<namespace>.vectors); the rows held before are closed."""
        if self.rows is not None and self.rows is not rows:
            self.rows.close()
        self.rows = rows
        if rows is not None:
            self.full_vectors = rows.fetch

    # -- facts --------------------------------------------------------------------------------
    @property
    def trained(self) -> bool:
        return self.trained_on > 0

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids (storage order)."""
        ivf = self._ivf()  # None while untrained too
        if ivf is None:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
        lists = ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(ivf.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def memory_bytes(self) -> int:
        """Bytes held per sequence in total (codes, block padding, ids) plus the learned tables."""
        if not self.trained:
            return int((4 * self.dim + 8) * self.ntotal)
        code_bytes = self.spec.subquantizers // 2
        ivf = self._ivf()
        if self.spec.prefilter:  # fast-scan blocks of the coarse codes + plain main codes
            blocks = -(-self.ntotal // _PQ_BLOCK)
            per_vector = blocks * _PQ_BLOCK * self.spec.prefilter // 2 + (code_bytes + 8) * self.ntotal
            cells = 0
        elif ivf is None:
            blocks = -(-self.ntotal // _PQ_BLOCK)
            per_vector = blocks * _PQ_BLOCK * code_bytes + 8 * self.ntotal
            cells = 0
        else:
            sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], np.int64)
            per_vector = int((-(-sizes // _PQ_BLOCK)).sum()) * _PQ_BLOCK * code_bytes + 8 * self.ntotal
            cells = ivf.nlist * ivf.d * 4
        reduced = min(self.spec.reduced_dim, self.dim)
        tables = reduced * self.dim * 4 + self.spec.subquantizers * 16 * (reduced // self.spec.subquantizers) * 4
        return int(per_vector + cells + tables)

    # -- mutation -----------------------------------------------------------------------------
    def train(self, sample: np.ndarray) -> None:
        """Learn the compression from `sample` (n, dim) search vectors; vectors already held are
        re-encoded with it."""
        sample = self._check(sample)
        if self.trained and self.ntotal:
            raise ValueError("already trained and holding vectors: build a new index to retrain")
        if len(sample) < max(MIN_TRAIN, min(self.spec.reduced_dim, self.dim)):
            raise ValueError(f"need at least {MIN_TRAIN} (and reduced_dim) training vectors, got {len(sample)}")
        held_ids, held = self._held()
        reduced = min(self.spec.reduced_dim, self.dim)
        if self.spec.prefilter:
            coarse = faiss.index_factory(reduced, f"PQ{self.spec.prefilter}x4fs", faiss.METRIC_INNER_PRODUCT)
            fine = faiss.IndexPQ(reduced, self.spec.subquantizers, 4, faiss.METRIC_INNER_PRODUCT)
            codes = faiss.IndexRefine(coarse, fine)
            codes.k_factor = float(self.spec.prefilter_factor)
            refs: tuple = (coarse, fine)
        else:
            codes = faiss.index_factory(reduced, self.spec.factory(len(sample)), faiss.METRIC_INNER_PRODUCT)
            refs = ()
        if reduced < self.dim:
            projection = uncentred_pca(sample[:PCA_SAMPLE], reduced)
            codes.train(projection.apply(sample))
            compact = faiss.IndexPreTransform(projection, codes)
        else:
            codes.train(sample)
            compact = codes
        ivf = faiss.try_extract_index_ivf(compact)
        if ivf is not None:
            ivf.nprobe = self.spec.probe
        index = compact if ivf is not None else faiss.IndexIDMap(compact)  # no reverse map: 40+ B/id saved
        if len(held_ids):
            index.add_with_ids(held, held_ids)
        # faiss wrappers built in Python own none of their parts: keep them alive
        self._keep = (projection if reduced < self.dim else None, codes, compact, *refs)
        self._index, self.trained_on = index, len(sample)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = self._check(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"need n ids for n vectors, got {len(ids)} and {len(vectors)}")
        if len(ids) == 0:
            return
        if self.rows is not None:
            self.rows.append(ids, vectors)
        self._index.add_with_ids(vectors, ids)
        if not self.trained and self.ntotal >= self.spec.train_size:
            self.train(self._held()[1])

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        if self.rows is not None:
            self.rows.clear(ids)
        refine = self._refine()
        if refine is None:
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))
            self._clear_fast_scan_padding()
            return removed
        # faiss's IndexRefine cannot remove: remove the same positions from both of its codes (both
        # compact in order), then from the id map; every wrapper's count follows.
        id_map = faiss.vector_to_array(self._index.id_map)
        positions = np.flatnonzero(np.isin(id_map, ids)).astype(np.int64)
        if len(positions) == 0:
            return 0
        selector = faiss.IDSelectorBatch(len(positions), faiss.swig_ptr(positions))
        faiss.downcast_index(refine.base_index).remove_ids(selector)
        faiss.downcast_index(refine.refine_index).remove_ids(selector)
        faiss.copy_array_to_vector(np.delete(id_map, positions).astype(np.int64), self._index.id_map)
        for wrapper in self._wrappers():
            wrapper.ntotal -= len(positions)
        self._clear_fast_scan_padding()
        return len(positions)

    def _clear_fast_scan_padding(self) -> None:
        """Zero the unused slots of a fast-scan index's last block after a removal.

        faiss's IndexFastScan.remove_ids (1.15) moves codes down but leaves the old codes in the slots
        past ntotal, and the next add ORs new codes into them: 15 % of the sequences added after a
        removal were then found under other ids (tests/gallery/test_compact_index.py)."""
        if not self.trained:
            return
        for index in self._fast_scan_indexes():
            packer, n, bbs = index.get_CodePacker(), index.ntotal, index.bbs
            if n % bbs == 0:
                continue
            blocks = faiss.rev_swig_ptr(index.codes.data(), index.codes.size()).reshape(-1, packer.block_size)
            zero = np.zeros(packer.code_size, np.uint8)
            for slot in range(n, -(-n // bbs) * bbs):
                packer.pack_1(zero, slot, blocks)

    def _fast_scan_indexes(self) -> list[Any]:
        chain = self._wrappers()
        refine = self._refine()
        if refine is not None:
            chain.append(faiss.downcast_index(refine.base_index))
        return [i for i in chain if isinstance(i, faiss.IndexFastScan) and not isinstance(i, faiss.IndexIVF)]

    # -- search -------------------------------------------------------------------------------
    def shortlist(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by the compressed scores (exact while untrained): (scores, ids) (n, k'), k' = min(k,
        ntotal), -1 ids where fewer were found."""
        queries = self._check(queries)
        k = min(int(k), self.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self._index.search(queries, k)

    def search(self, queries: np.ndarray, k: int,
               full_vectors: FullVectors | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k scores among the shortlist of max(k, spec.shortlist) sequences: (scores, ids)
        (n, k'), best first, k' = min(k, ntotal), padded with -inf / -1."""
        queries = self._check(queries)
        k = min(int(k), self.ntotal)
        if not self.trained or k <= 0:
            return self.shortlist(queries, k)  # held exactly: already the exact answer
        fetch = full_vectors or self.full_vectors
        if fetch is None:
            raise RuntimeError("a trained compact index needs full_vectors to re-rank its shortlist")
        _, candidates = self.shortlist(queries, max(k, self.spec.shortlist))
        return rerank(queries, candidates, fetch, k)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path, header: dict[str, Any]) -> None:
        """Write atomically (gallery.index's file format): a reader sees the old file or the new one."""
        write_index_file(path, dict(header, kind=KIND, dim=self.dim, ntotal=self.ntotal, spec=asdict(self.spec),
                                    trained_on=self.trained_on), self._index)

    @classmethod
    def load(cls, path: str | Path, full_vectors: FullVectors | None = None) -> tuple[CompactIndex, dict[str, Any]]:
        """Read a file written by `save`; returns the index and its header. Raises IndexFileError."""
        header, index = read_index_file(path)
        try:
            if header["kind"] != KIND:
                raise IndexFileError(f"{path}: holds a {header['kind']!r} index, expected {KIND!r}")
            dim, ntotal, trained_on = int(header["dim"]), int(header["ntotal"]), int(header["trained_on"])
            spec = CompactSpec(**header["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, IndexFileError):
                raise
            raise IndexFileError(f"{path}: bad compact index header ({exc})") from exc
        if index.d != dim or index.ntotal != ntotal:
            raise IndexFileError(f"{path}: header says {ntotal} x {dim}, index holds {index.ntotal} x {index.d}")
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = spec.probe
        return cls(dim, spec, full_vectors=full_vectors, _faiss=index, _trained_on=trained_on), header

    # -- helpers ------------------------------------------------------------------------------
    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"need (n, {self.dim}) vectors, got {vectors.shape}")
        return vectors

    def _held(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) held exactly (untrained stage): what training learns from and re-encodes."""
        if self.trained or self.ntotal == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return ids, self._index.index.reconstruct_n(0, self.ntotal)

    def _wrappers(self) -> list[Any]:
        """The id map and every index under it, outermost first."""
        chain, index = [], self._index
        while index is not None:
            index = faiss.downcast_index(index)
            chain.append(index)
            index = getattr(index, "index", None) if not isinstance(index, faiss.IndexRefine) else None
        return chain

    def _refine(self) -> Any:
        """The IndexRefine of a prefiltered index, else None."""
        found = [i for i in self._wrappers() if isinstance(i, faiss.IndexRefine)] if self.trained else []
        return found[0] if found else None

    def _ivf(self) -> Any:
        return faiss.try_extract_index_ivf(self._index) if self.trained else None

"""Gallery search at 100k / 1M / 10M enrolled sequences: the compact index against exhaustive search.

Galleries are built from REAL embeddings (bench/gallery_data.py: CASIA-B sub-windows embedded with
the shipped model, recombined part by part into as many identities as the size needs; 10 walks
per identity). Queries: fresh walks of enrolled identities (80 %) and of strangers (20 %).

Per size, one CPU thread (OMP_NUM_THREADS=1, faiss.omp_set_num_threads(1)):
  1. the gallery's full search vectors (float32, 16 KiB each) are written to a memory-mapped file
     under --cache (the compact index re-ranks from it, as the gallery re-ranks from SQLite), and
     exhaustive ground truth is computed chunk by chunk while writing (never all in memory);
  2. exhaustive search (gallery.index.VectorIndex "flat", everything in memory) when it fits the
     memory budget (--max-rss-gib), else reported as not fitting;
  3. the compact index (gallery.compact_index, the gallery's index_kind "compact"): trained on the
     first train_size vectors, built from the memmap, then queried one query at a time: compressed
     shortlist + exact re-ranking with vectors read from the memmap. The file's pages are dropped
     from the page cache before timing (posix_fadvise DONTNEED, this file only), so re-ranking
     reads from disk.

Reported: build time, memory (bytes/sequence of the index, RSS growth), ms/query (median and p95
of single queries), agreement with exhaustive search: top-10 subjects identical (same subjects in
the same order), the same decision at the model's threshold (known subject or unknown).

    python bench/gallery_search.py --sizes 100000 1000000 --index compact
    python bench/gallery_search.py --sizes 10000000 --index compact --no-memmap   # 10M: see --no-memmap
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gallery_data import DEFAULT_CACHE, PER_IDENTITY, ChimeraGallery, RealWalks
from gallery.compact_index import DEFAULT_SPEC, CompactIndex, CompactSpec
from gallery.index import VectorIndex

GIB = 1024**3
CHUNK = 20_000  # sequences generated, written and scored at a time
TOP_SUBJECTS = 10
# Sequences asked of an index for the top-10 subjects (as Gallery.search does); also the truth kept.
K_SEQUENCES = TOP_SUBJECTS * PER_IDENTITY
THRESHOLD = 0.7788  # the shipped model's calibrated open-set threshold (models/README.md)


def rss_bytes(field: str = "VmRSS") -> int:
    if field == "VmRSS":  # freed buffers (training, chunks) go back to the system first
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def drop_file_cache(*paths: Path) -> None:
    """Drop these files' pages from the page cache (posix_fadvise DONTNEED), so the next reads hit the disk."""
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def top_subjects(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[list[int], float]:
    """Sequence hits (best first) -> the first k distinct identities and the best score, as the
    gallery ranks subjects (gallery.namespace_state)."""
    seen: list[int] = []
    for sequence_id in ids.tolist():
        if sequence_id < 0:
            continue
        subject = sequence_id // PER_IDENTITY
        if subject not in seen:
            seen.append(subject)
            if len(seen) == k:
                break
    return seen, float(scores[0]) if len(scores) else -np.inf


def merge_topk(scores: np.ndarray, ids: np.ndarray, new_scores: np.ndarray, new_ids: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    all_scores = np.concatenate([scores, new_scores], axis=1)
    all_ids = np.concatenate([ids, new_ids], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_scores, order, 1), np.take_along_axis(all_ids, order, 1)


@dataclass
class Row:
    size: int
    index: str
    status: str = "ok"
    build_s: float = 0.0
    bytes_per_sequence: float = 0.0
    rss_growth_gib: float = 0.0
    median_ms: float = 0.0
    p95_ms: float = 0.0
    top10_identical: float = float("nan")
    decision_equal: float = float("nan")


class Prepared:
    """A gallery of `size` sequences: memmap of its vectors (or generated rows), queries, truth."""

    def __init__(self, size: int, args: argparse.Namespace, walks: RealWalks):
        self.size = size
        self.chimeras = ChimeraGallery(walks, seed=args.seed)
        self.dim = walks.dim
        rng = np.random.default_rng([args.seed, size, 7])
        identities = size // PER_IDENTITY
        enrolled = rng.choice(identities, int(args.queries * 0.8), replace=False)
        strangers = identities + rng.choice(identities, args.queries - len(enrolled), replace=False)
        self.queries = self.chimeras.fresh_walks(np.concatenate([enrolled, strangers]))
        # Named by what they are made of: a cache with more subjects (or another model) is another gallery.
        self.tag = f"{size}-{len(walks.subjects)}subjects-{walks.model_id}-seed{args.seed}"
        self.path = args.cache / f"gallery-{self.tag}.npy" if args.memmap else None
        truth_path = args.cache / f"truth-{self.tag}-q{args.queries}.npz"
        ready = truth_path.exists() and (self.path is None or self.path.exists())
        if ready:
            with np.load(truth_path) as z:
                self.truth_scores, self.truth_ids = z["scores"], z["ids"]
            return
        started = time.perf_counter()
        out = None
        if self.path is not None:
            out = np.lib.format.open_memmap(self.path.with_suffix(".tmp.npy"), "w+", np.float32, (size, self.dim))
        scores = np.full((len(self.queries), K_SEQUENCES), -np.inf, np.float32)
        ids = np.full((len(self.queries), K_SEQUENCES), -1, np.int64)
        for start in range(0, size, CHUNK):
            stop = min(size, start + CHUNK)
            vectors = self.chimeras.sequences(start, stop)
            if out is not None:
                out[start:stop] = vectors
            chunk_scores = self.queries @ vectors.T
            top = np.argpartition(-chunk_scores, min(K_SEQUENCES, stop - start) - 1, axis=1)[:, :K_SEQUENCES]
            scores, ids = merge_topk(scores, ids, np.take_along_axis(chunk_scores, top, 1), start + top, K_SEQUENCES)
        if out is not None:
            out.flush()
            del out
            os.replace(self.path.with_suffix(".tmp.npy"), self.path)
        np.savez(truth_path, scores=scores, ids=ids)
        self.truth_scores, self.truth_ids = scores, ids
        print(f"  {size:,}: vectors and exhaustive truth in {time.perf_counter() - started:.0f} s", flush=True)

    def vectors(self) -> np.ndarray:
        """The gallery's vectors: the memmap (read from disk), or rows generated on demand."""
        if self.path is None:
            raise RuntimeError("no memmap")
        return np.load(self.path, mmap_mode="r")

    def chunks(self):
        """(ids, vectors) CHUNK at a time, read with pread (a mapping would count the file in RSS)."""
        offset = self.vectors().offset if self.path is not None else 0
        fd = os.open(self.path, os.O_RDONLY) if self.path is not None else None
        try:
            for start in range(0, self.size, CHUNK):
                stop = min(self.size, start + CHUNK)
                if fd is None:
                    rows = self.chimeras.sequences(start, stop)
                else:
                    rows = np.empty((stop - start, self.dim), np.float32)
                    os.preadv(fd, [memoryview(rows).cast("B")], offset + start * 4 * self.dim)
                yield np.arange(start, stop, dtype=np.int64), rows
        finally:
            if fd is not None:
                os.close(fd)

    def fetch(self):
        """FullVectors reading the file (sorted ids -> rows), or regenerated rows without one. Reads
        are announced first (posix_fadvise WILLNEED: the kernel fetches them in parallel), then read
        with pread: one thread, no mapping kept (so dropping the page cache really drops them)."""
        if self.path is not None:
            offset = self.vectors().offset
            row = 4 * self.dim
            fd = os.open(self.path, os.O_RDONLY)

            def read(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                for i in ids.tolist():
                    os.posix_fadvise(fd, offset + i * row, row, os.POSIX_FADV_WILLNEED)
                out = np.empty((len(ids), self.dim), np.float32)
                view = memoryview(out).cast("B")
                for j, i in enumerate(ids.tolist()):
                    os.preadv(fd, [view[j * row:(j + 1) * row]], offset + i * row)
                return ids, out

            return read
        return lambda ids: (ids, np.concatenate([self.chimeras.sequences(int(i), int(i) + 1) for i in ids]))

    def drop_page_cache(self) -> None:
        if self.path is not None:
            drop_file_cache(self.path)

    def truth(self, q: int) -> tuple[list[int], float]:
        return top_subjects(self.truth_scores[q], self.truth_ids[q], TOP_SUBJECTS)


def agreement(prepared: Prepared, row: Row, answers: list[tuple[list[int], float]]) -> None:
    """Answers of the first len(answers) queries against the exhaustive truth."""
    same_top, same_decision = [], []
    for q, (subjects, best) in enumerate(answers):
        truth_subjects, truth_best = prepared.truth(q)
        same_top.append(subjects == truth_subjects)
        decide = (lambda s, b: s[0] if b >= THRESHOLD else None)
        same_decision.append(decide(subjects, best) == decide(truth_subjects, truth_best))
    row.top10_identical, row.decision_equal = float(np.mean(same_top)), float(np.mean(same_decision))


def time_queries(prepared: Prepared, search, count: int | None = None) -> tuple[list, list[float]]:
    answers, times = [], []
    search(prepared.queries[:1])  # warm-up (code paths, not the data)
    prepared.drop_page_cache()
    for q in range(count or len(prepared.queries)):
        started = time.perf_counter()
        scores, ids = search(prepared.queries[q:q + 1])
        times.append(time.perf_counter() - started)
        answers.append(top_subjects(scores[0], ids[0], TOP_SUBJECTS))
    return answers, times


def _measure(prepared: Prepared, row: Row, new_index: Callable[[], CompactIndex | VectorIndex],
             queries: int | None = None) -> Row:
    """Build an index from `new_index()` and every chunk of the gallery (build time, RSS growth, bytes
    per sequence), then time `queries` single queries (all: None) and compare them with the truth."""
    rss_before = rss_bytes()
    started = time.perf_counter()
    index = new_index()
    for ids, vectors in prepared.chunks():  # the compact index trains itself on the first train_size vectors
        index.add(ids, vectors)
    row.build_s = time.perf_counter() - started
    row.rss_growth_gib = (rss_bytes() - rss_before) / GIB
    row.bytes_per_sequence = index.memory_bytes() / index.ntotal
    answers, times = time_queries(prepared, lambda q: index.search(q, K_SEQUENCES), queries)
    fill(row, times)
    agreement(prepared, row, answers)
    return row


def run_compact(prepared: Prepared, spec: CompactSpec) -> Row:
    return _measure(prepared, Row(prepared.size, f"compact {spec_label(spec)}"),
                    lambda: CompactIndex(prepared.dim, spec, full_vectors=prepared.fetch()))


def run_exhaustive(prepared: Prepared, budget: int, queries: int) -> Row:
    row = Row(prepared.size, "exhaustive (flat float32)")
    need = prepared.size * (4 * prepared.dim + 8) * 1.35  # faiss grows its vector by doubling
    if need > budget:
        row.status = f"does not fit: needs {need / GIB:.1f} GiB, budget {budget / GIB:.1f} GiB"
        return row
    return _measure(prepared, row, lambda: VectorIndex(prepared.dim, "flat", device="cpu"), queries)


def fill(row: Row, times: list[float]) -> None:
    row.median_ms = float(np.median(times)) * 1e3
    row.p95_ms = float(np.percentile(times, 95)) * 1e3


def spec_label(spec: CompactSpec) -> str:
    ivf = f"IVF{spec.lists}/{spec.probe} " if spec.lists else ""
    prefilter = f"PQ{spec.prefilter}x4fs x{spec.prefilter_factor} -> " if spec.prefilter else ""
    return f"PCA{spec.reduced_dim} {ivf}{prefilter}PQ{spec.subquantizers}x4 R{spec.shortlist}"


def print_header(args: argparse.Namespace) -> None:
    print(f"faiss {faiss.__version__}, 1 thread, {args.queries} single queries per size "
          f"({int(args.queries * 0.8)} enrolled identities' fresh walks, the rest strangers), threshold {THRESHOLD}, "
          f"load average at start {load_average()}")
    print(f"| sequences | index | build s | bytes/sequence | RSS growth GiB | ms/query median | p95 | "
          f"top-{TOP_SUBJECTS} subjects = exhaustive | decision = exhaustive |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)


def print_row(r: Row) -> None:
    if r.status != "ok":
        print(f"| {r.size:,} | {r.index} | {r.status} | | | | | | |", flush=True)
        return
    print(f"| {r.size:,} | {r.index} | {r.build_s:.0f} | {r.bytes_per_sequence:,.0f} | {r.rss_growth_gib:.2f} | "
          f"{r.median_ms:.1f} | {r.p95_ms:.1f} | {r.top10_identical:.3f} | {r.decision_equal:.3f} |", flush=True)


# -- through the Gallery (--through-gallery) ---------------------------------------------------------
MODEL_ID = "bench-model"


def gallery_root(prepared: Prepared, args: argparse.Namespace, walks: RealWalks) -> Path:
    """A real gallery (SQLite + index/) holding the prepared sequences (id n + 1 = sequence n of the
    chimeras, subject "s<identity>"), bulk-written once into --cache and reused; opening it through
    Gallery (index_kind "compact") builds and saves its index files."""
    from gallery import Gallery
    from gallery.store import Store, encode_array

    root = args.cache / f"gallery-root-{prepared.tag}"
    done = root / "complete"
    if done.exists():
        return root
    if root.exists():
        import shutil
        shutil.rmtree(root)
    started = time.perf_counter()
    store = Store(root / "gallery.db")
    parts = walks.parts
    channels = prepared.dim // parts
    silhouettes = encode_array(np.zeros((1, 64, 44), np.uint8))
    now = time.time()
    with store.write() as conn:
        store.ensure_namespace(conn, "default")
        store.set_active_model(conn, "default", MODEL_ID, (channels, parts))
    for ids, vectors in prepared.chunks():
        start, stop = int(ids[0]), int(ids[-1]) + 1
        raw = vectors.reshape(len(vectors), parts, channels).transpose(0, 2, 1)  # (n, C, P) as a model makes
        with store.write() as conn:
            conn.executemany("INSERT OR IGNORE INTO subjects(namespace, subject_id, display_name, created_at, "
                             "updated_at) VALUES ('default', ?, ?, ?, ?)",
                             [(f"s{i}", f"s{i}", now, now) for i in range(start // PER_IDENTITY,
                                                                         -(-stop // PER_IDENTITY))])
            conn.executemany("INSERT INTO sequences(id, namespace, subject_id, frames, silhouettes, created_at) "
                             "VALUES (?, 'default', ?, 1, ?, ?)",
                             [(n + 1, f"s{n // PER_IDENTITY}", silhouettes, now) for n in range(start, stop)])
            conn.executemany("INSERT INTO embeddings(sequence_id, model_id, channels, parts, vector, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             [(n + 1, MODEL_ID, channels, parts, np.ascontiguousarray(raw[n - start]).tobytes(), now)
                              for n in range(start, stop)])
    with store.write() as conn:
        store.bump_generation(conn, "default")
    store.checkpoint()
    store.close()
    written = time.perf_counter() - started
    with Gallery(root, index_kind="compact", threshold=THRESHOLD, device="cpu") as gallery:
        info = gallery.status().index
    done.touch()
    print(f"  {prepared.size:,}: gallery written in {written:.0f} s, opened (index {info.loaded_from}) in "
          f"{time.perf_counter() - started - written:.0f} s", flush=True)
    return root


def run_through_gallery(prepared: Prepared, args: argparse.Namespace, walks: RealWalks) -> None:
    """ms/query of Gallery.search (top-10 subjects) on the compact index, re-ranking from SQLite
    (before) and from the gallery's re-rank source (after), cold (files dropped from the page
    cache first) and warm (a second pass); agreement of each with exhaustive search."""
    from gallery import Gallery

    root = gallery_root(prepared, args, walks)
    parts, channels = walks.parts, prepared.dim // walks.parts
    queries = prepared.queries.reshape(len(prepared.queries), parts, channels).transpose(0, 2, 1)
    with Gallery(root, index_kind="compact", threshold=THRESHOLD, device="cpu") as gallery:
        indexes = gallery._indexes
        state = indexes.get("default")
        index = state.index
        files = [root / "gallery.db", root / "gallery.db-wal", *sorted((root / "index").glob("*"))]
        disk = {p.name: p.stat().st_size for p in files if p.exists()}
        rows = getattr(index, "rows", None)
        print(f"  {prepared.size:,} through Gallery: index {state.loaded_from}, vector file "
              f"{getattr(rows, 'loaded_from', 'none')} ({getattr(rows, 'rebuild_reason', None)}), files "
              + ", ".join(f"{k} {v / prepared.size:,.0f} B/seq" for k, v in disk.items()), flush=True)
        sources = {"SQLite (Store.embeddings_by_id)": indexes.database_full_vectors(state.model_id)}
        if index.full_vectors is not None and getattr(index.full_vectors, "__self__", None) is not None:
            sources["vector file (memory-mapped)"] = index.full_vectors
        for label, fetch in sources.items():
            index.full_vectors = fetch
            gallery.search(queries[:1], model_id=MODEL_ID, top_k=TOP_SUBJECTS)  # warm-up (code, not data)
            for temperature in ("cold", "warm"):
                if temperature == "cold":
                    drop_file_cache(*files)
                times, answers = [], []
                for q in range(len(queries)):
                    started = time.perf_counter()
                    answer = gallery.search(queries[q], model_id=MODEL_ID, top_k=TOP_SUBJECTS)[0]
                    times.append(time.perf_counter() - started)
                    answers.append(([int(c.subject_id[1:]) for c in answer.candidates],
                                    answer.candidates[0].score if answer.candidates else -np.inf))
                row = Row(prepared.size, f"Gallery.search, compact, re-rank from {label}, {temperature}")
                fill(row, times)
                agreement(prepared, row, answers)
                print_row(row)
        profile_rerank(gallery, prepared, queries)


def profile_rerank(gallery, prepared: Prepared, queries: np.ndarray) -> None:
    """Where a search's time goes (medians over the queries, warm): the compressed shortlist, each
    step of the SQLite read of its 256 rows, and the re-rank from the gallery's re-rank source."""
    from gallery.compact_index import rerank

    indexes = gallery._indexes
    state = indexes.get("default")
    index, store = state.index, gallery.store
    vectors = indexes.vectors(queries)
    steps: dict[str, list[float]] = {k: [] for k in ("shortlist", "sql execute+fetchall", "blob decode+stack",
                                                      "search_vectors", "vector file fetch", "exact re-rank")}
    k = TOP_SUBJECTS * state.max_per_subject()
    for q in range(len(vectors)):
        t0 = time.perf_counter()
        _, candidates = index.shortlist(vectors[q:q + 1], max(k, index.spec.shortlist))
        t1 = time.perf_counter()
        wanted = np.unique(candidates[candidates >= 0])
        with store.read() as conn:
            rows = conn.execute(
                "SELECT sequence_id, channels, parts, vector FROM embeddings WHERE model_id = ? AND sequence_id IN "
                "(SELECT value FROM json_each(?)) ORDER BY sequence_id", (state.model_id, json.dumps(wanted.tolist()))
            ).fetchall()
        t2 = time.perf_counter()
        raw = np.stack([np.frombuffer(r[3], dtype=np.float32).reshape(r[1], r[2]) for r in rows])
        t3 = time.perf_counter()
        indexes.vectors(raw)
        t4 = time.perf_counter()
        fetch = index.full_vectors
        fetch(wanted)
        t5 = time.perf_counter()
        rerank(vectors[q:q + 1], candidates, fetch, k)
        t6 = time.perf_counter()
        for key, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            steps[key].append(value)
    print("  where a search's time goes (median ms, warm): "
          + ", ".join(f"{key} {np.median(v) * 1e3:.2f}" for key, v in steps.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--index", choices=["compact", "exhaustive"], default="compact",
                        help="compact: the compact index, with exhaustive search beside it where it fits")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="real embeddings, memmaps, truth")
    parser.add_argument("--no-memmap", dest="memmap", action="store_false",
                        help="do not write the full vectors (when they exceed the disk): re-rank from rows "
                             "regenerated from the real walks in memory (not a disk read)")
    parser.add_argument("--exhaustive-queries", type=int, default=20,
                        help="queries timed on exhaustive search (slow; it is the reference, so its agreement "
                             "only checks the streamed truth)")
    parser.add_argument("--max-rss-gib", type=float, default=6.0, help="memory budget for exhaustive search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--through-gallery", action="store_true",
                        help="also time Gallery.search on a real gallery (SQLite + compact index) of each size, "
                             "built once under --cache: re-ranking from SQLite (before) and from the vector file "
                             "(after), cold and warm, with the time of each step")
    parser.add_argument("--skip-index", action="store_true", help="with --through-gallery: only the Gallery rows")
    for field, default in asdict(DEFAULT_SPEC).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=default,
                            help=f"CompactSpec.{field} (default {default})")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    spec = replace(DEFAULT_SPEC, **{f: getattr(args, f) for f in asdict(DEFAULT_SPEC)})
    walks = RealWalks.load(args.cache)
    print(f"real walks: {len(walks.vectors):,} embeddings of {len(walks.subjects)} CASIA-B subjects "
          f"(model {walks.model_id})")
    print_header(args)
    for size in args.sizes:
        prepared = Prepared(size, args, walks)
        if not args.skip_index:
            print_row(run_exhaustive(prepared, int(args.max_rss_gib * GIB), args.exhaustive_queries))
            if args.index == "compact":
                print_row(run_compact(prepared, spec))
        if args.through_gallery:
            run_through_gallery(prepared, args, walks)
    print(f"peak RSS of this process: {rss_bytes('VmHWM') / GIB:.2f} GiB; load average at end {load_average()}")


if __name__ == "__main__":
    main()

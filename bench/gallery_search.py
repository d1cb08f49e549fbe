"""Gallery search time and memory at 10k / 100k / 1M enrolled sequences (one CPU thread).

Embeddings are synthetic but shaped like the real ones: (C, P) = (256, 16) per sequence, made
per-part-normalised and flattened to 4096 float32 exactly as the gallery does
(gaitid.contract.search_vectors). Subjects have 10 sequences each. Like a trained model's
features, everyone shares a common component: sequence = common + 0.25 * identity + 0.7 * noise
(all standard normal), so a genuine pair scores 0.682 +- 0.007 and an impostor pair
0.642 +- 0.008: identities are only ~5 impostor standard deviations apart, so quantisation
errors show up in the ranking (e.g. PQ loses subjects at 100k).
A query is a fresh sample of an enrolled subject.

Index kinds:
  flat  exact float32 inner product (gallery default)     16 KiB / sequence
  fp16  float16 scalar quantiser (gallery index_kind)        8 KiB / sequence
  sq8   8-bit scalar quantiser, trained on 10k vectors       4 KiB / sequence (bench only)
  pq    product quantiser 256 x 8 bit, trained on 10k      256 B  / sequence (bench only)
flat and fp16 run through gallery.index.VectorIndex (the product code); sq8 and pq are plain faiss.

At 1M, flat needs 16 GiB: every kind whose index would not fit the memory budget (--max-rss-gib,
default 12, and what the machine has available minus a margin) is skipped and says so; recall
there is measured against exact top-k computed by streaming the data (no flat index needed).

Reported per size and kind: build time, index memory (RSS growth while building, and the codes'
own size), single-query latency (median over --single queries), batch latency (--queries at once),
recall@k of the top-k sequences and rank-1 agreement with the exact search.

    python bench/gallery_search.py                       # 10k, 100k, 1M
    python bench/gallery_search.py --sizes 10000 --kinds flat fp16
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np

from gaitid.contract import search_vectors
from gallery.index import VectorIndex

C, P = 256, 16
DIM = C * P
PER_SUBJECT = 10
CHUNK = 10_000  # sequences generated (and added) at a time: 1000 subjects
IDENTITY = 0.25
NOISE = 0.7
GIB = 1024**3
BYTES_PER_VECTOR = {"flat": 4 * DIM, "fp16": 2 * DIM, "sq8": DIM, "pq": 256}


# -- synthetic data (deterministic per chunk, so it can be streamed twice) ----------------------
def common_component(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 12345]).standard_normal((C, P), dtype=np.float32)


def chunk_centres(seed: int, chunk: int) -> np.ndarray:
    rng = np.random.default_rng([seed, chunk, 0])
    identity = rng.standard_normal((CHUNK // PER_SUBJECT, C, P), dtype=np.float32)
    return common_component(seed) + IDENTITY * identity


def chunk_vectors(seed: int, chunk: int, count: int) -> np.ndarray:
    centres = np.repeat(chunk_centres(seed, chunk), PER_SUBJECT, axis=0)[:count]
    noise = np.random.default_rng([seed, chunk, 1]).standard_normal(centres.shape, dtype=np.float32)
    return search_vectors(centres + NOISE * noise)


def make_queries(seed: int, size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh samples of `count` random enrolled subjects: (vectors, subject numbers)."""
    rng = np.random.default_rng([seed, 999])
    subjects = rng.choice(size // PER_SUBJECT, size=count, replace=False)
    rows = []
    for subject in subjects:
        centre = chunk_centres(seed, subject * PER_SUBJECT // CHUNK)[subject % (CHUNK // PER_SUBJECT)]
        rows.append(centre + NOISE * rng.standard_normal((C, P), dtype=np.float32))
    return search_vectors(np.stack(rows)), subjects


def chunks(size: int) -> range:
    return range((size + CHUNK - 1) // CHUNK)


# -- indexes ----------------------------------------------------------------------------------
class FaissIndex:
    """sq8 / pq: plain faiss with ids (the product supports flat and fp16 only)."""

    def __init__(self, kind: str, training: np.ndarray):
        if kind == "sq8":
            base = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        else:
            base = faiss.IndexPQ(DIM, 256, 8, faiss.METRIC_INNER_PRODUCT)
        base.train(training)
        self.index = faiss.IndexIDMap2(base)
        self._base = base

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def memory_bytes(self) -> int:
        return int((self._base.sa_code_size() + 8) * self.ntotal)


def make_index(kind: str, seed: int) -> Any:
    if kind in ("flat", "fp16"):
        return VectorIndex(DIM, kind, device="cpu")  # type: ignore[arg-type]
    return FaissIndex(kind, chunk_vectors(seed, 0, CHUNK))


# -- measurement helpers ----------------------------------------------------------------------
def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def merge_topk(scores: np.ndarray, ids: np.ndarray, new_scores: np.ndarray, new_ids: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    all_scores = np.concatenate([scores, new_scores], axis=1)
    all_ids = np.concatenate([ids, new_ids], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_scores, order, 1), np.take_along_axis(all_ids, order, 1)


@dataclass
class Row:
    size: int
    kind: str
    status: str = "ok"
    build_s: float = 0.0
    rss_growth_gib: float = 0.0
    codes_gib: float = 0.0
    single_ms: float = 0.0
    batch_ms: float = 0.0
    batch_per_query_ms: float = 0.0
    recall: float = float("nan")
    rank1: float = float("nan")
    score_error: float = float("nan")
    correct: float = float("nan")


def plan_passes(kinds: list[str], size: int, budget: int) -> tuple[list[list[str]], list[str]]:
    """One build pass per kind that fits the memory budget (so RSS growth is that kind's alone);
    the rest are skipped."""
    # faiss grows its code vector by doubling: while it copies, old + new buffers are resident,
    # so the peak is ~1.3x the final codes at these sizes (measured growth is reported below).
    fits = [k for k in kinds if BYTES_PER_VECTOR[k] * size * 1.35 <= budget]
    return [[k] for k in fits], [k for k in kinds if k not in fits]


def run_size(size: int, kinds: list[str], args: argparse.Namespace) -> list[Row]:
    budget = int(min(args.max_rss_gib * GIB - rss_bytes(), available_bytes() - args.margin_gib * GIB)
                 - 2 * CHUNK * DIM * 8)  # room for one chunk being generated (float64 inside)
    passes, skipped = plan_passes(kinds, size, budget)
    rows = [Row(size, k, status=f"skipped: needs {BYTES_PER_VECTOR[k] * size / GIB:.1f} GiB (x1.35 "
                               f"while growing), budget {budget / GIB:.1f} GiB") for k in skipped]
    for row in rows:
        print_row(row)
    queries, true_subjects = make_queries(args.seed, size, args.queries)
    exact: tuple[np.ndarray, np.ndarray] | None = None
    for group in passes:
        built: dict[str, Any] = {}
        rss_before = rss_bytes()
        build_seconds = {k: 0.0 for k in group}
        for k in group:
            started = time.perf_counter()
            built[k] = make_index(k, args.seed)  # includes training for sq8 / pq
            build_seconds[k] += time.perf_counter() - started
        truth_scores = np.full((len(queries), args.k), -np.inf, np.float32)
        truth_ids = np.full((len(queries), args.k), -1, np.int64)
        for chunk in chunks(size):
            count = min(CHUNK, size - chunk * CHUNK)
            vectors = chunk_vectors(args.seed, chunk, count)
            ids = np.arange(chunk * CHUNK, chunk * CHUNK + count, dtype=np.int64)
            for k, index in built.items():
                started = time.perf_counter()
                index.add(ids, vectors)
                build_seconds[k] += time.perf_counter() - started
            if exact is None:  # exact top-k by streaming, once per size
                scores = queries @ vectors.T
                top = np.argsort(-scores, axis=1)[:, :args.k]
                truth_scores, truth_ids = merge_topk(truth_scores, truth_ids,
                                                     np.take_along_axis(scores, top, 1), ids[top], args.k)
        if exact is None:
            exact = (truth_scores, truth_ids)
        growth = rss_bytes() - rss_before
        for k, index in built.items():
            row = Row(size, k, build_s=build_seconds[k], codes_gib=index.memory_bytes() / GIB,
                      rss_growth_gib=growth / GIB)
            single = []
            index.search(queries[:1], args.k)  # warm-up
            for i in range(min(args.single, len(queries))):
                started = time.perf_counter()
                index.search(queries[i:i + 1], args.k)
                single.append(time.perf_counter() - started)
            started = time.perf_counter()
            found_scores, found = index.search(queries, args.k)
            row.batch_ms = (time.perf_counter() - started) * 1e3
            row.batch_per_query_ms = row.batch_ms / len(queries)
            row.single_ms = float(np.median(single)) * 1e3
            row.recall = float(np.mean([len(set(f) & set(t)) / args.k for f, t in zip(found.tolist(),
                                                                                   exact[1].tolist())]))
            # Identification cares about the best *subject*: does it match the exact search's?
            row.rank1 = float(np.mean(found[:, 0] // PER_SUBJECT == exact[1][:, 0] // PER_SUBJECT))
            row.score_error = float(np.mean(np.abs(found_scores[:, 0] - exact[0][:, 0])))
            row.correct = float(np.mean(found[:, 0] // PER_SUBJECT == true_subjects))
            rows.append(row)
            print_row(row)
        del index, vectors  # free this pass's data before the next pass measures its RSS growth
        built.clear()
    return rows


def print_header(args: argparse.Namespace) -> None:
    print(f"faiss {faiss.__version__}, 1 thread, dim {DIM} (C={C} x P={P}), k={args.k}, "
          f"{args.queries} queries per batch, single = median of {args.single}")
    print("| sequences | index | build s | index GiB (codes) | RSS growth GiB | 1 query ms | "
          f"batch of {args.queries} ms | per query in batch ms | recall@{args.k} | top-1 subject = exact | "
          "top-1 score error | top-1 subject correct |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)


def print_row(r: Row) -> None:
    if r.status != "ok":
        print(f"| {r.size:,} | {r.kind} | {r.status} | | | | | | | | | |", flush=True)
        return
    print(f"| {r.size:,} | {r.kind} | {r.build_s:.1f} | {r.codes_gib:.2f} | {r.rss_growth_gib:.2f} | "
          f"{r.single_ms:.1f} | {r.batch_ms:.0f} | {r.batch_per_query_ms:.1f} | {r.recall:.3f} | {r.rank1:.2f} | "
          f"{r.score_error:.1e} | {r.correct:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "fp16", "sq8", "pq"],
                        choices=sorted(BYTES_PER_VECTOR))
    parser.add_argument("--queries", type=int, default=32, help="queries in the batch (and for recall)")
    parser.add_argument("--single", type=int, default=10, help="single-query searches timed")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-rss-gib", type=float, default=12.0)
    parser.add_argument("--margin-gib", type=float, default=3.0, help="leave this much of MemAvailable free")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    print_header(args)
    for size in args.sizes:
        run_size(size, args.kinds, args)
    print(f"peak RSS of this process: {rss_bytes('VmHWM') / GIB:.2f} GiB")


if __name__ == "__main__":
    main()

"""Measure the gallery on its two index backends, FAISS and Milvus, within one run: enrollment
latency, search latency (one query at a time, top-5) and the time to rebuild the index from SQLite.

    python bench/gallery_milvus.py --sizes 1000 10000 [--milvus-uri http://localhost:19530]

Without --milvus-uri, Milvus is milvus-lite (embedded, pure Python, gRPC on localhost): it shows
what the backend's round trips and the rebuild cost, not what a Milvus server on its own machine
does. Embeddings are random (exact search costs the same whatever the vectors); the scores of both
backends are compared on every query. The load average is printed before and after: compare the
two backends' figures within one run, never across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from gallery import Gallery, SequenceInput

C, P = 256, 16
SEQUENCES_PER_SUBJECT = 10


def fill(g: Gallery, size: int, rng: np.random.Generator) -> None:
    silhouettes = np.zeros((1, 64, 44), np.uint8)
    for subject in range(size // SEQUENCES_PER_SUBJECT):
        embeddings = rng.standard_normal((SEQUENCES_PER_SUBJECT, C, P)).astype(np.float32)
        g.enroll(f"s{subject}", [SequenceInput(silhouettes, e) for e in embeddings], model_id="m")


def measure(backend: str, root: Path, size: int, queries: np.ndarray, milvus_uri: str | None) -> dict:
    options = {"backend": backend, "milvus_uri": milvus_uri}
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with Gallery(root, **options) as g:
        fill(g, size, rng)
    fill_s = time.perf_counter() - started
    with Gallery(root, **options) as g:
        enroll_ms = []
        for i in range(20):
            t = time.perf_counter()
            g.enroll(f"late{i}", [SequenceInput(np.zeros((1, 64, 44), np.uint8),
                                                rng.standard_normal((C, P)).astype(np.float32))], model_id="m")
            enroll_ms.append(1e3 * (time.perf_counter() - t))
        search_ms, answers = [], []
        for q in queries:
            t = time.perf_counter()
            answers.append(g.search(q, model_id="m", top_k=5)[0])
            search_ms.append(1e3 * (time.perf_counter() - t))
        vectors = g.status().index.vectors
    if backend == "faiss":
        shutil.rmtree(root / "index")
    else:  # an invalidated header: the next opening rebuilds the collection
        with Gallery(root, **options) as g:
            g._indexes.index_store.forget("default")
    t = time.perf_counter()
    with Gallery(root, **options) as g:
        assert g.status().index.loaded_from == "rebuilt"
        rebuild_s = time.perf_counter() - t
    return {"vectors": vectors, "fill_s": fill_s, "enroll_ms": float(np.median(enroll_ms)),
            "search_ms": float(np.median(search_ms)), "rebuild_s": rebuild_s, "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--milvus-uri", default=None, help="a Milvus server (default: milvus-lite in a temp folder)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    queries = np.random.default_rng(1).standard_normal((args.queries, C, P)).astype(np.float32)
    print("| backend | sequences | median enroll ms | median search ms/query | rebuild s | fill s |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        results = {}
        for backend in ("faiss", "milvus"):
            with tempfile.TemporaryDirectory() as tmp:
                results[backend] = r = measure(backend, Path(tmp) / "g", size, queries, args.milvus_uri)
            print(f"| {backend} | {r['vectors']} | {r['enroll_ms']:.1f} | {r['search_ms']:.2f} | "
                  f"{r['rebuild_s']:.1f} | {r['fill_s']:.1f} |", flush=True)
        same = all([c.subject_id for c in a.candidates] == [c.subject_id for c in b.candidates]
                   and np.allclose([c.score for c in a.candidates], [c.score for c in b.candidates], atol=1e-5)
                   for a, b in zip(results["faiss"]["answers"], results["milvus"]["answers"]))
        print(f"|  | top-5 subjects and scores identical on both backends for all {args.queries} queries: {same} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Benchmark galleries built from real CASIA-B embeddings of the shipped model, at any size.

Real walks. Every CASIA-B sequence in data/casia-b (74 subjects x 10 conditions x 11 views) is cut
into WINDOWS sub-windows of WINDOW_FRAMES frames (start, middle, end of the walk: three shorter
walks, as a camera sees a person for a second or two) and embedded with
models/deepgaitv2-sil-casiab.onnx on ONNX Runtime (one thread). The embeddings are cached per
subject under --cache (default /work/analysis/gallery_search; ~25 min on one core the first time).

Reaching 100k-10M sequences. 74 people give ~24k real walks; a large gallery needs many more
identities. A synthetic identity is a *part chimera*: for each of the model's P = 16 horizontal
body parts it takes a real subject (identity i, part p -> subject s[i, p]); its walk under
(condition, view, window) is, part by part, the real embedding of subject s[i, p] in that
condition, view and window. So every part vector of every sequence is a real part vector of a
real walk, and since part-cosine is the mean of per-part cosines, every similarity in the gallery
is a mean of real part-to-part similarities: genuine pairs (same identity, another walk) score
like real genuine pairs, strangers like real strangers, and identities sharing a few part sources
are the near-miss impostors a large population has. Random vectors would compress unlike real
ones (their spectrum is flat; real embeddings concentrate in a few hundred directions), which is
the point of measuring on these. 74^16 identities are possible; sources are drawn uniformly.

Each identity enrols PER_IDENTITY walks (random distinct (condition, view, window) cells); a query
is a walk of an identity that was not enrolled for it (a fresh walk), or of an identity never
enrolled (a stranger). Everything is a deterministic function of (seed, index), so a gallery of
any size is streamed in chunks and never held whole.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaitid.contract import search_vectors

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "casia-b"
DEFAULT_MODEL = REPO / "models" / "deepgaitv2-sil-casiab.onnx"
DEFAULT_CACHE = Path("/work/analysis/gallery_search")
WINDOWS = 3
WINDOW_FRAMES = 30
CONDITIONS = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
VIEWS = tuple(f"{v:03d}" for v in range(0, 181, 18))
CELLS = len(CONDITIONS) * len(VIEWS) * WINDOWS  # walks per subject (some missing in CASIA-B)
PER_IDENTITY = 10


def window_starts(frames: int) -> list[int]:
    """WINDOWS starts spread over the walk (a shorter walk is used whole, once per window)."""
    if frames <= WINDOW_FRAMES:
        return [0] * WINDOWS
    return [round(i * (frames - WINDOW_FRAMES) / (WINDOWS - 1)) for i in range(WINDOWS)]


def subject_files(cache: Path) -> list[Path]:
    """The per-subject embedding files embed_casiab writes under `cache` (NNN.npz), sorted: never a
    leftover temporary file (NNN.tmp.npz) nor another cache file beside them (truth-*.npz)."""
    return sorted(cache.glob("[0-9][0-9][0-9].npz"))


def embed_casiab(data: Path, model: Path, cache: Path) -> None:
    """Embed every sub-window of every sequence, one cache file per subject (resumable)."""
    from gaitid.contract import ModelInput
    from model.dataset import list_sequences, load_sequence, trim_to_network_width
    from service.pipeline.embed import OnnxEmbedder

    cache.mkdir(parents=True, exist_ok=True)
    embedder = OnnxEmbedder(model, providers="cpu", threads=1, max_batch_frames=16 * WINDOW_FRAMES)  # bounded memory
    by_subject: dict[str, list] = {}
    for info in list_sequences(data):
        by_subject.setdefault(info.subject, []).append(info)
    for subject, infos in sorted(by_subject.items()):
        target = cache / f"{subject}.npz"
        if target.exists():
            continue
        started = time.perf_counter()
        cells, inputs = [], []
        for info in infos:
            if info.condition not in CONDITIONS or info.view not in VIEWS:
                continue
            sils = trim_to_network_width(load_sequence(info.path))
            if len(sils) == 0:
                continue
            for w, start in enumerate(window_starts(len(sils))):
                inputs.append(ModelInput(np.ascontiguousarray(sils[start:start + WINDOW_FRAMES])))
                cells.append((CONDITIONS.index(info.condition), VIEWS.index(info.view), w))
        embeddings = embedder.embed(inputs)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, embeddings=embeddings, cells=np.array(cells, np.int16), model_id=embedder.model_id)
        os.replace(tmp, target)
        print(f"{subject}: {len(inputs)} walks in {time.perf_counter() - started:.0f} s", flush=True)


@dataclass
class RealWalks:
    """The cached real embeddings as search vectors, laid out (subject, cell) -> row."""

    vectors: np.ndarray  # (rows, P*C) float32 search vectors (part-major, see gaitid.contract)
    table: np.ndarray  # (subjects, CELLS) int32 row of each (subject, cell), -1 where CASIA-B lacks it
    subjects: list[str]
    model_id: str
    parts: int

    @classmethod
    def load(cls, cache: Path = DEFAULT_CACHE) -> RealWalks:
        files = subject_files(cache)
        if not files:
            raise SystemExit(f"no cached embeddings in {cache}: run `python bench/gallery_data.py` first")
        vectors, subjects, model_ids = [], [], set()
        table = np.full((len(files), CELLS), -1, np.int32)
        rows = 0
        for s, path in enumerate(files):
            with np.load(path) as z:
                embeddings, cells = z["embeddings"], z["cells"].astype(np.int64)
                model_ids.add(str(z["model_id"]))
            flat_cells = (cells[:, 0] * len(VIEWS) + cells[:, 1]) * WINDOWS + cells[:, 2]
            table[s, flat_cells] = rows + np.arange(len(cells))
            vectors.append(search_vectors(embeddings))
            subjects.append(path.stem)
            rows += len(cells)
        if len(model_ids) != 1:
            raise SystemExit(f"cache {cache} mixes models {sorted(model_ids)}")
        return cls(np.concatenate(vectors), table, subjects, model_ids.pop(), embeddings.shape[2])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


class ChimeraGallery:
    """Identities = per-part choices of real subjects; walks = shared (condition, view, window) cells.

    Sequence id n belongs to identity n // PER_IDENTITY. Every cell used is one that all the
    identity's part sources have (CASIA-B misses a few sequences).
    """

    def __init__(self, walks: RealWalks, seed: int = 0):
        self.walks = walks
        self.seed = seed
        self.part_dim = walks.dim // walks.parts

    def sources(self, identities: np.ndarray) -> np.ndarray:
        """(n, P) source subject of each part of each identity."""
        out = np.empty((len(identities), self.walks.parts), np.int64)
        for i, identity in enumerate(identities.tolist()):
            rng = np.random.default_rng([self.seed, 1, identity])
            out[i] = rng.integers(0, len(self.walks.subjects), self.walks.parts)
        return out

    def cells(self, identities: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """(n, PER_IDENTITY + 1) distinct cells every source has: the enrolled walks, then a fresh one
        kept for queries."""
        available = (self.walks.table[sources] >= 0).all(axis=1)  # (n, CELLS)
        out = np.empty((len(identities), PER_IDENTITY + 1), np.int64)
        for i, identity in enumerate(identities.tolist()):
            rng = np.random.default_rng([self.seed, 2, identity])
            out[i] = rng.choice(np.flatnonzero(available[i]), PER_IDENTITY + 1, replace=False)
        return out

    def walk_vectors(self, sources: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """(n, P) sources and (n,) cells -> (n, P*C) search vectors, unit norm like the real ones."""
        rows = self.walks.table[sources, cells[:, None]]  # (n, P)
        parts = self.walks.vectors.reshape(len(self.walks.vectors), self.walks.parts, self.part_dim)
        return np.ascontiguousarray(parts[rows, np.arange(self.walks.parts)].reshape(len(rows), -1))

    def sequences(self, start: int, stop: int) -> np.ndarray:
        """Search vectors of sequence ids [start, stop)."""
        ids = np.arange(start, stop)
        identities = np.unique(ids // PER_IDENTITY)
        sources = self.sources(identities)
        cells = self.cells(identities, sources)
        position = ids // PER_IDENTITY - identities[0]
        return self.walk_vectors(sources[position], cells[position, ids % PER_IDENTITY])

    def fresh_walks(self, identities: np.ndarray) -> np.ndarray:
        """A walk of each identity that is not among its enrolled ones."""
        sources = self.sources(identities)
        return self.walk_vectors(sources, self.cells(identities, sources)[:, PER_IDENTITY])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    embed_casiab(args.data, args.model, args.cache)


if __name__ == "__main__":
    main()

"""Sightings on a re-scored archive of real walks: the compact index against exhaustive search.

    python bench/sightings.py [--cache /work/analysis/gallery_search] [--subjects 0] [--queries 40]

The archive is a re-scoring state (service.rescore.store) whose tracks are real CASIA-B walks:
the shipped model's embeddings of 30-frame sub-windows cached by bench/gallery_data.py (one file
per subject; run that first). Each subject's nm-01/nm-02 walks are held out as the walks it
enrols; every other walk is an archive track (100 tracks per video, one camera per video).
For `--queries` subjects, the sightings at the model's threshold are found twice: by
service.rescore.sightings (compact index: shortlists, exact re-ranking from the state) and by
exhaustive search over every track (the contract's search vectors of all tracks held in memory,
one matrix product). Printed: tracks, the index's
bytes per track in memory and its measured margin, build (first load) and reload times, ms per
query both ways, shortlisted tracks per walk, and recall (sightings the compact search found of
those exhaustive search found; 1.0 = identical answers).

Times depend on the machine and its load (printed): compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python bench/sightings.py` from anywhere: bench.* imports

from bench.gallery_data import subject_files
from gaitid.contract import read_metadata, search_vectors
from service.rescore.archive import FileStat
from service.rescore.extract import FileOutcome, TrackOutcome
from service.rescore.sightings import (
    ArchiveTracks,
    SubjectWalks,
    find_sightings,
    sightings_index_path,
)
from service.rescore.sources import SourceFacts
from service.rescore.store import RescoreState

ENROLLED_CONDITIONS = (0, 1)  # nm-01, nm-02 (bench/gallery_data.CONDITIONS order)
TRACKS_PER_VIDEO = 100


def load_walks(cache: Path, limit: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Per subject: (its walk embeddings (n, C, P), their cells (n, 3)), and the model id."""
    embeddings, cells, model_id = [], [], ""
    for path in subject_files(cache)[: limit or None]:
        with np.load(path) as z:
            embeddings.append(z["embeddings"].astype(np.float32))
            cells.append(z["cells"].astype(np.int64))
            model_id = str(z["model_id"])
    return embeddings, cells, model_id


def build_state(path: Path, embeddings, cells, model_id: str) -> list[int]:
    """Write the archive; returns each track's subject, in track order."""
    owners, archive = [], []
    for subject, (walks, where) in enumerate(zip(embeddings, cells)):
        for walk in np.flatnonzero(~np.isin(where[:, 0], ENROLLED_CONDITIONS)):
            archive.append(walks[walk])
            owners.append(subject)
    order = np.random.default_rng(0).permutation(len(archive))  # videos mix people
    start = datetime(2024, 1, 1)
    with RescoreState(path) as state:
        sources = []
        for video, first in enumerate(range(0, len(order), TRACKS_PER_VIDEO)):
            picked = order[first:first + TRACKS_PER_VIDEO]
            sha = f"{video:064x}"
            tracks = [TrackOutcome(i, np.arange(30, dtype=np.int64), np.zeros((30, 4), np.float32), archive[j], b"")
                      for i, j in enumerate(picked)]
            state.save(FileOutcome(path=f"/archive/{video}.avi", model_id=model_id, status="done", sha256=sha,
                                   stat=FileStat(1, 1), tracks=tracks, fps=25.0, frame_count=30, size=(320, 240)))
            sources.append(SourceFacts(f"/archive/cam{video % 8}/{video}.avi", sha, f"cam{video % 8}",
                                       start + timedelta(minutes=video), "path"))
        state.replace_sources(sources)
    return [owners[j] for j in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/work/analysis/gallery_search"))
    parser.add_argument("--subjects", type=int, default=0, help="subjects read from the cache (0: all)")
    parser.add_argument("--queries", type=int, default=40, help="subjects whose sightings are searched")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "deepgaitv2-sil-casiab.onnx")
    args = parser.parse_args()
    threshold = read_metadata(args.model).open_set_threshold or 0.5
    embeddings, cells, model_id = load_walks(args.cache, args.subjects)
    if not embeddings:
        raise SystemExit(f"no cached embeddings in {args.cache}: run bench/gallery_data.py first")
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "archive.state.sqlite"
        started = time.perf_counter()
        build_state(path, embeddings, cells, model_id)
        write_s = time.perf_counter() - started
        with RescoreState(path) as state:
            started = time.perf_counter()
            archive = ArchiveTracks.load(state, model_id)
            build_s = time.perf_counter() - started
            started = time.perf_counter()
            archive = ArchiveTracks.load(state, model_id)
            reload_s = time.perf_counter() - started
            index = archive.search.index
            rows = np.array(sorted({t.row for t in archive.tracks}), np.int64)
            found_rows, all_embeddings = state.embeddings_by_rowid(rows, model_id)
            all_vectors = search_vectors(all_embeddings)  # exhaustive search holds every vector in memory
            del all_embeddings
            video_of = {t.row: (t.video, t.track_id) for t in archive.tracks}
            compact_ms, exhaustive_ms, recalls, expected_counts, shortlisted = [], [], [], [], []
            for subject in range(min(args.queries, len(embeddings))):
                enrolled = np.flatnonzero(np.isin(cells[subject][:, 0], ENROLLED_CONDITIONS))
                walks = SubjectWalks(str(subject), "", model_id, enrolled, embeddings[subject][enrolled])
                started = time.perf_counter()
                found = find_sightings(archive, walks, threshold=threshold, limit=10_000)
                compact_ms.append(1000 * (time.perf_counter() - started))
                started = time.perf_counter()
                best = (all_vectors @ search_vectors(walks.embeddings).T).max(axis=1)
                expected = {video_of[int(r)] for r in found_rows[best >= threshold]}
                exhaustive_ms.append(1000 * (time.perf_counter() - started))
                got = {(s.track.video, s.track.track_id) for s in found}
                recalls.append(len(got & expected) / len(expected) if expected else float(not got))
                expected_counts.append(len(expected))
                shortlisted.append(np.mean([len(archive.search._shortlist(q, threshold - archive.search.margin))
                                            for q in search_vectors(walks.embeddings)]))
        state_bytes = path.stat().st_size
        index_bytes = sightings_index_path(state, model_id).stat().st_size
    print(f"load average {os.getloadavg()[0]:.2f}; model {model_id}, threshold {threshold:.4f}")
    print(f"archive: {len(rows)} tracks ({len(embeddings)} subjects' walks), written in {write_s:.1f} s; state "
          f"{state_bytes / len(rows):.0f} bytes/track on disk (no thumbnails here), index file "
          f"{index_bytes / len(rows):.0f} bytes/track")
    print(f"index: trained {index.trained}, {index.memory_bytes() / len(rows):.0f} bytes/track in memory, margin "
          f"{archive.search.margin:.3f}; first load (build) {build_s:.1f} s, reload {reload_s:.2f} s")
    print(f"{len(recalls)} subjects, {np.mean(expected_counts):.1f} sightings each (exhaustive), "
          f"{np.mean(shortlisted):.0f} tracks shortlisted per walk")
    print(f"ms/query: compact {np.median(compact_ms):.1f}, exhaustive (all vectors in memory) "
          f"{np.median(exhaustive_ms):.1f}; recall mean {np.mean(recalls):.4f}, min {np.min(recalls):.3f}, "
          f"identical answers {np.mean(np.array(recalls) == 1.0):.3f}")


if __name__ == "__main__":
    main()

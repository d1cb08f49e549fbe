"""Distances between embeddings, rank-k hits and re-identification scores.

Two metrics, both on OpenGait's (n, C, P) layout (C channels per horizontal part, P parts):

- ``cosine``: 1 - the contract's similarity ("part-cosine", the mean over parts of each part's cosine),
  computed by `gaitid.contract.similarities`, the very function behind the gallery's search, so the
  numbers are what the service would rank by.
- ``euclidean``: the mean over parts of the per-part Euclidean distance, OpenGait's default (`cuda_dist`)
  and the metric the papers report: for comparing with published numbers, not what the service uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gaitid.contract import ContractError, similarities
from model.evaluation.errors import EvaluationError
from model.evaluation.results import ReIdScores

METRICS = ("euclidean", "cosine")

_DISTANCE_CHUNK_BYTES = 64 * 2**20  # bound on the (parts, rows, gallery) product kept in memory at once


def metrics_named(metric: str) -> tuple[str, ...]:
    """'euclidean', 'cosine' or 'both' -> the metrics to compute."""
    if metric == "both":
        return METRICS
    if metric not in METRICS:
        raise EvaluationError(f"unknown metric {metric!r}: use euclidean, cosine or both")
    return (metric,)


def as_embeddings(array: np.ndarray, name: str) -> np.ndarray:
    """(n, C, P) embeddings as a float array; (n, D) inputs are a single part."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise EvaluationError(f"{name} embeddings must be (n, C, P) or (n, D), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return array


def pairwise_distance(
    probe: np.ndarray, gallery: np.ndarray, metric: str = "euclidean", chunk_bytes: int = _DISTANCE_CHUNK_BYTES
) -> np.ndarray:
    """(n, m) distances between (n, C, P) probe and (m, C, P) gallery embeddings; smaller = closer.

    cosine: 1 - gaitid.contract.similarities (float32, as the gallery computes it).
    euclidean: one matrix product per part, in row chunks so memory stays near `chunk_bytes`; float32
    unless an input is float64.
    """
    if metric not in METRICS:
        raise EvaluationError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    probe, gallery = as_embeddings(probe, "probe"), as_embeddings(gallery, "gallery")
    if probe.shape[1:] != gallery.shape[1:]:
        raise EvaluationError(f"probe (C, P) = {probe.shape[1:]} differs from gallery (C, P) = {gallery.shape[1:]}")
    if metric == "cosine":
        if len(probe) == 0 or len(gallery) == 0:
            return np.empty((len(probe), len(gallery)), dtype=np.float32)
        try:
            return 1.0 - similarities(probe, gallery)
        except ContractError as exc:  # NaN / infinite embeddings
            raise EvaluationError(str(exc)) from exc
    return _euclidean(probe, gallery, chunk_bytes)


def _euclidean(probe: np.ndarray, gallery: np.ndarray, chunk_bytes: int) -> np.ndarray:
    dtype = np.result_type(probe.dtype, gallery.dtype, np.float32)
    n, m, parts = probe.shape[0], gallery.shape[0], probe.shape[2]
    out = np.empty((n, m), dtype=dtype)
    if n == 0 or m == 0:
        return out
    # (P, n, C): each part becomes one matrix, so a batched matmul gives all per-part dot products.
    x = np.ascontiguousarray(probe.transpose(2, 0, 1), dtype=dtype)
    y = np.ascontiguousarray(gallery.transpose(2, 0, 1), dtype=dtype)
    x_sq = np.einsum("pnc,pnc->pn", x, x)
    y_sq = np.einsum("pmc,pmc->pm", y, y)
    y_t = y.transpose(0, 2, 1)
    rows = max(1, chunk_bytes // (dtype.itemsize * parts * m))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dots = np.matmul(x[:, start:stop], y_t)  # (P, rows, m)
        # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, in place; clipped at 0 against rounding before the sqrt.
        dots *= -2.0
        dots += x_sq[:, start:stop, None]
        dots += y_sq[:, None, :]
        np.maximum(dots, 0.0, out=dots)
        np.sqrt(dots, out=dots)
        out[start:stop] = dots.mean(axis=0)
    return out


def rank_hits(
    dist: np.ndarray, probe_subjects: np.ndarray, gallery_subjects: np.ndarray, ranks: Sequence[int]
) -> dict[int, np.ndarray]:
    """For each k in ranks: per probe, is a same-subject sequence among the k nearest gallery ones."""
    depth = min(max(ranks), dist.shape[1])
    if depth < dist.shape[1]:
        nearest = np.argpartition(dist, depth - 1, axis=1)[:, :depth]
    else:
        nearest = np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    order = np.argsort(np.take_along_axis(dist, nearest, axis=1), axis=1, kind="stable")
    nearest = np.take_along_axis(nearest, order, axis=1)
    matches = gallery_subjects[nearest] == probe_subjects[:, None]
    return {k: matches[:, :k].any(axis=1) for k in ranks}


def reid_scores(
    x: np.ndarray, subjects: np.ndarray, views: np.ndarray, probe_idx: np.ndarray, gallery_idx: np.ndarray,
    metric: str, chunk: int = 1024,
) -> ReIdScores:
    """Every probe against the whole gallery, same-subject same-view gallery entries removed (CCPG):
    rank-1, mAP and mINP (%) over the probes whose subject is still in the gallery."""
    g_subjects, g_views = subjects[gallery_idx], views[gallery_idx]
    rank1, aps, inps = [], [], []
    for start in range(0, len(probe_idx), chunk):
        probes = probe_idx[start:start + chunk]
        order = np.argsort(pairwise_distance(x[probes], x[gallery_idx], metric), axis=1, kind="stable")
        same_subject = g_subjects[order] == subjects[probes][:, None]
        removed = same_subject & (g_views[order] == views[probes][:, None])
        for matches, drop in zip(same_subject, removed):
            matches = matches[~drop]
            positions = np.flatnonzero(matches)  # 0-based ranks of the correct gallery entries
            if len(positions) == 0:
                continue  # the subject is not in what is left of the gallery: not scorable
            rank1.append(bool(matches[0]))
            aps.append(float(np.mean(np.arange(1, len(positions) + 1) / (positions + 1))))
            inps.append(len(positions) / (positions[-1] + 1))
    if not rank1:
        return ReIdScores(float("nan"), float("nan"), float("nan"), 0)
    return ReIdScores(100 * float(np.mean(rank1)), 100 * float(np.mean(aps)), 100 * float(np.mean(inps)), len(rank1))

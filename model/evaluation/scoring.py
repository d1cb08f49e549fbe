"""Scoring labelled embeddings with a protocol: per probe set and metric, the rank-k table over
(probe view, gallery view) pairs, and CCPG's re-identification scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.dataset import SequenceInfo
from model.evaluation.errors import EvaluationError
from model.evaluation.metrics import as_embeddings, metrics_named, pairwise_distance, rank_hits, reid_scores
from model.evaluation.protocols import ProbeSet, ProtocolSpec, get_protocol
from model.evaluation.results import ConditionResult, EvaluationResult, MetricResult

Label = SequenceInfo | tuple[str, str, str]


def _label_arrays(labels: Sequence[Label], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(labels) != n:
        raise EvaluationError(f"{n} embeddings but {len(labels)} labels")
    triples = [(x.subject, x.condition, x.view) if isinstance(x, SequenceInfo) else tuple(x) for x in labels]
    if any(len(t) != 3 for t in triples):
        raise EvaluationError("labels must be SequenceInfo or (subject, condition, view) triples")
    subjects, conditions, views = (np.array([str(t[i]) for t in triples], dtype=object) for i in range(3))
    return subjects, conditions, views


def evaluate_embeddings(
    embeddings: np.ndarray, labels: Sequence[Label], protocol: str = "casia-b", metric: str = "euclidean"
) -> EvaluationResult:
    """Score (n, C, P) embeddings of labelled sequences with a protocol.

    labels: `SequenceInfo`s or (subject, condition, view) triples, one per embedding. metric:
    euclidean, cosine or both (model/evaluation/metrics.py). Sequences the protocol does not use are
    ignored.
    """
    spec = get_protocol(protocol)
    metrics = metrics_named(metric)
    x = as_embeddings(embeddings, "dataset")
    subjects, conditions, raw_views = _label_arrays(labels, len(x))
    views = np.array([spec.view_of(v) for v in raw_views], dtype=object)
    used = np.array([spec.uses(c) for c in conditions], dtype=bool)
    if not used.any():
        found = ", ".join(sorted(set(conditions))[:8]) or "none"
        raise EvaluationError(
            f"no sequence follows the {spec.name} conditions ({spec.conditions_hint}); found: {found}")
    view_list = sorted(set(views[used]))
    by_metric = {
        m: MetricResult(m, [_evaluate_probe_set(x, subjects, conditions, views, view_list, s, spec, m)
                            for s in spec.probe_sets])
        for m in metrics
    }
    return EvaluationResult(spec.name, spec.ranks, by_metric, int(used.sum()), len(set(subjects[used])))


def _evaluate_probe_set(
    x: np.ndarray, subjects: np.ndarray, conditions: np.ndarray, views: np.ndarray, view_list: list[str],
    probe_set: ProbeSet, spec: ProtocolSpec, metric: str,
) -> ConditionResult:
    probe_idx = np.flatnonzero([probe_set.is_probe(c) for c in conditions])
    gallery_idx = np.flatnonzero([probe_set.is_gallery(c) for c in conditions])
    accuracy = {k: np.full((len(view_list), len(view_list)), np.nan) for k in spec.ranks}
    gallery_views = views[gallery_idx]
    for row, probe_view in enumerate(view_list):
        probes = probe_idx[views[probe_idx] == probe_view]
        if len(probes) == 0 or len(gallery_idx) == 0:
            continue
        dist = pairwise_distance(x[probes], x[gallery_idx], metric)  # once per probe view, sliced per gallery view
        for col, gallery_view in enumerate(view_list):
            columns = np.flatnonzero(gallery_views == gallery_view)
            if len(columns) == 0:
                continue
            hits = rank_hits(dist[:, columns], subjects[probes], subjects[gallery_idx[columns]], spec.ranks)
            for k, hit in hits.items():
                accuracy[k][row, col] = 100.0 * hit.mean()
    reid = None
    if spec.reid and len(probe_idx) and len(gallery_idx):
        reid = reid_scores(x, subjects, views, probe_idx, gallery_idx, metric)
    return ConditionResult(probe_set.name, probe_set.probe_description, probe_set.gallery_description,
                           list(view_list), accuracy, len(probe_idx), len(gallery_idx), reid)

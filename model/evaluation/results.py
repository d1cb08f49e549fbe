"""Evaluation results: rank-k tables per probe set and metric, their means, summary and JSON form.

For every probe set and every (probe view, gallery view) pair, rank-k accuracy (%) is the share of
probes of that view whose nearest gallery sequence(s) of that gallery view belong to the same subject.
The headline number excludes identical views: per probe view, the mean over the other gallery views;
then the mean over probe views. The variant including identical views averages over all gallery views.
Cells without probes or without gallery sequences are NaN and are left out of the means (OpenGait would
fail or report NaN there); OpenGait also rounds each cell to 0.01 before averaging, which we do not, so
means can differ from its log by < 0.005.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _quiet_nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """nanmean that answers NaN for all-NaN slices without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def json_number(value: float | None) -> float | None:
    """A finite number rounded for reports, None for NaN / infinity / None."""
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


@dataclass
class ReIdScores:
    """Re-identification scores (%) over all views, same-subject same-view gallery entries removed."""

    rank1: float
    mean_ap: float
    mean_inp: float
    valid_probes: int  # probes whose subject is still in the gallery after the removal

    def to_dict(self) -> dict[str, Any]:
        return {"rank1": json_number(self.rank1), "mAP": json_number(self.mean_ap),
                "mINP": json_number(self.mean_inp), "valid_probes": self.valid_probes}


@dataclass
class ConditionResult:
    """One probe set under one metric: rank-k accuracy (%) per (probe view, gallery view) pair."""

    name: str
    probe_description: str
    gallery_description: str
    views: list[str]  # rows (probe views) and columns (gallery views) of every table
    accuracy: dict[int, np.ndarray]  # k -> (V, V); NaN where the pair has no probe or no gallery
    num_probes: int
    num_gallery: int
    reid: ReIdScores | None = None

    def per_probe_view(self, rank: int = 1, exclude_identical: bool = True) -> np.ndarray:
        """(V,) mean accuracy per probe view over gallery views (the identical one left out or not)."""
        table = self.accuracy[rank].copy()
        if exclude_identical:
            np.fill_diagonal(table, np.nan)
        return np.asarray(_quiet_nanmean(table, axis=1), dtype=np.float64)

    def mean(self, rank: int = 1, exclude_identical: bool = True) -> float:
        return float(_quiet_nanmean(self.per_probe_view(rank, exclude_identical)))

    def to_dict(self) -> dict[str, Any]:
        ranks = {}
        for k, table in self.accuracy.items():
            ranks[f"rank{k}"] = {
                "mean_excluding_identical_view": json_number(self.mean(k, True)),
                "mean_including_identical_view": json_number(self.mean(k, False)),
                "per_probe_view_excluding_identical": [json_number(v) for v in self.per_probe_view(k, True)],
                "per_probe_view_including_identical": [json_number(v) for v in self.per_probe_view(k, False)],
                "table": [[json_number(v) for v in row] for row in table],
            }
        return {"name": self.name, "probe": self.probe_description, "gallery": self.gallery_description,
                "num_probes": self.num_probes, "num_gallery": self.num_gallery, "views": self.views,
                **ranks, "reid": self.reid.to_dict() if self.reid else None}


@dataclass
class MetricResult:
    metric: str
    conditions: list[ConditionResult]

    def condition(self, name: str) -> ConditionResult:
        for result in self.conditions:
            if result.name == name:
                return result
        raise KeyError(name)


@dataclass
class EvaluationResult:
    protocol: str
    ranks: tuple[int, ...]
    by_metric: dict[str, MetricResult]  # "euclidean" / "cosine" -> results
    num_sequences: int
    num_subjects: int
    info: dict[str, Any] = field(default_factory=dict)  # model, data, timings (filled by run_evaluation)

    def __getitem__(self, metric: str) -> MetricResult:
        return self.by_metric[metric]

    def summary(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """metric -> condition -> headline numbers (%, None when not measurable); JSON-ready."""
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for metric, result in self.by_metric.items():
            out[metric] = {}
            for cond in result.conditions:
                row: dict[str, float | None] = {}
                for k in self.ranks:
                    row[f"rank{k}"] = json_number(cond.mean(k, True))
                    row[f"rank{k}_incl_identical"] = json_number(cond.mean(k, False))
                if cond.reid:
                    row["reid_rank1"] = json_number(cond.reid.rank1)
                    row["reid_mAP"] = json_number(cond.reid.mean_ap)
                out[metric][cond.name] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "ranks": list(self.ranks), "num_sequences": self.num_sequences,
                "num_subjects": self.num_subjects, "info": self.info, "summary": self.summary(),
                "metrics": {m: [c.to_dict() for c in r.conditions] for m, r in self.by_metric.items()}}

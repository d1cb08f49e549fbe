"""`gaitid eval`: gait-recognition accuracy with the CASIA-B, CCPG and SUSTech1K protocols.

The protocol definitions follow OpenGait's evaluator (opengait/evaluation/evaluator.py); the code
here is our own. Embeddings are in OpenGait's layout (n, C, P): C channels per part, P horizontal
parts. Distances are per part, then averaged over parts (OpenGait's `cuda_dist`).

Labels are (subject, condition, view) triples, as `model.dataset.list_sequences` reads them from an
OpenGait-layout tree ROOT/subject/condition/view/*.pkl. Supported conventions:

CASIA-B (``casia-b``)
    condition ``nm-01``..``nm-06``, ``bg-01``, ``bg-02``, ``cl-01``, ``cl-02``; views ``000``..``180``.
    Gallery nm-01..04 for every probe set; probes NM = nm-05/06, BG = bg-01/02, CL = cl-01/02.

CCPG (``ccpg``)
    condition = the outfit code ``U<upper>_D<lower>`` with ``_BG`` when a bag is carried
    (``U0_D0``, ``U0_D0_BG``, ``U1_D1``, ``U2_D2``, ``U3_D3``, ``U0_D3``, ``U1_D0``); view = the camera,
    everything after the first ``_`` of the view folder name is ignored (``01_2`` -> ``01``), as
    OpenGait does. Four probe/gallery pairs, each with its own gallery:
    CL: probe U0_D0_BG + U0_D0, gallery U1_D1 + U2_D2 + U3_D3 (all clothes changed);
    UP: probe U3_D3, gallery U0_D3 (upper garment changed);
    DN: probe U1_D0, gallery U1_D1 (lower garment changed);
    BG: probe U0_D0_BG, gallery U0_D0 (bag only).
    Besides the per-view rank-1 tables, CCPG is also scored person-re-identification style: every
    probe against the whole gallery of its pair, with the gallery sequences of the same subject and
    the same view removed; rank-1, mAP and mINP over the probes whose subject is still in it.

SUSTech1K (``sustech1k``)
    condition = ``<sequence number>-<attribute>[-<attribute>...]``, e.g. ``00-nm``, ``01-bg``,
    ``02-cl-ub``; attributes nm (normal), bg (bag), cl (clothing), cr (carrying), ub (umbrella),
    uf (uniform), oc (occlusion), nt (night); views ``000``, ``045``, ...
    Gallery: ``00-nm``. Probe sets: Normal = sequence 01 with ``nm``; Bag, Clothing, Carrying,
    Umbrella, Uniform, Occlusion, Night = every sequence carrying that attribute (a sequence with two
    attributes counts in both); Overall = every sequence numbered 01..04. Rank-1 and rank-5.
    (SUSTech1K folders hold several pkl files; point the evaluator at a tree whose first pkl per
    folder is the silhouette sequence.)

For every probe set and every (probe view, gallery view) pair the evaluator computes rank-k accuracy
(%): the share of probes of that view whose nearest gallery sequence(s) of that gallery view belong to
the same subject. The headline number excludes identical views: per probe view, the mean over the
other gallery views; then the mean over probe views. The variant including identical views averages
over all gallery views. Cells without probes or without gallery sequences are NaN and are left out of
the means (OpenGait would fail or report NaN there); OpenGait also rounds each cell to 0.01 before
averaging, which we do not, so means can differ from its log by < 0.005.

Nothing here imports torch at module level: ONNX evaluation runs in the service image. The torch
checkpoint path imports it when used.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm import tqdm

from model.dataset import (
    SequenceInfo,
    list_sequences,
    load_sequence,
    parse_subject_range,
    trim_to_network_width,
)

if TYPE_CHECKING:
    from service.pipeline.embed import GaitEmbedder

METRICS = ("euclidean", "cosine")
PROTOCOLS = ("casia-b", "ccpg", "sustech1k")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
NETWORK_HEIGHT, NETWORK_WIDTH = 64, 44

_COSINE_EPS = 1e-12  # as torch.nn.functional.normalize: an all-zero part has cosine 0 to everything
_DISTANCE_CHUNK_BYTES = 64 * 2**20  # bound on the (parts, rows, gallery) product kept in memory at once


class EvaluationError(ValueError):
    """Input the evaluator cannot work with; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------------


def _as_embeddings(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:  # (n, D): a single part
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

    euclidean: mean over parts of the per-part Euclidean distance (OpenGait's default).
    cosine: 1 - mean over parts of the per-part cosine similarity.
    Computed as one matrix product per part, in row chunks so memory stays near `chunk_bytes`.
    Float32 unless an input is float64. (n, D) inputs are treated as a single part.
    """
    if metric not in METRICS:
        raise EvaluationError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    probe, gallery = _as_embeddings(probe, "probe"), _as_embeddings(gallery, "gallery")
    if probe.shape[1:] != gallery.shape[1:]:
        raise EvaluationError(f"probe (C, P) = {probe.shape[1:]} differs from gallery (C, P) = {gallery.shape[1:]}")
    dtype = np.result_type(probe.dtype, gallery.dtype, np.float32)
    n, m, parts = probe.shape[0], gallery.shape[0], probe.shape[2]
    out = np.empty((n, m), dtype=dtype)
    if n == 0 or m == 0:
        return out
    # (P, n, C): each part becomes one matrix, so a batched matmul gives all per-part dot products.
    x = np.ascontiguousarray(probe.transpose(2, 0, 1), dtype=dtype)
    y = np.ascontiguousarray(gallery.transpose(2, 0, 1), dtype=dtype)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=2, keepdims=True), _COSINE_EPS)
        y = y / np.maximum(np.linalg.norm(y, axis=2, keepdims=True), _COSINE_EPS)
    else:
        x_sq = np.einsum("pnc,pnc->pn", x, x)
        y_sq = np.einsum("pmc,pmc->pm", y, y)
    y_t = y.transpose(0, 2, 1)
    rows = max(1, chunk_bytes // (dtype.itemsize * parts * m))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dots = np.matmul(x[:, start:stop], y_t)  # (P, rows, m)
        if metric == "cosine":
            out[start:stop] = 1.0 - dots.mean(axis=0)
            continue
        # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, in place; clipped at 0 against rounding before the sqrt.
        dots *= -2.0
        dots += x_sq[:, start:stop, None]
        dots += y_sq[:, None, :]
        np.maximum(dots, 0.0, out=dots)
        np.sqrt(dots, out=dots)
        out[start:stop] = dots.mean(axis=0)
    return out


def _rank_hits(
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


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSet:
    """One probe/gallery pairing of a protocol (a row of its result table)."""

    name: str
    is_probe: Callable[[str], bool]  # condition -> is this sequence a probe of the set
    is_gallery: Callable[[str], bool]  # condition -> is it in the set's gallery
    probe_description: str
    gallery_description: str


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    probe_sets: tuple[ProbeSet, ...]
    ranks: tuple[int, ...] = (1,)
    reid: bool = False  # also score re-identification style over all views (CCPG)
    view_of: Callable[[str], str] = str  # view folder name -> the view it stands for
    conditions_hint: str = ""

    def uses(self, condition: str) -> bool:
        return any(s.is_probe(condition) or s.is_gallery(condition) for s in self.probe_sets)


def _one_of(*conditions: str) -> Callable[[str], bool]:
    allowed = frozenset(conditions)
    return lambda condition: condition in allowed


_CASIA_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B = ProtocolSpec(
    name="casia-b",
    probe_sets=tuple(
        ProbeSet(name, _one_of(*probes), _one_of(*_CASIA_GALLERY), ", ".join(probes), "nm-01..04")
        for name, probes in (("NM", ("nm-05", "nm-06")), ("BG", ("bg-01", "bg-02")), ("CL", ("cl-01", "cl-02")))
    ),
    conditions_hint="nm-01..06, bg-01/02, cl-01/02",
)

_CCPG_PAIRS = (
    ("CL", ("U0_D0_BG", "U0_D0"), ("U1_D1", "U2_D2", "U3_D3")),
    ("UP", ("U3_D3",), ("U0_D3",)),
    ("DN", ("U1_D0",), ("U1_D1",)),
    ("BG", ("U0_D0_BG",), ("U0_D0",)),
)
CCPG = ProtocolSpec(
    name="ccpg",
    probe_sets=tuple(
        ProbeSet(name, _one_of(*probes), _one_of(*gallery), ", ".join(probes), ", ".join(gallery))
        for name, probes, gallery in _CCPG_PAIRS
    ),
    reid=True,
    view_of=lambda view: view.split("_")[0],
    conditions_hint="U0_D0, U0_D0_BG, U1_D1, U2_D2, U3_D3, U0_D3, U1_D0",
)


def _sustech_condition(condition: str) -> tuple[str, frozenset[str]]:
    """'02-cl-ub' -> ('02', {'cl', 'ub'})."""
    number, _, attributes = condition.partition("-")
    return number, frozenset(a for a in attributes.split("-") if a)


def _sustech_has(attribute: str, number: str | None = None) -> Callable[[str], bool]:
    def test(condition: str) -> bool:
        seq, attributes = _sustech_condition(condition)
        return attribute in attributes and (number is None or seq == number)

    return test


def _sustech_overall(condition: str) -> bool:
    return _sustech_condition(condition)[0] in {"01", "02", "03", "04"}


_SUSTECH_ATTRIBUTES = (
    ("Bag", "bg"), ("Clothing", "cl"), ("Carrying", "cr"), ("Umbrella", "ub"),
    ("Uniform", "uf"), ("Occlusion", "oc"), ("Night", "nt"),
)
_SUSTECH_GALLERY = _sustech_has("nm", number="00")
SUSTECH1K = ProtocolSpec(
    name="sustech1k",
    probe_sets=(
        ProbeSet("Normal", _sustech_has("nm", number="01"), _SUSTECH_GALLERY, "01-nm", "00-nm"),
        *(ProbeSet(name, _sustech_has(code), _SUSTECH_GALLERY, f"*-{code}*", "00-nm")
          for name, code in _SUSTECH_ATTRIBUTES),
        ProbeSet("Overall", _sustech_overall, _SUSTECH_GALLERY, "01..04-*", "00-nm"),
    ),
    ranks=(1, 5),
    conditions_hint="00-nm, 01-nm, 01-bg, 02-cl-ub, ...",
)

_PROTOCOLS = {"casiab": CASIA_B, "ccpg": CCPG, "sustech1k": SUSTECH1K}


def get_protocol(name: str) -> ProtocolSpec:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _PROTOCOLS:
        raise EvaluationError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOLS)}")
    return _PROTOCOLS[key]


def _metrics(metric: str) -> tuple[str, ...]:
    if metric == "both":
        return METRICS
    if metric not in METRICS:
        raise EvaluationError(f"unknown metric {metric!r}: use euclidean, cosine or both")
    return (metric,)


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def _quiet_nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """nanmean that answers NaN for all-NaN slices without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _json_number(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


@dataclass
class ReIdScores:
    """Re-identification scores (%) over all views, same-subject same-view gallery entries removed."""

    rank1: float
    mean_ap: float
    mean_inp: float
    valid_probes: int  # probes whose subject is still in the gallery after the removal

    def to_dict(self) -> dict[str, Any]:
        return {"rank1": _json_number(self.rank1), "mAP": _json_number(self.mean_ap),
                "mINP": _json_number(self.mean_inp), "valid_probes": self.valid_probes}


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
                "mean_excluding_identical_view": _json_number(self.mean(k, True)),
                "mean_including_identical_view": _json_number(self.mean(k, False)),
                "per_probe_view_excluding_identical": [_json_number(v) for v in self.per_probe_view(k, True)],
                "per_probe_view_including_identical": [_json_number(v) for v in self.per_probe_view(k, False)],
                "table": [[_json_number(v) for v in row] for row in table],
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
                    row[f"rank{k}"] = _json_number(cond.mean(k, True))
                    row[f"rank{k}_incl_identical"] = _json_number(cond.mean(k, False))
                if cond.reid:
                    row["reid_rank1"] = _json_number(cond.reid.rank1)
                    row["reid_mAP"] = _json_number(cond.reid.mean_ap)
                out[metric][cond.name] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "ranks": list(self.ranks), "num_sequences": self.num_sequences,
                "num_subjects": self.num_subjects, "info": self.info, "summary": self.summary(),
                "metrics": {m: [c.to_dict() for c in r.conditions] for m, r in self.by_metric.items()}}


# --------------------------------------------------------------------------------------------------
# Evaluation of embeddings
# --------------------------------------------------------------------------------------------------

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
    euclidean, cosine or both. Sequences the protocol does not use are ignored.
    """
    spec = get_protocol(protocol)
    metrics = _metrics(metric)
    x = _as_embeddings(embeddings, "dataset")
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
            hits = _rank_hits(dist[:, columns], subjects[probes], subjects[gallery_idx[columns]], spec.ranks)
            for k, hit in hits.items():
                accuracy[k][row, col] = 100.0 * hit.mean()
    reid = None
    if spec.reid and len(probe_idx) and len(gallery_idx):
        reid = _reid_scores(x, subjects, views, probe_idx, gallery_idx, metric)
    return ConditionResult(probe_set.name, probe_set.probe_description, probe_set.gallery_description,
                           list(view_list), accuracy, len(probe_idx), len(gallery_idx), reid)


def _reid_scores(
    x: np.ndarray, subjects: np.ndarray, views: np.ndarray, probe_idx: np.ndarray, gallery_idx: np.ndarray,
    metric: str, chunk: int = 1024,
) -> ReIdScores:
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


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _cell(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"


def format_markdown(result: EvaluationResult) -> str:
    """The result as markdown: per metric, a summary table and a per-probe-view rank-1 table."""
    lines = [f"# Evaluation: {result.protocol}", ""]
    facts = [f"{result.num_sequences} sequences", f"{result.num_subjects} subjects"]
    for key in ("model", "backend", "dataset_root", "depth_root", "subjects"):
        if result.info.get(key):
            facts.append(f"{key.replace('_', ' ')}: `{result.info[key]}`")
    if result.info.get("skipped"):
        facts.append(f"skipped (no frames): {len(result.info['skipped'])}")
    lines += ["; ".join(facts), ""]
    for metric, metric_result in result.by_metric.items():
        lines += [f"## {metric} distance", ""]
        header = ["Probe set", "Probe", "Gallery", "Probes"]
        for k in result.ranks:
            header += [f"Rank-{k} excl. identical view", f"Rank-{k} incl. identical view"]
        has_reid = any(c.reid for c in metric_result.conditions)
        if has_reid:
            header += ["ReID rank-1", "ReID mAP", "ReID mINP"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cond in metric_result.conditions:
            row = [cond.name, cond.probe_description, cond.gallery_description, str(cond.num_probes)]
            for k in result.ranks:
                row += [_cell(cond.mean(k, True)), _cell(cond.mean(k, False))]
            if has_reid:
                reid = cond.reid
                row += [_cell(reid.rank1), _cell(reid.mean_ap), _cell(reid.mean_inp)] if reid else ["–"] * 3
            lines.append("| " + " | ".join(row) + " |")
        views = metric_result.conditions[0].views if metric_result.conditions else []
        lines += ["", f"Rank-1 (%) per probe view, identical view excluded ({metric}):", ""]
        header = ["Probe set", *views, "Mean"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cond in metric_result.conditions:
            per_view = [_cell(v) for v in cond.per_probe_view(1, True)]
            lines.append("| " + " | ".join([cond.name, *per_view, _cell(cond.mean(1, True))]) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(result: EvaluationResult, out: str | Path) -> tuple[Path, Path]:
    """Write <out>.md and <out>.json (a trailing .md/.json in `out` is dropped first)."""
    out = Path(out)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = Path(f"{out}.md"), Path(f"{out}.json")
    md.write_text(format_markdown(result))
    js.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    return md, js


# --------------------------------------------------------------------------------------------------
# Embedding a dataset
# --------------------------------------------------------------------------------------------------


class SequenceEncoder(Protocol):
    """A network that maps one sequence to its (C, P) embedding."""

    description: str
    needs_silhouettes: bool
    needs_depth: bool

    def encode(self, silhouettes: np.ndarray, depths: np.ndarray | None) -> np.ndarray:
        """silhouettes, depths: (T, 64, 44) uint8 0..255 (depths None when not needed)."""
        ...


class OnnxEncoder:
    """An exported model on ONNX Runtime (`service.pipeline.embed.GaitEmbedder`)."""

    def __init__(self, embedder: GaitEmbedder):
        self.embedder = embedder
        self.needs_silhouettes = embedder.metadata.needs_silhouettes
        self.needs_depth = embedder.needs_depth
        self.input_size = (embedder.metadata.input_height, embedder.metadata.input_width)
        self.description = f"onnx {embedder.metadata.variant} ({embedder.model_id})"

    @classmethod
    def open(cls, path: Path, device: str = "auto") -> OnnxEncoder:
        from service.pipeline.embed import GaitEmbedder

        providers = "auto" if device == "auto" else device
        try:
            return cls(GaitEmbedder(path, providers=providers))
        except ValueError as exc:  # no metadata, provider not available
            raise EvaluationError(str(exc)) from exc

    def encode(self, silhouettes: np.ndarray, depths: np.ndarray | None) -> np.ndarray:
        # GaitEmbedder takes silhouettes as uint8 0..255 and depth already scaled to [0, 1].
        depth = None if depths is None else depths.astype(np.float32) / 255.0
        return self.embedder.embed(silhouettes, depth)


class TorchEncoder:
    """A training checkpoint, run with torch (imported only here)."""

    input_size = (NETWORK_HEIGHT, NETWORK_WIDTH)

    def __init__(self, path: Path, device: str = "auto"):
        import torch

        from model.checkpoint import load_model

        self._torch = torch
        try:
            self.net, cfg = load_model(path, device)
        except Exception as exc:  # unpickling, missing keys, config validation, state-dict mismatch
            raise EvaluationError(f"{path} is not a gaitid training checkpoint: {exc}") from exc
        self.device = next(self.net.parameters()).device
        modalities = cfg.model.modalities
        self.needs_silhouettes = "sils" in modalities
        self.needs_depth = "depths" in modalities
        self.description = f"checkpoint {cfg.model.variant} on {self.device}"

    def _tensor(self, frames: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(frames))[None].to(self.device).float().div_(255.0)

    def encode(self, silhouettes: np.ndarray, depths: np.ndarray | None) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.net(sils=self._tensor(silhouettes) if self.needs_silhouettes else None,
                           depths=None if depths is None else self._tensor(depths))
        return out["embedding"][0].float().cpu().numpy()


def open_encoder(model: str | Path | GaitEmbedder | SequenceEncoder, device: str = "auto") -> SequenceEncoder:
    """An encoder for an ONNX file, a checkpoint (.pt/.pth/.ckpt), a GaitEmbedder or an encoder."""
    if not isinstance(model, (str, Path)):
        if hasattr(model, "encode"):
            return model  # already an encoder
        if hasattr(model, "embed") and hasattr(model, "metadata"):
            return OnnxEncoder(model)  # a GaitEmbedder
        raise EvaluationError(f"cannot embed with a {type(model).__name__}: pass a model file")
    path = Path(model)
    if not path.is_file():
        raise EvaluationError(f"model file {path} not found")
    if path.suffix == ".onnx":
        return OnnxEncoder.open(path, device)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return TorchEncoder(path, device)
    raise EvaluationError(f"{path}: expected an exported .onnx model or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")


@dataclass
class EmbeddedSequences:
    embeddings: np.ndarray  # (n, C, P) float32, one per entry of `sequences`
    sequences: list[SequenceInfo]  # the sequences embedded, in input order
    skipped: list[SequenceInfo]  # sequences with no frames
    model: str  # what made the embeddings
    seconds: float


def _load_frames(seq_dir: Path, what: str, key: str, size: tuple[int, int]) -> np.ndarray:
    try:
        frames = trim_to_network_width(load_sequence(seq_dir))
    except FileNotFoundError as exc:
        raise EvaluationError(f"{key}: no {what} sequence at {seq_dir}") from exc
    except Exception as exc:  # a truncated or foreign pickle: name the file instead of a library traceback
        raise EvaluationError(f"{key}: cannot read the {what} sequence in {seq_dir}: {exc}") from exc
    if frames.ndim != 3 or (len(frames) and frames.shape[1:] != size):
        raise EvaluationError(
            f"{key}: {what} frames are {frames.shape[1:]} after trimming; the network takes {size} "
            f"(OpenGait 64x64 pkl trees)")
    return frames


def embed_dataset(
    model: str | Path | GaitEmbedder | SequenceEncoder,
    sequences: Sequence[SequenceInfo],
    depth_root: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> EmbeddedSequences:
    """Embed every sequence with all its frames, one sequence at a time (lengths vary).

    model: an exported .onnx (ONNX Runtime; its metadata says whether depth is needed), a training
    checkpoint (torch), a GaitEmbedder or a SequenceEncoder. Silhouettes come from each sequence's
    folder; a model that needs depth reads depth_root/subject/condition/view (same layout and frame
    count). Frames are trimmed to 64x44 and scaled to [0, 1]. Sequences with no frames are skipped.
    """
    encoder = open_encoder(model, device)
    if encoder.needs_depth and depth_root is None:
        raise EvaluationError("this model needs depth: pass the depth tree (--depth-root)")
    size = tuple(getattr(encoder, "input_size", (NETWORK_HEIGHT, NETWORK_WIDTH)))
    began = time.monotonic()
    kept, skipped, out = [], [], []
    for info in tqdm(sequences, desc="embedding", unit="seq", disable=not progress):
        sils = _load_frames(info.path, "silhouette", info.key, size)
        if len(sils) == 0:
            skipped.append(info)
            continue
        depths = None
        if encoder.needs_depth:
            depths = _load_frames(Path(depth_root) / info.subject / info.condition / info.view, "depth",
                                  info.key, size)
            if len(depths) != len(sils):
                raise EvaluationError(f"{info.key}: {len(sils)} silhouette frames but {len(depths)} depth frames")
        out.append(np.asarray(encoder.encode(sils, depths), dtype=np.float32))
        kept.append(info)
    embeddings = np.stack(out) if out else np.zeros((0, 0, 0), dtype=np.float32)
    return EmbeddedSequences(embeddings, kept, skipped, encoder.description, time.monotonic() - began)


# --------------------------------------------------------------------------------------------------
# `gaitid eval`
# --------------------------------------------------------------------------------------------------


def run_evaluation(
    model: str | Path,
    dataset_root: str | Path,
    protocol: str = "casia-b",
    depth_root: str | Path | None = None,
    subjects: str | None = None,
    metric: str = "both",
    out: str | Path | None = None,
    device: str = "auto",
) -> EvaluationResult:
    """Embed a dataset with a model, score it with a protocol, print a markdown table.

    subjects: a range spec such as "075-124" (test subjects); with `out`, writes <out>.md and <out>.json.
    """
    spec = get_protocol(protocol)
    _metrics(metric)  # fail on a bad name before minutes of embedding
    root = Path(dataset_root)
    if not root.is_dir():
        raise EvaluationError(f"dataset root {root} is not a folder")
    if depth_root is not None and not Path(depth_root).is_dir():
        raise EvaluationError(f"depth root {depth_root} is not a folder")
    try:
        wanted = parse_subject_range(subjects)
    except ValueError as exc:
        raise EvaluationError(f"bad subject range {subjects!r}: use e.g. 075-124 or 001,003,010-012") from exc
    listed = list_sequences(root, wanted)
    infos = [info for info in listed if spec.uses(info.condition)]
    if not infos:
        which = f" for subjects {subjects}" if subjects else ""
        raise EvaluationError(f"no {spec.name} sequences ({spec.conditions_hint}) under {root}{which} "
                              f"({len(listed)} sequences of other conditions)")
    embedded = embed_dataset(model, infos, depth_root=depth_root, device=device)
    if not embedded.sequences:
        raise EvaluationError(f"every sequence under {root} is empty")
    result = evaluate_embeddings(embedded.embeddings, embedded.sequences, spec.name, metric)
    result.info.update(
        model=str(model), backend=embedded.model, dataset_root=str(root),
        depth_root=str(depth_root) if depth_root else None, subjects=subjects,
        skipped=[info.key for info in embedded.skipped], embedding_seconds=round(embedded.seconds, 2),
    )
    print(format_markdown(result))
    if out is not None:
        md, js = write_report(result, out)
        print(f"wrote {md} and {js}")
    return result

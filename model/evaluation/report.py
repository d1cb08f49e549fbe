"""Evaluation reports: a markdown table per metric (summary + rank-1 per probe view) and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.evaluation.results import EvaluationResult

METRIC_TITLES = {
    "cosine": "cosine distance (1 - the contract's part-cosine similarity: what the service ranks by)",
    "euclidean": "euclidean distance (OpenGait's metric, for comparison with published numbers)",
}


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
        lines += [f"## {METRIC_TITLES.get(metric, metric + ' distance')}", ""]
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

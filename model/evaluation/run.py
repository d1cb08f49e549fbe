"""`gaitid eval`: embed a dataset tree with a model, score it with a protocol, print and save a report."""

from __future__ import annotations

from pathlib import Path

from model.dataset import list_sequences, parse_subject_range
from model.evaluation.embedding import embed_dataset
from model.evaluation.errors import EvaluationError
from model.evaluation.metrics import metrics_named
from model.evaluation.protocols import get_protocol
from model.evaluation.report import format_markdown, write_report
from model.evaluation.results import EvaluationResult
from model.evaluation.scoring import evaluate_embeddings


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
    metrics_named(metric)  # fail on a bad name before minutes of embedding
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

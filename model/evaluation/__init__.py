"""Gait-recognition accuracy (`gaitid eval`), one idea per module:

    protocols.py  which sequences are probes and gallery (CASIA-B, CCPG, SUSTech1K)
    metrics.py    distances between embeddings, rank-k hits, re-identification scores
    scoring.py    labelled embeddings + a protocol -> results
    results.py    the result types (tables, means, summary, JSON)
    report.py     markdown and JSON reports
    embedding.py  a model file (ONNX or checkpoint) + a pkl tree -> embeddings
    run.py        `gaitid eval`: all of the above for one dataset

Nothing here imports torch at module level: ONNX models are evaluated without it.
"""

from model.evaluation.embedding import EmbeddedSequences, embed_dataset, open_embedder
from model.evaluation.errors import EvaluationError
from model.evaluation.metrics import METRICS, pairwise_distance
from model.evaluation.protocols import PROTOCOLS, get_protocol
from model.evaluation.report import format_markdown, write_report
from model.evaluation.results import ConditionResult, EvaluationResult, MetricResult, ReIdScores
from model.evaluation.run import run_evaluation
from model.evaluation.scoring import evaluate_embeddings

__all__ = [
    "METRICS", "PROTOCOLS", "ConditionResult", "EmbeddedSequences", "EvaluationError", "EvaluationResult",
    "MetricResult", "ReIdScores", "embed_dataset", "evaluate_embeddings", "format_markdown", "get_protocol",
    "open_embedder", "pairwise_distance", "run_evaluation", "write_report",
]

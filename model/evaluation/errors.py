"""The one error type of evaluation: input the evaluator cannot work with."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Input the evaluator cannot work with; the message says what to change."""

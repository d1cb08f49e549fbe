"""Typed failures of the clip pipeline, each with a message a user can act on.

Every stage raises one of these for bad input instead of letting a library exception escape, so
the HTTP layer and the CLI can answer with `message` (and `http_status`, `code`) and never show a
traceback. `details` holds machine-readable facts (frame counts, limits) for logs and API bodies.
"""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """Base class: the clip could not be turned into gait sequences."""

    code = "pipeline_error"
    http_status = 422

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class InvalidVideoError(PipelineError):
    """Not a video, a corrupt one, or one with no decodable frame."""

    code = "invalid_video"
    http_status = 400


class ClipTooLongError(PipelineError):
    """The clip is longer than the configured maximum duration."""

    code = "clip_too_long"
    http_status = 413


class NoPersonError(PipelineError):
    """Nobody (large enough to analyse) was found walking in the clip."""

    code = "no_person"
    http_status = 422


class TooFewFramesError(PipelineError):
    """A person was found, but in too few frames to measure a gait."""

    code = "too_few_frames"
    http_status = 422


class ModelNotFoundError(PipelineError):
    """A configured model file (segmenter, depth, embedding) is missing."""

    code = "model_not_found"
    http_status = 503

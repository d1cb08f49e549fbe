"""Typed failures of the clip pipeline, each with a message a user can act on.

Every stage raises one of these for bad input instead of letting a library exception escape, so
the HTTP layer and the CLI can answer with `message` and `code` and never show a traceback (the
HTTP status of each is decided in service/errors.py). `details` holds machine-readable facts
(frame counts, limits) for logs and API bodies.
"""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """Base class: the clip could not be turned into gait sequences."""

    code = "pipeline_error"

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class InvalidVideoError(PipelineError):
    """Not a video, a corrupt one, or one with no decodable frame."""

    code = "invalid_video"


class ClipTooLongError(PipelineError):
    """The clip is longer than the configured maximum duration."""

    code = "clip_too_long"


class NoPersonError(PipelineError):
    """Nobody (large enough to analyse) was found walking in the clip."""

    code = "no_person"


class TooFewFramesError(PipelineError):
    """A person was found, but in too few frames to measure a gait."""

    code = "too_few_frames"


class ModelNotFoundError(PipelineError):
    """A configured model file (segmenter, depth, embedding) is missing."""

    code = "model_not_found"

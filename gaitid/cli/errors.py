"""How commands report a user's mistake: one line on stderr and an exit status, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

# The errors each part raises for bad input. Looked up among the modules already imported (an error
# can only come from a module that was imported), so this costs no import.
_USER_ERRORS = {
    "gaitid.contract": "ContractError",
    "model.evaluation.errors": "EvaluationError",
    "model.zoo": "ModelZooError",
    "model.opengait.source": "OpenGaitSourceError",
    "model.opengait.zoo": "OpenGaitZooError",
    "service.pipeline.errors": "PipelineError",
    "service.rescore.errors": "RescoreError",
    "gallery.errors": "GalleryError",
}


def user_error_types() -> tuple[type[BaseException], ...]:
    return tuple(getattr(sys.modules[m], name) for m, name in _USER_ERRORS.items() if m in sys.modules)


@contextmanager
def reported_errors(exit_code: int = 1) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        if not isinstance(error, user_error_types()):
            raise
        typer.echo(f"error: {getattr(error, 'message', None) or error}", err=True)
        raise typer.Exit(exit_code) from None

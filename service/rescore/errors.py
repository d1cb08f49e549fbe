"""Typed failures of a re-scoring job that a user can fix (bad archive, bad option, wrong gallery).

Per-file problems (a corrupt video, nobody walking) are never raised: they become error records in
the results. These errors stop the job before or between files; the CLI prints `message` and exits
with status 2, without a traceback.
"""

from __future__ import annotations


class RescoreError(Exception):
    """Base class: the job cannot run as asked."""

    code = "rescore_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ArchiveError(RescoreError):
    """The archive (folder, list file or video) does not exist or holds no video."""

    code = "invalid_archive"


class OptionError(RescoreError):
    """An option has an unusable value (format, path pattern, worker count...)."""

    code = "invalid_option"


class GalleryMismatchError(RescoreError):
    """The gallery namespace holds embeddings of another model than the one re-scoring uses."""

    code = "model_mismatch"


class StateError(RescoreError):
    """The state file next to the results cannot be used (another tool's file, newer schema)."""

    code = "invalid_state"

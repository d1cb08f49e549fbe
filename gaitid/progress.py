"""Progress bars for a terminal and for logs: the one place that sets how tqdm reports progress.

On a terminal a bar redraws itself in place as usual. Anywhere else (a container's log, CI, a file,
a pipe) tqdm would append a carriage-return-separated copy of the bar ten times a second; there
`progress_bar` writes one plain line at most every LOG_INTERVAL_S seconds (and the last state when the
bar closes), so a log holds a readable line per interval, not one per item.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LOG_INTERVAL_S = 5.0  # seconds between two progress lines in a non-interactive log
LOG_WIDTH = 100  # columns of a logged bar (a log has no terminal width to follow)
# GAITID_PROGRESS=log forces log lines (e.g. a terminal that records a session); =tty forces the bar.
MODE_VARIABLE = "GAITID_PROGRESS"


def is_interactive(stream: IO[str]) -> bool:
    """Whether progress on `stream` is read live on a terminal (a redrawn bar) or later in a log."""
    mode = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if mode in ("log", "tty"):
        return mode == "tty"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogLines:
    """A stream for tqdm that turns each redraw (`\\r` + bar) into one line of its own."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.last_line = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last_line:  # closing redraws the last state: once is enough
            self.stream.write(line + "\n")
            self.last_line = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable[T] | None = None, *, file: IO[str] | None = None, **options: Any) -> tqdm:
    """A tqdm bar (same arguments as tqdm's) that suits where it is written: stderr by default."""
    stream = file if file is not None else sys.stderr
    if is_interactive(stream):
        return tqdm(iterable, file=stream, **{"dynamic_ncols": True, **options})
    # mininterval is the time between two lines; dynamic_ncols would ask a log for its width.
    options.pop("dynamic_ncols", None)
    return tqdm(iterable, file=LogLines(stream),
                **{**options, "mininterval": LOG_INTERVAL_S, "maxinterval": max(LOG_INTERVAL_S, 10.0),
                   "ncols": LOG_WIDTH, "ascii": True})

"""gaitid.progress: a redrawn bar on a terminal; in a log, a line every LOG_INTERVAL_S, not one per item."""

from __future__ import annotations

import io

import pytest
import tqdm.std

from gaitid.progress import LOG_INTERVAL_S, MODE_VARIABLE, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock, advanced by hand: each item of the loops below takes 0.1 s."""
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    return now


def walk(items: int, stream, clock, **options) -> None:
    for _ in progress_bar(range(items), file=stream, desc="work", **options):
        clock[0] += 0.1


def test_a_log_gets_a_line_every_few_seconds_not_one_per_item(clock, monkeypatch):
    monkeypatch.delenv(MODE_VARIABLE, raising=False)
    log = io.StringIO()  # not a terminal: a file, a pipe, a container's log
    walk(600, log, clock)  # 60 s of work
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    expected = 60 / LOG_INTERVAL_S
    assert expected - 2 <= len(lines) <= expected + 3, lines  # start, one per interval, the end
    assert lines[0].startswith("work:") and "0/600" in lines[0]
    assert "600/600" in lines[-1]
    assert all(len(line) <= 100 for line in lines)


def test_a_terminal_gets_the_redrawn_bar(clock, monkeypatch):
    monkeypatch.delenv(MODE_VARIABLE, raising=False)
    terminal = Terminal()
    walk(50, terminal, clock)
    assert terminal.getvalue().count("\r") > 10  # redrawn in place, several times a second of work


def test_the_mode_can_be_forced(clock, monkeypatch):
    monkeypatch.setenv(MODE_VARIABLE, "log")
    terminal = Terminal()
    walk(50, terminal, clock)  # 5 s of work
    assert "\r" not in terminal.getvalue() and len(terminal.getvalue().splitlines()) <= 3
    monkeypatch.setenv(MODE_VARIABLE, "tty")
    log = io.StringIO()
    walk(50, log, clock)
    assert log.getvalue().count("\r") > 10


def test_a_disabled_bar_writes_nothing(clock):
    log = io.StringIO()
    walk(20, log, clock, disable=True)
    assert log.getvalue() == ""

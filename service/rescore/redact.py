"""Redaction: erasing a subject from the gallery reaches the re-scoring results that name them.

Why: a results file (service.rescore.results) is a view of the state scored against the gallery at
the time it was written, so it goes on naming a subject after DELETE /subjects/{id} erased them, and
so do the HTML reports built from it. The state itself names nobody (tracks, embeddings, pictures:
no subject id), so what is rewritten is the results files and reports made from it.

A record names the subject when it is theirs (`subject_id`) or lists them among its `candidates`,
in the same gallery namespace (the same id in another namespace is someone else). It becomes:
- `candidates` without the subject's entry;
- a match to the subject: decision "unknown", subject_id null. It is not promoted to the next
  candidate: redaction never makes an identification that no search made (the next `gaitid
  rescore` run re-decides every track against the gallery as it is then);
- `similarity` of a record that is not a match: the best remaining candidate's (null when none),
  so the similarity to the erased subject is not kept;
- `redacted`: true. It says that an erased subject was taken out, never who.

Which files: every results file the state's runs wrote (the state remembers them), the state's
namesake (`<results>.state.sqlite` -> `<results>`), and any other results file in its folder (told by
its fields); then every HTML report built with the state (`gaitid rescore-report` remembers them)
whose results were rewritten now, or that is older than its results (a redaction stopped between the
two), is built again.

Each file is rewritten into a temporary file beside it, fsynced and renamed over it
(results.ResultsWriter): a crash leaves the old file or the new one, never part of one. A file that
names nobody erased is left untouched. Running it again is harmless, which is how to finish a
redaction that stopped part way. A re-scoring job running meanwhile rewrites its results from its
own gallery when it ends: redact again after it if its gallery still held the subject.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.rescore.report import build_report
from service.rescore.results import (
    FORMAT_BY_SUFFIX,
    RECORD_FIELDS,
    ResultsFormat,
    ResultsWriter,
    iter_results,
    results_fields,
)
from service.rescore.store import STATE_SUFFIX, ReportSource, RescoreState

log = logging.getLogger("gaitid.rescore")

# Fields that tell a results file from any other .jsonl/.csv/.parquet in the folder.
_RESULTS_SIGNATURE = frozenset({"video", "sha256", "track_id", "candidates", "decision", "subject_id", "namespace"})
_BATCH = 1000  # records written (and reported to `progress`) at once
# Two redactions of one file at once would each rename their copy over it: the last would bring
# back the subject the first took out. One at a time in a process (the service's erasures).
_LOCK = threading.Lock()

Progress = Callable[[int], None]  # called with the number of records just read


@dataclass
class RedactionSummary:
    """What a redaction changed (counts and paths only: it names nobody but the caller's subject)."""

    records: int = 0  # records that named the subject and no longer do
    decisions: int = 0  # of which matches to the subject, now unknown
    candidates: int = 0  # candidate entries dropped
    scanned: int = 0  # records read
    files: list[Path] = field(default_factory=list)  # results files rewritten
    reports: list[Path] = field(default_factory=list)  # HTML reports built again

    def details(self) -> dict[str, int]:
        """For the audit entry of the erasure: counts only."""
        return {"records": self.records, "decisions": self.decisions, "candidates": self.candidates,
                "files": len(self.files), "reports": len(self.reports)}

    def audit_details(self) -> dict[str, dict[str, int]]:
        """The erasure's `audit_details` (gallery.Gallery.delete_subject): its counts under "rescore_redacted"."""
        return {"rescore_redacted": self.details()}

    def line(self) -> str:
        return (f"{self.records} of {self.scanned} records redacted ({self.decisions} matches now unknown, "
                f"{self.candidates} candidates dropped) in {len(self.files)} results files; "
                f"{len(self.reports)} reports built again")


def redact_record(record: dict[str, Any], subject_id: str, namespace: str) -> tuple[bool, int] | None:
    """Take `subject_id` of `namespace` out of one record, in place, by the module's rule; returns
    (whether its decision was theirs, candidates dropped), or None when it did not name them."""
    if record.get("namespace") != namespace:
        return None
    candidates = record.get("candidates") or []
    kept = [c for c in candidates if c.get("subject_id") != subject_id]
    theirs = record.get("subject_id") == subject_id
    if not theirs and len(kept) == len(candidates):
        return None
    record["candidates"] = kept
    if theirs:
        record["decision"], record["subject_id"] = "unknown", None
    if record.get("decision") != "match":
        record["similarity"] = kept[0].get("similarity") if kept else None
    record["redacted"] = True
    return theirs, len(candidates) - len(kept)


def redact_subject(state: str | Path, subject_id: str, *, namespace: str = "default",
                   progress: Progress | None = None) -> RedactionSummary:
    """Redact `subject_id` (of gallery `namespace`) from the results and reports of a re-scoring
    state: a state file, or a folder of them (GAITID_RESCORE_STATE takes either). A path that does
    not exist holds nothing to redact. OSError (a read-only folder...) is raised as it comes."""
    summary = RedactionSummary()
    states, results = _sources(Path(state))
    with _LOCK:
        for path, fmt in results.items():
            if _redact_file(path, fmt, subject_id, namespace, summary, progress):
                summary.files.append(path)
        rewritten = set(summary.files)
        for state_file, reports in states.items():
            for source in reports:
                if not (source.report.is_file() and source.results.is_file()):
                    continue
                stale = source.report.stat().st_mtime_ns < source.results.stat().st_mtime_ns
                if source.results.resolve() in rewritten or stale:
                    build_report(source.results, source.report, state=state_file, fmt=source.format,
                                 unknown_limit=source.unknown_limit)
                    summary.reports.append(source.report)
    if summary.records:
        log.info("redacted an erased subject from re-scoring results: %s", summary.line())
    return summary


def _sources(path: Path) -> tuple[dict[Path, list[ReportSource]], dict[Path, ResultsFormat]]:
    """The state files at `path` with the reports built with each, and the results files made from
    them (resolved paths -> format)."""
    if path.is_dir():
        state_files, folder = sorted(path.glob("*" + STATE_SUFFIX)), path
    elif path.is_file():
        state_files, folder = [path], path.parent
    else:
        return {}, {}
    states: dict[Path, list[ReportSource]] = {}
    results: dict[Path, ResultsFormat] = {}
    for state_file in state_files:
        with RescoreState(state_file) as store:
            states[state_file] = store.reports()
            for file, fmt in store.results_files().items():
                if file.is_file() and fmt in ("jsonl", "csv", "parquet"):
                    results.setdefault(file.resolve(), fmt)  # type: ignore[arg-type]
        namesake = state_file.with_name(state_file.name[:-len(STATE_SUFFIX)])
        if state_file.name.endswith(STATE_SUFFIX) and namesake.suffix.lower() in FORMAT_BY_SUFFIX:
            _add_if_results(results, namesake)
    for file in sorted(folder.iterdir()):
        if not file.name.startswith(".") and file.suffix.lower() in FORMAT_BY_SUFFIX:  # not our temporary files
            _add_if_results(results, file)
    return states, results


def _add_if_results(results: dict[Path, ResultsFormat], file: Path) -> None:
    fmt = FORMAT_BY_SUFFIX.get(file.suffix.lower())
    if fmt is not None and file.is_file() and file.resolve() not in results \
            and _RESULTS_SIGNATURE <= results_fields(file, fmt):
        results[file.resolve()] = fmt


def _redact_file(path: Path, fmt: ResultsFormat, subject_id: str, namespace: str, summary: RedactionSummary,
                 progress: Progress | None) -> bool:
    """Rewrite one results file without the subject (atomically); False, leaving it untouched,
    when no record named them."""
    writer = ResultsWriter(path, fmt)
    changed = False
    try:
        for batch in _batches(iter_results(path, fmt)):
            for record in batch:
                outcome = redact_record(record, subject_id, namespace)
                if outcome is not None:
                    changed = True
                    summary.records += 1
                    summary.decisions += outcome[0]
                    summary.candidates += outcome[1]
            writer.write([_complete(r) for r in batch])
            summary.scanned += len(batch)
            if progress is not None:
                progress(len(batch))
        if changed:
            writer.commit()
        else:
            writer.abort()
    except BaseException:
        writer.abort()
        raise
    return changed


def _complete(record: dict[str, Any]) -> dict[str, Any]:
    """Exactly RECORD_FIELDS (files written before `redacted` existed lack it)."""
    full = {name: record.get(name) for name in RECORD_FIELDS}
    if full["redacted"] is None:
        full["redacted"] = False
    return full


def _batches(records: Iterable[dict]) -> Iterable[list[dict]]:
    batch: list[dict] = []
    for record in records:
        batch.append(record)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch

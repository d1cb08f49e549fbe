"""service/rescore/redact.py on a real state, gallery and results files (no video decoded): an erased
subject is taken out of every results file and report made from the state, and nobody else is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery, SequenceInput
from service.rescore import RescoreState, build_report, read_results, redact_subject
from service.rescore.archive import FileStat
from service.rescore.extract import FileOutcome, TrackOutcome
from service.rescore.redact import redact_record
from service.rescore.results import GalleryScorer, build_records, write_results
from service.rescore.sources import SourceFacts

MODEL = "m" * 16
C, P = 8, 4
THRESHOLD = 0.9
RNG = np.random.default_rng(5)
WALKERS = {name: RNG.normal(size=(C, P)).astype(np.float32) for name in ("alice", "bob", "carol")}


def named(records: list[dict], subject_id: str) -> list[dict]:
    """Records that name the subject, as decision or candidate."""
    return [r for r in records if r["subject_id"] == subject_id
            or any(c["subject_id"] == subject_id for c in r["candidates"])]


@dataclass
class Job:
    folder: Path
    state: Path
    results: dict[str, Path]  # format -> file


def write_job(folder: Path, formats=("jsonl", "csv", "parquet"), namespace: str = "default") -> Job:
    """A re-scored archive as `gaitid rescore` leaves it: alice walks in two videos, bob in one,
    carol (never enrolled) in one, plus a video nobody walks in; results written from the state by
    the job's own code (build_records, write_results), alice and bob enrolled."""
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "results.jsonl.state.sqlite"
    noise = np.random.default_rng(1)
    videos = {"v1": ["alice", "bob"], "v2": ["alice"], "v3": ["carol"], "v4": []}
    with RescoreState(state_path) as state, Gallery(folder / "gallery", threshold=THRESHOLD) as gallery:
        for sha, who in videos.items():
            tracks = [TrackOutcome(i, np.arange(10, 40, dtype=np.int64), np.tile(np.float32([[5, 10, 40, 110]]), (30, 1)),
                                   (WALKERS[w] + 0.05 * noise.normal(size=(C, P))).astype(np.float32), b"png")
                      for i, w in enumerate(who)]
            state.save(FileOutcome(path=f"/archive/{sha}.avi", model_id=MODEL, status="done", sha256=sha * 32,
                                   stat=FileStat(1, 1), tracks=tracks, fps=25.0, frame_count=100, size=(320, 240),
                                   error_code=None if who else "no_person"))
        sources = {f"/archive/{sha}.avi": SourceFacts(f"/archive/{sha}.avi", sha * 32, "camA", None, None)
                   for sha in videos}
        state.replace_sources(sources.values())
        sils = np.zeros((20, 64, 44), np.uint8)
        for who in ("alice", "bob"):
            gallery.enroll(who, [SequenceInput(sils, WALKERS[who])], model_id=MODEL, display_name=who.title(),
                           namespace=namespace)
        scorer = GalleryScorer(gallery, namespace=namespace, top_k=5, threshold=THRESHOLD)
        results = {}
        for fmt in formats:
            out = folder / f"results.{fmt}"
            write_results(out, build_records(list(sources), state, MODEL, scorer, sources), fmt)
            state.note_results(out, fmt)
            results[fmt] = out
    return Job(folder, state_path, results)


@pytest.fixture
def job(tmp_path) -> Job:
    return write_job(tmp_path / "job")


def test_the_subject_is_named_before_and_nowhere_after_in_every_format(job):
    before = {fmt: read_results(path) for fmt, path in job.results.items()}
    for records in before.values():
        assert {r["subject_id"] for r in records if r["decision"] == "match"} == {"alice", "bob"}
        assert len(named(records, "alice")) == 4  # 3 tracks of alice, and bob's track lists her as a candidate
    summary = redact_subject(job.folder, "alice")
    assert (summary.records, summary.decisions, summary.candidates, summary.scanned) == (3 * 4, 3 * 2, 3 * 4, 3 * 5)
    assert sorted(summary.files) == sorted(p.resolve() for p in job.results.values())
    for fmt, path in job.results.items():
        after = read_results(path)
        assert named(after, "alice") == []
        old = {(r["video"], r["track_id"]): r for r in before[fmt]}
        for record in after:
            was = old[(record["video"], record["track_id"])]
            if was["subject_id"] == "alice":  # her match: unknown, redacted, no similarity to her kept
                assert (record["decision"], record["subject_id"], record["redacted"]) == ("unknown", None, True)
                assert record["candidates"] == [c for c in was["candidates"] if c["subject_id"] != "alice"]
                assert record["similarity"] == record["candidates"][0]["similarity"] < was["similarity"]
            elif any(c["subject_id"] == "alice" for c in was["candidates"]):  # a candidate: dropped, decision kept
                assert record["decision"] == was["decision"] and record["subject_id"] == was["subject_id"]
                assert record["redacted"] is True and len(record["candidates"]) == len(was["candidates"]) - 1
                if record["decision"] == "match":
                    assert record["similarity"] == was["similarity"]
            else:  # nobody erased named: untouched
                assert record == was
    bob = [r for r in read_results(job.results["jsonl"]) if r["subject_id"] == "bob"]
    assert len(bob) == 1 and bob[0]["decision"] == "match"  # other subjects stay named


def test_a_second_redaction_changes_nothing_and_touches_no_file(job):
    redact_subject(job.state, "alice")
    stamps = {p: p.stat().st_mtime_ns for p in job.results.values()}
    again = redact_subject(job.state, "alice")
    assert (again.records, again.files) == (0, [])
    assert {p: p.stat().st_mtime_ns for p in job.results.values()} == stamps


def test_the_same_id_in_another_namespace_is_someone_else(job):
    summary = redact_subject(job.folder, "alice", namespace="tenant-1")
    assert summary.records == 0 and len(named(read_results(job.results["jsonl"]), "alice")) == 4


def test_files_found_by_registration_namesake_and_folder_and_others_left_alone(tmp_path):
    job = write_job(tmp_path / "job", formats=("jsonl",))
    elsewhere = write_job(tmp_path / "elsewhere", formats=("csv",)).results["csv"]
    with RescoreState(job.state) as state:  # a run of this state with --out in another folder
        state.note_results(elsewhere, "csv")
    copy = job.folder / "tonight.jsonl"  # an older copy nobody registered, beside the state
    copy.write_bytes(job.results["jsonl"].read_bytes())
    notes = job.folder / "notes.jsonl"  # not a results file
    notes.write_text(json.dumps({"subject_id": "alice"}) + "\n")
    summary = redact_subject(job.state, "alice")
    assert set(summary.files) == {job.results["jsonl"].resolve(), elsewhere.resolve(), copy.resolve()}
    assert notes.read_text() == json.dumps({"subject_id": "alice"}) + "\n"
    assert redact_subject(tmp_path / "no-such-folder", "alice").records == 0


def test_a_crash_in_the_rename_leaves_the_old_file_whole(job, monkeypatch):
    from service.rescore import results

    old = {p: p.read_bytes() for p in job.results.values()}

    def crash(src, dst):
        raise OSError("simulated crash at the rename")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        redact_subject(job.folder, "alice")
    assert {p: p.read_bytes() for p in job.results.values()} == old
    assert not [p.name for p in job.folder.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    monkeypatch.undo()
    assert redact_subject(job.folder, "alice").records == 3 * 4  # run again: done


def test_reports_built_with_the_state_are_built_again(job, tmp_path):
    report = tmp_path / "out" / "report.html"  # anywhere: the state remembers it
    build_report(job.results["jsonl"], report, state=job.state)
    page = report.read_text()
    assert "Alice" in page and "alice" in page and "Bob" in page
    summary = redact_subject(job.folder, "alice")
    assert summary.reports == [report.resolve()]
    page = report.read_text()
    assert "alice" not in page.lower() and "Bob" in page


def test_redact_record_rule():
    record = {"namespace": "default", "decision": "match", "subject_id": "a", "similarity": 0.95,
              "candidates": [{"subject_id": "a", "display_name": "A", "similarity": 0.95},
                             {"subject_id": "b", "display_name": "B", "similarity": 0.91}], "redacted": False}
    assert redact_record(dict(record), "c", "default") is None
    assert redact_record(dict(record), "a", "other") is None
    assert redact_record(record, "a", "default") == (True, 1)
    # not promoted to b although b is above any threshold that matched a: redaction identifies nobody
    assert (record["decision"], record["subject_id"], record["similarity"], record["redacted"]) == (
        "unknown", None, 0.91, True)
    assert [c["subject_id"] for c in record["candidates"]] == ["b"]

"""`gaitid rescore-redact SUBJECT --state PATH`: an erased subject taken out of a state's results and
reports, with progress, for states the service does not know."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from gaitid.cli import app
from service.rescore import read_results
from tests.service.rescore.test_redact import named, write_job


def test_cli_redacts_a_state_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GAITID_PROGRESS", "log")  # one progress line, as in a log
    job = write_job(tmp_path / "job", formats=("jsonl", "parquet"))
    done = CliRunner().invoke(app, ["rescore-redact", "alice", "--state", str(job.folder)])
    assert done.exit_code == 0, done.output
    assert "8 of 10 records redacted (4 matches now unknown, 8 candidates dropped) in 2 results files" in done.output
    assert "redact" in done.output and "record" in done.output  # the progress line (stderr)
    for path in job.results.values():
        assert str(path.resolve()) in done.output
        records = read_results(path)
        assert named(records, "alice") == [] and named(records, "bob")
    again = CliRunner().invoke(app, ["rescore-redact", "alice", "--state", str(job.state), "--no-progress"])
    assert again.exit_code == 0 and "0 of 10 records redacted" in again.output


def test_cli_redact_without_a_state_is_a_user_error(tmp_path):
    done = CliRunner().invoke(app, ["rescore-redact", "alice", "--state", str(tmp_path / "nothing")])
    assert done.exit_code == 2 and "does not exist" in done.output


def test_subjects_delete_redacts_the_services_state_first(tmp_path, monkeypatch):
    """`gaitid subjects delete` erases as DELETE /subjects/{id} does: with GAITID_RESCORE_STATE set, the
    state's results stop naming the subject, and the erasure's audit entry says how many records."""
    job = write_job(tmp_path / "job", formats=("jsonl",))
    monkeypatch.setenv("GAITID_RESCORE_STATE", str(job.folder))
    gallery_dir = str(job.folder / "gallery")
    done = CliRunner().invoke(app, ["subjects", "delete", "alice", "--gallery-dir", gallery_dir])
    assert done.exit_code == 0, done.output
    assert "erased 'alice': 1 sequences; re-scoring results: 4 of 5 records redacted" in done.output
    records = read_results(job.results["jsonl"])
    assert named(records, "alice") == [] and named(records, "bob")
    log = CliRunner().invoke(app, ["audit", "--gallery-dir", gallery_dir, "--action", "subject.deleted", "--json"])
    assert json.loads(log.stdout)["details"]["rescore_redacted"]["records"] == 4
    unknown = CliRunner().invoke(app, ["subjects", "delete", "nobody", "--gallery-dir", gallery_dir])
    assert unknown.exit_code == 2 and "not enrolled" in unknown.output

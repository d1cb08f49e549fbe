"""`gaitid rescore-redact SUBJECT --state PATH`: an erased subject taken out of a state's results and
reports, with progress, for states the service does not know."""

from __future__ import annotations

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

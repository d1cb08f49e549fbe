"""`gaitid keys`, `gaitid audit`, `gaitid subjects`: a key and its keys-file entry that the service
accepts, the legacy gallery of a key, the audit log from the command line, and erasing a subject whose
id no URL carries."""

from __future__ import annotations

import sqlite3

import numpy as np
from typer.testing import CliRunner

from gaitid.cli import app
from gallery import Gallery, SequenceInput, hash_secret
from service.auth import namespace_for_key, read_keys_file

runner = CliRunner()


def test_keys_new_appends_an_entry_the_service_reads(tmp_path):
    keys = tmp_path / "keys.toml"
    result = runner.invoke(app, ["keys", "new", "--name", "desk", "--gallery", "acme", "--role", "enroll",
                                 "--append-to", str(keys)])
    assert result.exit_code == 0, result.output
    secret = result.stderr.split("shown once: ")[1].strip()
    runner.invoke(app, ["keys", "new", "--name", "ops", "--gallery", "acme", "--role", "admin", "--append-to", str(keys)])
    records = read_keys_file(keys)
    assert [(r.name, r.namespace, r.role) for r in records] == [("desk", "acme", "enroll"), ("ops", "acme", "admin")]
    assert records[0].key_sha256 == hash_secret(secret) and secret not in keys.read_text()
    refused = runner.invoke(app, ["keys", "new", "--name", "x", "--gallery", "Bad/Name", "--role", "read"])
    assert refused.exit_code == 2 and "namespace" in refused.stderr


def test_keys_hash_names_the_legacy_gallery():
    result = runner.invoke(app, ["keys", "hash", "key-a"])
    assert hash_secret("key-a") in result.stdout and namespace_for_key(b"key-a") in result.stdout


def test_audit_and_subjects_commands(tmp_path):
    root = tmp_path / "gallery"
    rng = np.random.default_rng(0)
    with Gallery(root) as gallery:
        for name in ("alice", "tmp"):
            gallery.enroll(name, [SequenceInput(np.full((3, 64, 44), 255, np.uint8),
                                                rng.standard_normal((8, 4)).astype(np.float32))], model_id="m")
    with sqlite3.connect(root / "gallery.db") as conn:  # an id an older version accepted
        conn.execute("PRAGMA foreign_keys=OFF")
        for table in ("subjects", "sequences"):
            conn.execute(f"UPDATE {table} SET subject_id = ? WHERE subject_id = 'tmp'", ("a\x00b",))
    listed = runner.invoke(app, ["subjects", "list-invalid", "--gallery-dir", str(root)])
    assert listed.exit_code == 0 and "'a\\x00b'" in listed.stdout and "1 subject ids" in listed.stderr
    erased = runner.invoke(app, ["subjects", "delete", "a\\x00b", "--escaped", "--gallery-dir", str(root)])
    assert erased.exit_code == 0, erased.output
    missing = runner.invoke(app, ["subjects", "delete", "nobody", "--gallery-dir", str(root)])
    assert missing.exit_code == 2 and "not enrolled" in missing.stderr
    log = runner.invoke(app, ["audit", "--gallery-dir", str(root), "--json"])
    assert log.exit_code == 0, log.output
    lines = log.stdout.strip().splitlines()
    assert [line.split('"action": ')[1].split(",")[0] for line in lines] == [
        '"subject.enrolled"', '"subject.enrolled"', '"subject.deleted"']
    assert '"actor": "cli:' in lines[-1]
    only = runner.invoke(app, ["audit", "--gallery-dir", str(root), "--action", "subject.deleted"])
    assert only.stdout.count("\n") == 1 and "1 of 1 entries" in only.stderr
    healthy = runner.invoke(app, ["check-gallery", "--gallery-dir", str(root)])
    assert healthy.exit_code == 0 and "0 problems" in healthy.stderr
    with sqlite3.connect(root / "gallery.db") as conn:
        conn.execute("DELETE FROM audit_log")
    damaged = runner.invoke(app, ["check-gallery", "--gallery-dir", str(root)])
    assert damaged.exit_code == 1 and "audit log disagrees" in damaged.stdout

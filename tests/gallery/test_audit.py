"""gallery/audit.py: every enrollment, deletion, re-embedding and key change is appended to the audit
log in the transaction of the change (a failed change leaves no entry); deletion erases everything
biometric of the subject and the entry records it; the log is queryable with filters and pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery import (
    ApiKeyRecord,
    AuditContext,
    Gallery,
    InvalidInputError,
    SubjectExistsError,
    hash_secret,
)
from gallery.audit import DELETED, ENROLLED, KEY_ADDED, REEMBEDDED
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import ProjectionEmbedder, embedding, sequence


def test_changes_are_audited_with_who_what_and_request(gallery: Gallery, rng: np.random.Generator) -> None:
    ops = AuditContext("ops-key", "req-1")
    first = gallery.enroll("alice", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m",
                           audit_context=ops)
    gallery.enroll("alice", [sequence(rng, embedding(rng))], model_id="m", if_exists="replace",
                   audit_context=AuditContext("ops-key", "req-2"))
    with pytest.raises(SubjectExistsError):  # a refused change leaves no entry
        gallery.enroll("alice", [sequence(rng, embedding(rng))], model_id="m", if_exists="error")
    gallery.delete_subject("alice", audit_context=AuditContext("admin-key", "req-3"))
    entries, total = gallery.audit_log()
    assert total == 3 and [e.action for e in entries] == [ENROLLED, ENROLLED, DELETED]
    enrolled, replaced, deleted = entries
    assert (enrolled.actor, enrolled.request_id, enrolled.subject_id) == ("ops-key", "req-1", "alice")
    assert enrolled.details["sequence_ids"] == list(first.sequence_ids) and enrolled.details["created"] is True
    assert replaced.details["erased_sequence_ids"] == list(first.sequence_ids)
    assert deleted.details["erased_sequence_ids"] == replaced.details["sequence_ids"]
    assert deleted.actor == "admin-key" and deleted.at >= enrolled.at
    assert gallery.audit_log(namespace="other")[1] == 0


def test_deletion_erases_every_biometric_row(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    with open_gallery(root) as g:
        g.enroll("alice", [sequence(rng, embedding(rng), depth=True) for _ in range(3)], model_id="m")
        g.enroll("bob", [sequence(rng, embedding(rng))], model_id="m")
        g.delete_subject("alice")
        assert g.status().index.vectors == 1
    with sqlite3.connect(root / "gallery.db") as conn:
        for table in ("subjects", "sequences"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE subject_id = 'alice'").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE subject_id = 'alice' ORDER BY id")]
    assert actions == [ENROLLED, DELETED]


def test_reembedding_is_audited_once(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.enroll("a", [sequence(rng, embedding(rng))], model_id="old")
    report = gallery.reembed(ProjectionEmbedder("new"), audit_context=AuditContext("admin", "req-r"))
    gallery.reembed(ProjectionEmbedder("new"))  # nothing to do: no entry
    entries, _ = gallery.audit_log(action=REEMBEDDED)
    assert len(entries) == 1 and entries[0].details == {"old_model_id": "old", "new_model_id": "new",
                                                        "sequences": report.sequences}


def test_audit_log_filters_and_pages(gallery: Gallery, rng: np.random.Generator) -> None:
    for number in range(5):
        gallery.enroll(f"s{number}", [sequence(rng, embedding(rng))], model_id="m",
                       audit_context=AuditContext("even" if number % 2 == 0 else "odd", f"r{number}"))
    gallery.delete_subject("s0")
    everything, total = gallery.audit_log()
    assert total == 6 and [e.entry_id for e in everything] == sorted(e.entry_id for e in everything)
    assert gallery.audit_log(actor="even")[1] == 3 and gallery.audit_log(actor="local")[1] == 1
    assert [e.action for e in gallery.audit_log(subject_id="s0")[0]] == [ENROLLED, DELETED]
    assert gallery.audit_log(action=DELETED)[0][0].subject_id == "s0"
    assert gallery.audit_log(request_id="r3")[0][0].subject_id == "s3"
    page, total = gallery.audit_log(offset=2, limit=2)
    assert total == 6 and [e.subject_id for e in page] == ["s2", "s3"]
    middle = everything[3].at.timestamp()
    assert gallery.audit_log(since=middle)[1] + gallery.audit_log(until=middle)[1] == 6


def test_key_changes_are_audited_without_secrets(gallery: Gallery) -> None:
    secret = "s3cr3t-key-value"
    record = ApiKeyRecord("front-desk", "acme", "enroll", hash_secret(secret))
    gallery.add_api_key(record, audit_context=AuditContext("ops", "req-k"))
    entries, _ = gallery.audit_log(namespace="acme", action=KEY_ADDED)
    assert entries[0].details == {"key_name": "front-desk", "role": "enroll", "source": "api"}
    assert secret not in repr(entries) and hash_secret(secret) not in repr(entries)
    with pytest.raises(InvalidInputError):
        gallery.audit_log(namespace="acme", offset=2**63)


def test_callers_append_entries_of_their_own_actions(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.enroll("alice", [sequence(rng, embedding(rng))], model_id="m")
    entry_id = gallery.append_audit("camera.updated", namespace="default", details={"camera_id": "hall", "old": None},
                                    audit_context=AuditContext("ops", "req-c"))
    entries, total = gallery.audit_log(action="camera.updated")
    assert total == 1 and entries[0].entry_id == entry_id
    assert (entries[0].actor, entries[0].request_id, entries[0].subject_id) == ("ops", "req-c", None)
    assert entries[0].details == {"camera_id": "hall", "old": None}
    assert gallery.check() == []  # the store, the index and the log still agree: the entry means nothing to them
    for action, details in ((ENROLLED, {}), (DELETED, {}), ("", {}), ("camera.x", {"when": object()}),
                            ("camera.x", {1: "not a name"})):  # the gallery's own actions come only with their change
        with pytest.raises(InvalidInputError):
            gallery.append_audit(action, details=details)
    assert gallery.audit_log()[1] == 2

"""gallery/consistency.py (`Gallery.check`): a healthy gallery has no problems; each kind of damage --
a sequence without its embedding, a subject without sequences, an audit log that misses a change, a
stale index -- is reported; sequences older than the audit log (an upgraded gallery) are not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import ProjectionEmbedder, embedding, sequence


def build(open_gallery: OpenGallery, root: Path, rng: np.random.Generator) -> None:
    with open_gallery(root) as g:
        g.enroll("alice", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m")
        g.enroll("bob", [sequence(rng, embedding(rng))], model_id="m")
        g.enroll("alice", [sequence(rng, embedding(rng))], model_id="m", if_exists="replace")
        g.enroll("carol", [sequence(rng, embedding(rng))], model_id="m")
        g.delete_subject("carol")
        g.enroll("dave", [sequence(rng, embedding(rng))], model_id="m", namespace="other")
        g.reembed(ProjectionEmbedder("m2"), namespace="other")
        assert g.check() == []


def damage(open_gallery: OpenGallery, root: Path, sql: str) -> list[str]:
    with sqlite3.connect(root / "gallery.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(sql)
    with open_gallery(root) as g:
        return g.check()


def test_each_kind_of_damage_is_reported(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    cases = {
        "DELETE FROM embeddings WHERE sequence_id = (SELECT MAX(id) FROM sequences WHERE subject_id = 'bob')":
            "without an embedding",
        "INSERT INTO subjects VALUES ('default', 'ghost', 'ghost', '{}', 0, 0)": "subjects without sequences",
        "DELETE FROM audit_log WHERE subject_id = 'bob'": "stored but never audited",
        "DELETE FROM audit_log WHERE action = 'subject.deleted'": "audited but not stored",
    }
    for number, (sql, expected) in enumerate(cases.items()):
        root = tmp_path / f"g{number}"
        build(open_gallery, root, rng)
        problems = damage(open_gallery, root, sql)
        assert any(expected in p for p in problems), (sql, problems)


def test_an_upgraded_gallery_checks_only_what_was_audited(open_gallery: OpenGallery, tmp_path: Path,
                                                          rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    with open_gallery(root) as g:
        g.enroll("before", [sequence(rng, embedding(rng))], model_id="m")
    with sqlite3.connect(root / "gallery.db") as conn:  # as the first release left it: no audit log
        conn.execute("DROP TABLE audit_log")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_gallery(root) as g:
        g.enroll("after", [sequence(rng, embedding(rng))], model_id="m")
        g.delete_subject("before")
        assert g.check() == []

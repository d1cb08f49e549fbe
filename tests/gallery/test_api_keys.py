"""gallery/api_keys.py: stored keys (name, namespace, role, sha256 -- never a secret), their checks, the
last-admin rule, the operator's keys synced with every difference audited, and the schema upgrade that
added them (a version-1 gallery opens, is upgraded in place, and keeps its data)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    ApiKeyNotRemovableError,
    ApiKeyRecord,
    Gallery,
    InvalidInputError,
    hash_secret,
    role_allows,
)
from gallery.audit import KEY_ADDED, KEY_CHANGED, KEY_REMOVED
from gallery.store import SCHEMA_VERSION
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import embedding, sequence


def record(name: str, namespace: str = "acme", role: str = "admin", secret: str | None = None,
           source: str = "api") -> ApiKeyRecord:
    return ApiKeyRecord(name, namespace, role, hash_secret(secret or f"secret-of-{name}"), source)  # type: ignore[arg-type]


def test_roles_include_the_ones_before() -> None:
    assert role_allows("admin", "read") and role_allows("admin", "enroll") and role_allows("enroll", "read")
    assert not role_allows("read", "enroll") and not role_allows("enroll", "admin")


@pytest.mark.parametrize("bad", [
    record("bad name"), record("x", namespace="Bad/NS"), record("x", role="root"),
    ApiKeyRecord("x", "acme", "admin", "not-a-hash"), record("x", source="web"),
])
def test_invalid_records_are_refused(gallery: Gallery, bad: ApiKeyRecord) -> None:
    with pytest.raises(InvalidInputError):
        gallery.add_api_key(bad)
    assert gallery.api_keys() == []


def test_names_and_secrets_are_unique_and_removal_is_scoped(gallery: Gallery) -> None:
    gallery.add_api_key(record("a1"))
    gallery.add_api_key(record("a2", role="read"))
    with pytest.raises(ApiKeyExistsError):
        gallery.add_api_key(record("a1", namespace="other"))
    with pytest.raises(ApiKeyExistsError):
        gallery.add_api_key(record("a3", secret="secret-of-a1"))
    with pytest.raises(ApiKeyNotFoundError):  # another namespace's admin cannot see it
        gallery.remove_api_key("a2", namespace="other")
    with pytest.raises(ApiKeyNotRemovableError):  # the gallery's last admin key
        gallery.remove_api_key("a1", namespace="acme")
    gallery.remove_api_key("a2", namespace="acme")
    assert [k.name for k in gallery.api_keys("acme")] == ["a1"]


def test_sync_makes_the_operator_keys_exact_and_audits_each_change(gallery: Gallery) -> None:
    version = gallery.api_keys_version()
    gallery.add_api_key(record("made-over-http", role="read"))
    assert gallery.sync_configured_keys([record("ops", source="file"), record("env-1", "legacy", source="env")]) \
        == ["added ops (admin, file)", "added env-1 (admin, env)"]
    assert gallery.api_keys_version() > version
    assert gallery.sync_configured_keys([record("ops", source="file"), record("env-1", "legacy", source="env")]) == []
    changes = gallery.sync_configured_keys([record("ops", role="enroll", source="file")])
    assert changes == ["removed env-1 (admin, env)", "changed ops: role admin -> enroll"]
    assert {k.name for k in gallery.api_keys()} == {"ops", "made-over-http"}  # HTTP-made keys stay
    actions = [(e.action, e.details["key_name"]) for e in gallery.audit_log(namespace="acme")[0]]
    assert actions == [(KEY_ADDED, "made-over-http"), (KEY_ADDED, "ops"), (KEY_CHANGED, "ops")]
    assert [e.action for e in gallery.audit_log(namespace="legacy")[0]] == [KEY_ADDED, KEY_REMOVED]
    with pytest.raises(InvalidInputError):  # two configured names, one secret
        gallery.sync_configured_keys([record("x", secret="s", source="file"), record("y", secret="s", source="file")])


def test_a_version_1_gallery_is_upgraded_in_place(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    with open_gallery(root) as g:
        g.enroll("old", [sequence(rng, embedding(rng))], model_id="m")
    with sqlite3.connect(root / "gallery.db") as conn:  # what the first release wrote
        conn.execute("DROP TABLE audit_log")
        conn.execute("DROP TABLE api_keys")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_gallery(root) as g:
        assert g.get_subject("old").sequence_count == 1
        g.delete_subject("old")
        assert g.audit_log()[0][0].subject_id == "old"
    with sqlite3.connect(root / "gallery.db") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="schema 99"):
        open_gallery(root)

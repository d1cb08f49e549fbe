"""Tenancy end to end over HTTP: galleries are named, keys (hashed, from the keys file, the environment
or POST /keys) open one gallery with one role; rotation keeps the gallery; roles are enforced; turning
keys on over existing data is explicit; legacy GAITID_API_KEYS galleries stay reachable; errors never
name another tenant's namespace; a broken keys file fails closed."""

from __future__ import annotations

import logging
import sqlite3

from service.auth import namespace_for_key
from tests.service.conftest import clip, error_of, serve
from tests.service.keyfile import key, write_keys_file


def enroll(client, subject: str, secret: str, **data):
    return client.post("/enroll", data={"subject_id": subject, **data}, files={"video": clip(subject)},
                       headers=key(secret))


def test_key_rotation_over_http_keeps_the_gallery(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("ops", "acme", "admin", "ops-secret"))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        made = client.post("/keys", json={"name": "app-2026-01", "role": "enroll"}, headers=key("ops-secret"))
        assert made.status_code == 201, made.text
        old_secret = made.json()["secret"]
        assert enroll(client, "alice", old_secret).status_code == 201
        # Rotation: a second key for the same gallery, both valid, then the old one removed.
        new_secret = client.post("/keys", json={"name": "app-2026-02", "role": "enroll"},
                                 headers=key("ops-secret")).json()["secret"]
        for secret in (old_secret, new_secret):
            assert [s["subject_id"] for s in client.get("/subjects", headers=key(secret)).json()["subjects"]] == ["alice"]
        removed = client.delete("/keys/app-2026-01", headers=key("ops-secret"))
        assert removed.status_code == 200 and removed.json()["name"] == "app-2026-01"
        gone = client.get("/subjects", headers=key(old_secret))
        assert gone.status_code == 401 and error_of(gone) == "invalid_api_key"
        assert client.get("/subjects/alice", headers=key(new_secret)).json()["subject_id"] == "alice"
        assert enroll(client, "bob", new_secret).status_code == 201
        listed = client.get("/keys", headers=key("ops-secret")).json()["keys"]
        assert [(k["name"], k["role"], k["source"]) for k in listed] == [("app-2026-02", "enroll", "api"),
                                                                          ("ops", "admin", "file")]
        assert all("secret" not in k and "sha256" not in k for k in listed)
        # Every key change is audited under the admin key's name, with the request id of the change.
        audit = client.get("/audit", params={"action": "key.removed"}, headers=key("ops-secret")).json()
        assert audit["total"] == 1 and audit["entries"][0]["actor"] == "ops"
        assert audit["entries"][0]["request_id"] == removed.headers["X-Request-ID"]
    # The secret is stored nowhere: only its hash.
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert new_secret.encode() not in path.read_bytes()


def test_key_rotation_in_the_keys_file_keeps_the_gallery(tmp_path, tiny_model, fake):
    data = tmp_path / "data"
    keys = tmp_path / "keys.toml"
    write_keys_file(keys, ("cam-v1", "lobby", "admin", "secret-1"))
    with serve(data, tiny_model, fake, keys_file=keys) as client:
        assert enroll(client, "alice", "secret-1").status_code == 201
    write_keys_file(keys, ("cam-v1", "lobby", "admin", "secret-1"), ("cam-v2", "lobby", "admin", "secret-2"))
    with serve(data, tiny_model, fake, keys_file=keys) as client:
        for secret in ("secret-1", "secret-2"):
            assert client.get("/subjects", headers=key(secret)).json()["total"] == 1
    write_keys_file(keys, ("cam-v2", "lobby", "admin", "secret-2"))
    with serve(data, tiny_model, fake, keys_file=keys) as client:
        assert client.get("/subjects", headers=key("secret-1")).status_code == 401
        assert client.get("/subjects/alice", headers=key("secret-2")).status_code == 200
        entries = client.get("/audit", headers=key("secret-2")).json()["entries"]
    assert [(e["action"], e["details"].get("key_name")) for e in entries if e["action"].startswith("key.")] == [
        ("key.added", "cam-v1"), ("key.added", "cam-v2"), ("key.removed", "cam-v1")]
    assert {e["actor"] for e in entries if e["action"].startswith("key.")} == {"operator"}


def test_roles_are_enforced_over_http(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("viewer", "acme", "read", "r"), ("desk", "acme", "enroll", "e"),
                           ("boss", "acme", "admin", "a"))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        refused = enroll(client, "alice", "r")
        assert refused.status_code == 403 and error_of(refused) == "forbidden"
        assert refused.json()["details"] == {"role": "read", "needed": "enroll"}
        assert fake.calls == 0
        assert enroll(client, "alice", "e").status_code == 201
        assert client.post("/identify", files={"video": clip("alice")}, headers=key("r")).status_code == 200
        assert client.get("/subjects/alice", headers=key("r")).status_code == 200
        assert client.get("/gallery", headers=key("r")).json()["role"] == "read"
        for secret in ("r", "e"):  # only admins erase, re-embed, read the audit log, manage keys
            for method, path in (("delete", "/subjects/alice"), ("post", "/gallery/reembed"), ("get", "/audit"),
                                 ("get", "/keys"), ("delete", "/admin/subject?subject_id=alice"),
                                 ("get", "/admin/subject-id-problems")):
                response = client.request(method, path, headers=key(secret))
                assert response.status_code == 403 and error_of(response) == "forbidden", (secret, method, path)
            made = client.post("/keys", json={"name": "sneaky", "role": "admin"}, headers=key(secret))
            assert made.status_code == 403
        assert client.get("/subjects", headers=key("r")).json()["total"] == 1  # nothing was erased
        deleted = client.delete("/subjects/alice", headers=key("a"))
        assert deleted.status_code == 200
        erasure = client.get("/audit", params={"action": "subject.deleted"}, headers=key("a")).json()["entries"]
        assert erasure[0]["actor"] == "boss" and erasure[0]["subject_id"] == "alice"
        assert erasure[0]["request_id"] == deleted.headers["X-Request-ID"]


def test_galleries_are_isolated_and_errors_never_name_namespaces(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("a-admin", "tenant-a", "admin", "ka"),
                           ("b-admin", "tenant-b", "admin", "kb"))
    legacy_secret = "legacy-key"
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys, api_keys=legacy_secret) as client:
        assert enroll(client, "alice", "ka").status_code == 201
        assert enroll(client, "alice", legacy_secret).status_code == 201
        for secret in ("kb", legacy_secret):
            missing = client.get("/subjects/nobody", headers=key(secret))
            assert missing.status_code == 404 and "your gallery" in missing.json()["message"]
        assert client.get("/subjects", headers=key("kb")).json()["total"] == 0
        assert client.delete("/keys/a-admin", headers=key("kb")).status_code == 404  # not b's to see
        fake.model_id = "fake-model-2"
        mismatch = client.post("/identify", files={"video": clip("alice")}, headers=key(legacy_secret))
        assert mismatch.status_code == 409
        for response in (missing, mismatch):
            text = response.text
            assert namespace_for_key(legacy_secret.encode()) not in text and "tenant-" not in text


def test_legacy_environment_keys_keep_their_galleries(tmp_path, tiny_model, fake):
    """A gallery made by GAITID_API_KEYS (namespace sha256(key)[:16]) stays reachable: by the same env
    key, and by a keys-file entry naming that namespace -- the documented migration."""
    data = tmp_path / "data"
    with serve(data, tiny_model, fake, api_keys="old-key") as client:
        assert enroll(client, "alice", "old-key").status_code == 201
    legacy_namespace = namespace_for_key(b"old-key")
    keys = write_keys_file(tmp_path / "keys.toml", ("migrated", legacy_namespace, "admin", "brand-new-key"))
    with serve(data, tiny_model, fake, keys_file=keys) as client:
        assert client.get("/subjects/alice", headers=key("brand-new-key")).status_code == 200
        assert client.get("/gallery", headers=key("brand-new-key")).json()["gallery"] == legacy_namespace
        assert client.get("/subjects", headers=key("old-key")).status_code == 401


def test_turning_keys_on_over_a_single_user_gallery_is_explicit(tmp_path, tiny_model, fake, caplog):
    data = tmp_path / "data"
    with serve(data, tiny_model, fake) as client:  # no keys: the single-user default
        assert client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")}).status_code == 201
    keys = write_keys_file(tmp_path / "keys.toml", ("ops", "acme", "admin", "k"))
    with caplog.at_level(logging.WARNING, logger="gaitid.service"), serve(data, tiny_model, fake,
                                                                          keys_file=keys) as client:
        ready = {c["name"]: c for c in client.get("/readyz").json()["checks"]}
        assert client.get("/subjects", headers=key("k")).json()["total"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'default' (1 subjects)" in w and 'gallery = "default"' in w for w in warnings), warnings
    assert "1 galleries with subjects are opened by no key" in ready["api_keys"]["detail"]
    assert "default" not in ready["api_keys"]["detail"]  # /readyz is public: counts only
    # Mapping a key to the default gallery is the explicit way to keep it.
    write_keys_file(keys, ("ops", "default", "admin", "k"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gaitid.service"), serve(data, tiny_model, fake,
                                                                          keys_file=keys) as client:
        assert client.get("/subjects", headers=key("k")).json()["total"] == 1
    assert not [r for r in caplog.records if "hidden" in r.getMessage()]


def test_a_broken_keys_file_fails_closed(tmp_path, tiny_model, fake):
    keys = tmp_path / "keys.toml"
    bad_gallery = '[[keys]]\nname="a"\ngallery="Bad/Name"\nrole="admin"\n' + f'sha256="{"0" * 64}"\n'
    for text in ('[[keys]]\nname = "x"\n', "not toml [", bad_gallery):
        keys.write_text(text)
        with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
            for method, path in (("get", "/subjects"), ("post", "/identify")):
                response = client.request(method, path, headers=key("anything"))
                assert response.status_code == 503 and error_of(response) == "keys_unavailable"
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert not {c["name"]: c for c in ready.json()["checks"]}["api_keys"]["ok"]
    assert fake.calls == 0


def test_keys_are_hashed_at_rest_and_refused_when_repeated(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("ops", "acme", "admin", "ops-secret"))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        made = client.post("/keys", json={"name": "ops", "role": "read"}, headers=key("ops-secret"))
        assert made.status_code == 409 and error_of(made) == "key_exists"
        for body in ({"name": "bad name", "role": "read"}, {"name": "x", "role": "root"}, {"name": "", "role": "read"}):
            assert client.post("/keys", json=body, headers=key("ops-secret")).status_code == 422
        operator_key = client.delete("/keys/ops", headers=key("ops-secret"))
        assert operator_key.status_code == 409 and error_of(operator_key) == "key_not_removable"
        second = client.post("/keys", json={"name": "ops-2", "role": "admin"}, headers=key("ops-secret")).json()
        with sqlite3.connect(tmp_path / "data" / "gallery" / "gallery.db") as conn:
            stored = conn.execute("SELECT name, key_sha256 FROM api_keys ORDER BY name").fetchall()
        assert [name for name, _ in stored] == ["ops", "ops-2"]
        assert second["secret"] not in repr(stored) and all(len(digest) == 64 for _, digest in stored)
        assert client.delete("/keys/ops-2", headers=key(second["secret"])).status_code == 200  # its own key
        assert client.get("/keys", headers=key(second["secret"])).status_code == 401


def test_without_keys_everyone_is_admin_of_the_default_gallery(client):
    assert client.get("/gallery").json()["gallery"] == "default"
    assert client.get("/gallery").json()["role"] == "admin"
    made = client.post("/keys", json={"name": "first", "role": "admin"})
    assert made.status_code == 409 and error_of(made) == "keys_off"

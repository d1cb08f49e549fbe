"""service/auth.py: API keys guard every gallery route, and each key has its own namespace."""

from __future__ import annotations

import hashlib

import pytest

from service.auth import match_api_key, namespace_for_key
from tests.service.conftest import clip, error_of, serve


def test_api_keys_guard_every_gallery_route(tmp_path, tiny_model, fake):
    with serve(tmp_path, tiny_model, fake, api_keys="key-a, key-b") as client:
        for method, path in (("get", "/subjects"), ("get", "/subjects/x"), ("delete", "/subjects/x")):
            missing = client.request(method, path)
            assert missing.status_code == 401 and error_of(missing) == "missing_api_key"
            assert missing.headers["www-authenticate"] == "X-API-Key"
            wrong = client.request(method, path, headers={"X-API-Key": "key-c"})
            assert wrong.status_code == 401 and error_of(wrong) == "invalid_api_key"
        for path in ("/enroll", "/identify"):
            wrong = client.post(path, data={"subject_id": "a"}, files={"video": clip("a")},
                                headers={"X-API-Key": "key-a "})
            assert wrong.status_code == 401 and error_of(wrong) == "invalid_api_key"
        assert fake.calls == 0
        # Health, readiness and metrics stay open (probes and scrapers carry no key).
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_each_key_has_its_own_gallery(tmp_path, tiny_model, fake):
    a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    with serve(tmp_path, tiny_model, fake, api_keys="key-a,key-b") as client:
        assert client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")},
                           headers=a).status_code == 201
        assert client.get("/subjects", headers=a).json()["total"] == 1
        assert client.get("/subjects", headers=b).json()["total"] == 0
        assert client.get("/subjects/alice", headers=b).status_code == 404
        assert client.delete("/subjects/alice", headers=b).status_code == 404
        seen_by_b = client.post("/identify", files={"video": clip("alice")}, headers=b).json()["tracks"][0]
        assert seen_by_b["unknown"] and seen_by_b["candidates"] == []
        # b may use the same subject id for another person without touching a's
        client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("other")}, headers=b)
        seen_by_a = client.post("/identify", files={"video": clip("alice")}, headers=a).json()["tracks"][0]
        assert seen_by_a["subject_id"] == "alice" and seen_by_a["similarity"] == pytest.approx(1.0, abs=1e-5)
        namespaces = set(client.app.state.gaitid.gallery.namespaces())
    assert namespaces == {namespace_for_key(b"key-a"), namespace_for_key(b"key-b")}
    assert "key-a" not in "".join(namespaces)  # the key itself is never stored


def test_key_matching_checks_every_key():
    keys = (b"alpha", b"beta", b"gamma")
    assert match_api_key(b"beta", keys) == b"beta"
    assert match_api_key(b"bet", keys) is None and match_api_key(b"", keys) is None
    assert namespace_for_key(b"alpha") == namespace_for_key(b"alpha") != namespace_for_key(b"beta")
    assert len(namespace_for_key(b"alpha")) == 16


def test_namespaces_of_existing_galleries_keep_their_names():
    """Galleries made by earlier releases hold each key's data under these names: they must not change."""
    assert namespace_for_key(b"key-a") == hashlib.sha256(b"key-a").hexdigest()[:16] == "f10f781241e22466"

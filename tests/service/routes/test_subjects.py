"""GET /subjects, GET and DELETE /subjects/{id}: the caller's enrolled subjects (fake pipeline)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.service.conftest import clip, error_of


def test_list_get_and_delete(client):
    client.post("/enroll", data={"subject_id": "alice", "metadata": '{"team": "blue"}'}, files={"video": clip("alice")})
    client.post("/enroll", data={"subject_id": "bob"}, files={"video": clip("bob")})
    listing = client.get("/subjects").json()
    assert listing["total"] == 2 and [s["subject_id"] for s in listing["subjects"]] == ["alice", "bob"]
    detail = client.get("/subjects/alice").json()
    assert detail["metadata"] == {"team": "blue"} and len(detail["sequences"]) == 1

    deleted = client.delete("/subjects/alice")
    assert deleted.status_code == 200 and deleted.json() == {"subject_id": "alice", "deleted_sequences": 1,
                                                             "redacted_rescore_results": None}  # no re-scoring state
    assert client.get("/subjects/alice").status_code == 404
    assert client.delete("/subjects/alice").status_code == 404
    after = client.post("/identify", files={"video": clip("alice")}).json()["tracks"][0]
    assert after["subject_id"] != "alice" and all(c["subject_id"] != "alice" for c in after["candidates"])


def test_unicode_subject_ids_round_trip_through_urls(client):
    """Ids of any script, with joiners and emoji sequences, come back unchanged through a URL path
    (percent-encoded UTF-8, what every HTTP client sends); a decomposed spelling finds the NFC one."""
    subjects = ["Zoë", "نسرین\u200cدخت", "👩\u200d💻", "user@example.com", "team:blue-7"]
    for subject in subjects:
        assert client.post("/enroll", data={"subject_id": subject}, files={"video": clip(subject)}).status_code == 201
    for subject in subjects:
        assert client.get(f"/subjects/{quote(subject, safe='')}").json()["subject_id"] == subject
    assert client.get("/subjects/Zoe%CC%88").json()["subject_id"] == "Zoë"  # NFD in the URL
    assert client.delete("/subjects/Zo%C3%AB").json() == {"subject_id": "Zoë", "deleted_sequences": 1,
                                                          "redacted_rescore_results": None}
    assert sorted(s["subject_id"] for s in client.get("/subjects").json()["subjects"]) == sorted(subjects[1:])


def test_ids_no_url_can_carry_are_refused(client, fake):
    """The issue's cases: each was accepted, then unreachable by any ordinary HTTP client."""
    for subject in ("..", ".", "a/b/c", "%2e%2e", "a%00b", "a\x00b", "a b", "a\\b", "\u200calice"):
        response = client.post("/enroll", data={"subject_id": subject}, files={"video": clip("x")})
        assert response.status_code == 422 and error_of(response) == "invalid_subject_id", subject
    assert fake.calls == 0 and client.get("/subjects").json()["total"] == 0
    assert client.get("/subjects/a/b/c").status_code == 404  # one path segment is one id


@pytest.mark.parametrize("params", [
    {"offset": 9223372036854775808}, {"offset": 2**63 - 1}, {"offset": -1}, {"offset": 10**30},
    {"limit": 2**64}, {"limit": 1001}, {"limit": -5}, {"offset": "1e3"},
])
def test_pagination_out_of_bounds_is_422(client, params):
    response = client.get("/subjects", params=params)
    assert response.status_code == 422 and error_of(response) == "invalid_request"


def test_deep_metadata_of_older_versions_does_not_break_reads(client):
    client.post("/enroll", data={"subject_id": "deep"}, files={"video": clip("deep")})
    database = client.app.state.gaitid.gallery.store.connection()
    database.execute("UPDATE subjects SET metadata = ?", ('{"a":' * 300 + "1" + "}" * 300,))  # as stored before
    for path in ("/subjects", "/subjects/deep"):
        response = client.get(path)
        assert response.status_code == 200, path
    assert "_unreadable" in client.get("/subjects/deep").json()["metadata"]


def test_subject_list_pages(client):
    for name in ("c", "a", "b"):
        client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
    page = client.get("/subjects", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and [s["subject_id"] for s in page["subjects"]] == ["b"]
    assert client.get("/subjects", params={"limit": 0}).status_code == 422

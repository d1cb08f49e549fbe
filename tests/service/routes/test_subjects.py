"""GET /subjects, GET and DELETE /subjects/{id}: the caller's enrolled subjects (fake pipeline)."""

from __future__ import annotations

from tests.service.conftest import clip


def test_list_get_and_delete(client):
    client.post("/enroll", data={"subject_id": "alice", "metadata": '{"team": "blue"}'}, files={"video": clip("alice")})
    client.post("/enroll", data={"subject_id": "bob"}, files={"video": clip("bob")})
    listing = client.get("/subjects").json()
    assert listing["total"] == 2 and [s["subject_id"] for s in listing["subjects"]] == ["alice", "bob"]
    detail = client.get("/subjects/alice").json()
    assert detail["metadata"] == {"team": "blue"} and len(detail["sequences"]) == 1

    deleted = client.delete("/subjects/alice")
    assert deleted.status_code == 200 and deleted.json() == {"subject_id": "alice", "deleted_sequences": 1}
    assert client.get("/subjects/alice").status_code == 404
    assert client.delete("/subjects/alice").status_code == 404
    after = client.post("/identify", files={"video": clip("alice")}).json()["tracks"][0]
    assert after["subject_id"] != "alice" and all(c["subject_id"] != "alice" for c in after["candidates"])


def test_subject_ids_with_slashes_and_unicode(client):
    for subject in ("team/alice", "Zoë"):
        assert client.post("/enroll", data={"subject_id": subject}, files={"video": clip(subject)}).status_code == 201
    assert client.get("/subjects/team/alice").json()["subject_id"] == "team/alice"
    assert client.get("/subjects/Zo%C3%AB").json()["subject_id"] == "Zoë"
    assert client.delete("/subjects/team%2Falice").status_code == 200
    assert [s["subject_id"] for s in client.get("/subjects").json()["subjects"]] == ["Zoë"]


def test_subject_list_pages(client):
    for name in ("c", "a", "b"):
        client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)})
    page = client.get("/subjects", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and [s["subject_id"] for s in page["subjects"]] == ["b"]
    assert client.get("/subjects", params={"limit": 0}).status_code == 422

"""POST /enroll: one person track of a clip into the caller's gallery (fake pipeline)."""

from __future__ import annotations

import pytest

from tests.service.conftest import clip, error_of, gallery_sequences


def test_enroll_answers_the_subject_and_its_track(client, fake):
    enrolled = client.post("/enroll", data={"subject_id": "alice", "display_name": "Alice A.",
                                            "metadata": '{"team": "blue"}'}, files={"video": clip("alice")})
    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.json()
    assert body["subject_id"] == "alice" and body["display_name"] == "Alice A." and body["created"] is True
    assert body["track"]["track_id"] == 1 and body["candidate_tracks"] == 1 and body["model_id"] == fake.model_id
    assert body["sequence_count"] == 1 and body["track"]["frames"] == 20
    detail = client.get("/subjects/alice").json()
    assert detail["metadata"] == {"team": "blue"} and len(detail["sequences"]) == 1
    assert detail["sequences"][0]["metadata"]["track_id"] == 1


def test_enroll_append_replace_and_error(client):
    assert client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a1")}).json()["sequence_count"] == 1
    appended = client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a2")}).json()
    assert appended["created"] is False and appended["sequence_count"] == 2
    replaced = client.post("/enroll", data={"subject_id": "a", "if_exists": "replace"}, files={"video": clip("a3")})
    assert replaced.json()["sequence_count"] == 1 and len(replaced.json()["replaced_sequence_ids"]) == 2
    refused = client.post("/enroll", data={"subject_id": "a", "if_exists": "error"}, files={"video": clip("a4")})
    assert refused.status_code == 409 and error_of(refused) == "subject_exists"
    assert gallery_sequences(client) == 1


def test_enroll_several_tracks_needs_a_choice(client):
    response = client.post("/enroll", data={"subject_id": "pair"}, files={"video": clip("p", "q", "r")})
    assert response.status_code == 409 and error_of(response) == "multiple_tracks"
    tracks = response.json()["details"]["tracks"]
    assert [t["track_id"] for t in tracks] == [1, 2, 3]
    assert set(tracks[0]) == {"track_id", "frames", "first_frame", "last_frame", "median_box", "thumbnail_url",
                              "quality"}
    assert gallery_sequences(client) == 0  # nothing enrolled

    unknown = client.post("/enroll", data={"subject_id": "pair", "track_id": "9"}, files={"video": clip("p", "q")})
    assert unknown.status_code == 422 and error_of(unknown) == "track_not_found"
    assert gallery_sequences(client) == 0

    chosen = client.post("/enroll", data={"subject_id": "pair", "track_id": "2"}, files={"video": clip("p", "q")})
    assert chosen.status_code == 201 and chosen.json()["track"]["track_id"] == 2
    # The enrolled track is q's: identifying q finds the subject, p does not.
    tracks = client.post("/identify", files={"video": clip("q", "p")}).json()["tracks"]
    assert tracks[0]["subject_id"] == "pair" and tracks[1]["subject_id"] is None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"subject_id": "ok", "metadata": "{not json"}, "invalid_metadata"),
        ({"subject_id": "ok", "metadata": "[1, 2]"}, "invalid_metadata"),
        ({"subject_id": " padded "}, "invalid_subject_id"),
        ({"subject_id": "x" * 129}, "invalid_request"),
        ({}, "invalid_request"),
        ({"subject_id": "ok", "if_exists": "merge"}, "invalid_request"),
    ],
)
def test_enroll_rejects_bad_fields_before_running_the_pipeline(client, fake, data, code):
    response = client.post("/enroll", data=data, files={"video": clip("a")})
    assert response.status_code == 422 and error_of(response) == code
    assert fake.calls == 0 and gallery_sequences(client) == 0


DEEP = '{"a":' * 1_000 + "1" + "}" * 1_000
MIDDLE = '{"a":' * 300 + "1" + "}" * 300


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"subject_id": "ok", "metadata": DEEP}, 422, "invalid_metadata"),  # was a 500 (RecursionError)
        ({"subject_id": "ok", "metadata": MIDDLE}, 422, "invalid_metadata"),  # was stored, then every read 500
        ({"subject_id": "ok", "metadata": "[" * 100_000}, 422, "invalid_metadata"),
        ({"subject_id": "ok", "metadata": '{"x": "' + "y" * 70_000 + '"}'}, 422, "invalid_metadata"),
        ({"subject_id": "ok", "metadata": '{"x": NaN}'}, 422, "invalid_metadata"),
        ({"subject_id": "ok", "metadata": '{"s": "\\ud800"}'}, 422, "invalid_metadata"),
        ({"subject_id": "ok", "track_id": "0"}, 422, "invalid_request"),
        ({"subject_id": "ok", "track_id": "-1"}, 422, "invalid_request"),
        ({"subject_id": "ok", "track_id": str(2**63)}, 422, "invalid_request"),
        ({"subject_id": "ok", "track_id": "1000001"}, 422, "invalid_request"),
        ({"subject_id": "ok", "display_name": "bell\x07"}, 422, "invalid_input"),
        ({"subject_id": "a/b/c"}, 422, "invalid_subject_id"),
    ],
)
def test_cheap_checks_run_before_the_pipeline(client, fake, data, status, code):
    response = client.post("/enroll", data=data, files={"video": clip("a")})
    assert response.status_code == status and error_of(response) == code, response.text
    assert fake.calls == 0 and gallery_sequences(client) == 0


def test_existing_subject_and_other_model_are_refused_before_the_pipeline(client, fake):
    assert client.post("/enroll", data={"subject_id": "a"}, files={"video": clip("a")}).status_code == 201
    calls = fake.calls
    refused = client.post("/enroll", data={"subject_id": "a", "if_exists": "error"}, files={"video": clip("a")})
    assert refused.status_code == 409 and error_of(refused) == "subject_exists"
    assert "your gallery" in refused.json()["message"] and "default" not in refused.json()["message"]
    fake.model_id = "fake-model-2"
    for route in ("/enroll", "/identify"):
        mismatch = client.post(route, data={"subject_id": "b"}, files={"video": clip("b")})
        assert mismatch.status_code == 409 and error_of(mismatch) == "model_mismatch"
    empty = client.post("/enroll", data={"subject_id": "b"}, files={"video": ("empty.avi", b"", "video/x-msvideo")})
    assert empty.status_code == 415
    assert fake.calls == calls and gallery_sequences(client) == 1


def test_null_in_optional_form_fields_means_not_given(client, fake):
    """What OpenAPI clients send for a nullable field: the text `null`."""
    enrolled = client.post("/enroll", data={"subject_id": "alice", "display_name": "null", "metadata": "null",
                                            "track_id": "null"}, files={"video": clip("alice")})
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["display_name"] == "alice"
    identified = client.post("/identify", data={"top_k": "null", "threshold": "null"}, files={"video": clip("alice")})
    assert identified.status_code == 200, identified.text
    assert identified.json()["top_k"] == 5


def test_enrollment_is_audited_with_the_request_id(client):
    enrolled = client.post("/enroll", data={"subject_id": "alice"}, files={"video": clip("alice")})
    entries = client.get("/audit").json()["entries"]
    assert [(e["action"], e["subject_id"], e["actor"]) for e in entries] == [("subject.enrolled", "alice", "anonymous")]
    assert entries[0]["request_id"] == enrolled.headers["X-Request-ID"]
    assert entries[0]["details"]["sequence_ids"] == [enrolled.json()["sequence_id"]]

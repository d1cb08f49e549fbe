"""Camera changes in the audit log (service.cameras, service.routers.cameras, GET /audit): PUT, DELETE and
POST .../background each leave one entry with who (the key's name), the request id and the settings
before and after, found with GET /audit's action filter; refused changes (role, unknown camera or
background) leave none; a change the log cannot record is not made (the registry audits first)."""

from __future__ import annotations

import io

import pytest

from service.cameras import CAMERA_ACTIONS, CameraRegistry, CameraSettings
from tests.service.conftest import error_of, serve, walking_clip
from tests.service.keyfile import key, write_keys_file

ADMIN, ENROLLER, READER = "secret-a" * 4, "secret-e" * 4, "secret-r" * 4


@pytest.fixture
def keyed(tmp_path, tiny_model, fake):
    """The service with keys of gallery acme: admin-a (admin), desk-e (enroll), viewer-r (read)."""
    keys = write_keys_file(tmp_path / "keys.toml", ("admin-a", "acme", "admin", ADMIN),
                           ("desk-e", "acme", "enroll", ENROLLER), ("viewer-r", "acme", "read", READER))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        yield client


@pytest.fixture(scope="module")
def empty_scene() -> bytes:
    return walking_clip(frames=10, people=0)


def camera_entries(client, action: str | None = None) -> list[dict]:
    """The camera entries of the admin's gallery, oldest first (one action, or all of CAMERA_ACTIONS)."""
    actions = [action] if action else CAMERA_ACTIONS
    entries = []
    for name in actions:
        page = client.get("/audit", params={"action": name}, headers=key(ADMIN))
        assert page.status_code == 200, page.text
        entries += page.json()["entries"]
    return sorted(entries, key=lambda e: e["entry_id"])


def test_put_background_and_delete_are_audited_with_old_and_new_settings(keyed, empty_scene):
    created = keyed.put("/cameras/hall", json={"rotation": 90}, headers=key(ADMIN))
    updated = keyed.put("/cameras/hall", json={"rotation": 180, "roi": [0.1, 0.0, 0.9, 1.0]}, headers=key(ADMIN))
    background = keyed.post("/cameras/hall/background", files={"video": ("empty.avi", empty_scene)},
                            headers=key(ADMIN))
    deleted = keyed.delete("/cameras/hall", headers=key(ADMIN))
    assert (created.status_code, updated.status_code, background.status_code, deleted.status_code) == \
           (201, 200, 200, 200)
    clip_id = background.json()["background"]

    (made,) = camera_entries(keyed, "camera.created")
    assert (made["actor"], made["request_id"], made["subject_id"]) == ("admin-a", created.headers["X-Request-ID"], None)
    assert made["details"] == {"camera_id": "hall", "old": None,
                               "new": {"rotation": 90, "roi": None, "background": None},
                               "changed": ["rotation"]}  # from no camera, i.e. the server's defaults

    (changed,) = camera_entries(keyed, "camera.updated")
    assert changed["actor"] == "admin-a" and changed["request_id"] == updated.headers["X-Request-ID"]
    assert changed["details"] == {"camera_id": "hall",
                                  "old": {"rotation": 90, "roi": None, "background": None},
                                  "new": {"rotation": 180, "roi": [0.1, 0.0, 0.9, 1.0], "background": None},
                                  "changed": ["rotation", "roi"]}

    (scene,) = camera_entries(keyed, "camera.background")
    assert scene["request_id"] == background.headers["X-Request-ID"]
    assert scene["details"]["old"]["background"] is None and scene["details"]["new"] == {
        "rotation": 180, "roi": [0.1, 0.0, 0.9, 1.0], "background": clip_id}
    assert scene["details"]["changed"] == ["background"]

    (gone,) = camera_entries(keyed, "camera.deleted")
    assert gone["request_id"] == deleted.headers["X-Request-ID"]
    assert gone["details"] == {"camera_id": "hall", "new": None,
                               "old": {"rotation": 180, "roi": [0.1, 0.0, 0.9, 1.0], "background": clip_id},
                               "changed": ["rotation", "roi", "background"]}

    # In the log's order, beside the gallery's own entries (the configured keys, synced at start).
    log = keyed.get("/audit", headers=key(ADMIN)).json()["entries"]
    assert [e["action"] for e in log] == ["key.added"] * 3 + [
        "camera.created", "camera.updated", "camera.background", "camera.deleted"]
    refused = keyed.get("/audit", params={"action": "camera.renamed"}, headers=key(ADMIN))
    assert refused.status_code == 422 and error_of(refused) == "invalid_request"


def test_a_background_upload_that_creates_the_camera_says_so(client, empty_scene):
    """Without keys: the actor is the anonymous caller's, like the gallery's own entries."""
    created = client.post("/cameras/yard/background", files={"video": ("empty.avi", empty_scene)})
    assert created.status_code == 201
    (entry,) = client.get("/audit", params={"action": "camera.background"}).json()["entries"]
    assert entry["actor"] == "anonymous" and entry["details"]["old"] is None
    assert entry["details"]["new"] == {"rotation": None, "roi": None, "background": created.json()["background"]}


def test_who_may_not_change_cameras_leaves_no_entry(keyed, empty_scene):
    for secret in (ENROLLER, READER):
        attempts = [keyed.put("/cameras/gate", json={"rotation": 90}, headers=key(secret)),
                    keyed.post("/cameras/gate/background", files={"video": ("e.avi", empty_scene)},
                               headers=key(secret)),
                    keyed.delete("/cameras/gate", headers=key(secret))]
        assert all(r.status_code == 403 and error_of(r) == "forbidden" for r in attempts)
        assert keyed.get("/audit", headers=key(secret)).status_code == 403  # nor read the log
    assert keyed.get("/cameras", headers=key(READER)).json() == {"cameras": []}
    assert camera_entries(keyed) == []


def test_refused_changes_leave_no_entry(keyed):
    unknown_background = keyed.put("/cameras/gate", json={"background": "0" * 32}, headers=key(ADMIN))
    assert unknown_background.status_code == 404 and error_of(unknown_background) == "background_not_found"
    missing = keyed.delete("/cameras/nope", headers=key(ADMIN))
    assert missing.status_code == 404 and error_of(missing) == "camera_not_found"
    invalid = keyed.put("/cameras/gate", json={"rotation": 45}, headers=key(ADMIN))
    not_video = keyed.post("/cameras/gate/background", files={"video": ("n.txt", b"no video")}, headers=key(ADMIN))
    assert (invalid.status_code, not_video.status_code) == (422, 415)
    assert camera_entries(keyed) == []


def test_a_change_the_log_cannot_record_is_not_made(client):
    assert client.put("/cameras/hall", json={"rotation": 90}).status_code == 201
    client.app.state.gaitid.gallery.close()  # the audit log cannot be written any more
    refused = client.put("/cameras/hall", json={"rotation": 270})
    assert refused.status_code == 503 and error_of(refused) == "gallery_closed"
    assert client.delete("/cameras/hall").status_code == 503
    assert client.get("/cameras/hall").json()["rotation"] == 90  # unchanged, still there


def test_the_registry_audits_before_it_writes(tmp_path):
    """Outside HTTP: the audit callback sees each change first; when it fails nothing is written and a
    background clip stored for the change is deleted again."""
    registry = CameraRegistry(tmp_path / "cameras")
    seen = []
    registry.put("acme", "hall", CameraSettings(rotation=90), audit=seen.append)
    assert [(c.action, c.camera_id, c.old, c.new.rotation) for c in seen] == [("camera.created", "hall", None, 90)]

    def failing(change):
        raise OSError("the audit log's disk is full")

    with pytest.raises(OSError):
        registry.put("acme", "hall", CameraSettings(rotation=180), audit=failing)
    with pytest.raises(OSError):
        registry.attach_background("acme", "hall", io.BytesIO(b"an empty scene"), audit=failing)
    with pytest.raises(OSError):
        registry.delete("acme", "hall", audit=failing)
    assert registry.get("acme", "hall").rotation == 90 and registry.get("acme", "hall").background is None
    assert list((tmp_path / "cameras" / "backgrounds").glob("*.clip")) == []

"""The cameras resource over HTTP (service.routers.cameras, service.cameras): create, read, replace,
delete, background clips, roles and galleries, persistence; and /enroll and /identify processing a clip
with its camera's settings and a request's rotation (fake pipeline that records what it was given)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cameras import camera_overrides
from service.pipeline.types import ClipOverrides
from tests.service.conftest import FakePipeline, clip, error_of, serve, walking_clip
from tests.service.keyfile import key, write_keys_file


class RecordingPipeline(FakePipeline):
    """The fake pipeline, remembering the overrides of each call (None: none were passed)."""

    def __init__(self):
        super().__init__()
        self.overrides: list[ClipOverrides | None] = []

    def process(self, source, overrides: ClipOverrides | None = None):
        self.overrides.append(overrides)
        return super().process(source)


@pytest.fixture
def recording() -> RecordingPipeline:
    return RecordingPipeline()


@pytest.fixture
def empty_scene() -> bytes:
    return walking_clip(frames=10, people=0)


def test_camera_lifecycle(client, empty_scene):
    assert client.get("/cameras").json() == {"cameras": []}
    created = client.put("/cameras/hall-1", json={"rotation": 90, "roi": [0.1, 0.0, 0.9, 1.0]})
    assert created.status_code == 201, created.text
    assert created.json() | {"updated_at": None} == {"camera_id": "hall-1", "rotation": 90, "roi": [0.1, 0.0, 0.9, 1.0],
                                                      "background": None, "updated_at": None}
    assert client.get("/cameras/hall-1").json() == created.json()

    with_background = client.post("/cameras/hall-1/background", files={"video": ("empty.avi", empty_scene)})
    assert with_background.status_code == 200, with_background.text
    background = with_background.json()["background"]
    assert len(background) == 32 and with_background.json()["rotation"] == 90  # the other settings stay

    # A second camera may share the stored clip by id; a PUT replaces every setting.
    assert client.put("/cameras/door", json={"background": background}).status_code == 201
    replaced = client.put("/cameras/hall-1", json={"rotation": 180})
    assert replaced.status_code == 200 and replaced.json()["background"] is None and replaced.json()["roi"] is None
    assert [c["camera_id"] for c in client.get("/cameras").json()["cameras"]] == ["door", "hall-1"]

    gone = client.delete("/cameras/door")
    assert gone.status_code == 200 and gone.json()["background"] == background
    missing = client.get("/cameras/door")
    assert missing.status_code == 404 and error_of(missing) == "camera_not_found"
    # No camera uses the clip any more: it was deleted, and cannot be referred to.
    orphan = client.put("/cameras/door", json={"background": background})
    assert orphan.status_code == 404 and error_of(orphan) == "background_not_found"
    assert client.delete("/cameras/door").status_code == 404


def test_background_upload_creates_the_camera_and_must_be_a_video(client, empty_scene):
    created = client.post("/cameras/yard/background", files={"video": ("empty.avi", empty_scene)})
    assert created.status_code == 201 and created.json()["rotation"] is None
    refused = client.post("/cameras/yard/background", files={"video": ("notes.txt", b"not a video at all")})
    assert refused.status_code == 415 and error_of(refused) == "invalid_video"
    assert client.get("/cameras/yard").json()["background"] == created.json()["background"]


@pytest.mark.parametrize("body", [
    {"rotation": 45}, {"rotation": 360}, {"rotation": -90},
    {"roi": [0.5, 0.0, 0.4, 1.0]}, {"roi": [0.0, 0.0, 1.2, 1.0]}, {"roi": [0.0, 0.0, 1.0]},
    {"background": "../../etc/passwd"}, {"extra": 1, "rotation": "sideways"},
])
def test_invalid_camera_settings_are_422(client, body):
    response = client.put("/cameras/cam", json=body)
    assert response.status_code == 422 and error_of(response) == "invalid_request"
    assert client.get("/cameras").json() == {"cameras": []}


@pytest.mark.parametrize("camera_id", ["-lead", "a/b", "x" * 65, "sp ace"])
def test_invalid_camera_ids_are_refused(client, camera_id):
    assert client.put(f"/cameras/{camera_id}", json={}).status_code in (404, 405, 422)
    assert client.get("/cameras").json() == {"cameras": []}


def test_cameras_persist_and_belong_to_one_gallery(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("admin-a", "acme", "admin", "secret-a" * 4),
                           ("reader-a", "acme", "read", "secret-r" * 4), ("admin-b", "globex", "admin", "secret-b" * 4))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        assert client.put("/cameras/gate", json={"rotation": 270}, headers=key("secret-a" * 4)).status_code == 201
        forbidden = client.put("/cameras/gate", json={}, headers=key("secret-r" * 4))
        assert forbidden.status_code == 403 and error_of(forbidden) == "forbidden"
        assert client.get("/cameras", headers=key("secret-b" * 4)).json() == {"cameras": []}
        assert client.get("/cameras/gate", headers=key("secret-b" * 4)).status_code == 404
        other = client.post("/identify", data={"camera_id": "gate"}, files={"video": clip("a")},
                            headers=key("secret-b" * 4))
        assert other.status_code == 404 and error_of(other) == "camera_not_found"
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:  # a restart
        assert client.get("/cameras/gate", headers=key("secret-r" * 4)).json()["rotation"] == 270
    # Outside HTTP (re-scoring): the same settings as pipeline overrides.
    assert camera_overrides(tmp_path / "data", "gate", gallery="acme") == ClipOverrides(rotation=270)
    assert camera_overrides(tmp_path / "data", "gate", gallery="acme", rotation=0).rotation == 0


def test_identify_and_enroll_process_the_clip_with_its_cameras_settings(tmp_path, tiny_model, recording,
                                                                        empty_scene):
    with serve(tmp_path / "data", tiny_model, recording) as client:
        client.put("/cameras/hall", json={"rotation": 90, "roi": [0.0, 0.2, 1.0, 1.0]})
        background = client.post("/cameras/hall/background", files={"video": ("e.avi", empty_scene)}).json()
        plain = client.post("/identify", files={"video": clip("a")})
        by_camera = client.post("/identify", data={"camera_id": "hall"}, files={"video": clip("a")})
        turned = client.post("/identify", data={"camera_id": "hall", "rotation": "0"}, files={"video": clip("a")})
        only_rotation = client.post("/enroll", data={"subject_id": "a", "rotation": "180"},
                                    files={"video": clip("a")})
        unknown = client.post("/identify", data={"camera_id": "nope"}, files={"video": clip("a")})
        bad_rotation = client.post("/identify", data={"rotation": "45"}, files={"video": clip("a")})
    assert plain.status_code == by_camera.status_code == turned.status_code == 200
    assert only_rotation.status_code == 201
    assert unknown.status_code == 404 and error_of(unknown) == "camera_not_found"
    assert bad_rotation.status_code == 422 and error_of(bad_rotation) == "invalid_request"
    assert len(recording.overrides) == 4, "unknown cameras and bad fields never reach the pipeline"
    none, camera, request_rotation, enroll_rotation = recording.overrides
    assert none is None  # no camera, no rotation: the server's settings
    assert camera.rotation == 90 and camera.roi == (0.0, 0.2, 1.0, 1.0)
    assert camera.background_clip is not None and Path(camera.background_clip).is_file()
    assert Path(camera.background_clip).stem == background["background"]
    assert request_rotation.rotation == 0 and request_rotation.background_clip == camera.background_clip
    assert enroll_rotation == ClipOverrides(rotation=180)
    # The same bytes processed differently are different clips.
    assert len({plain.json()["clip_id"], by_camera.json()["clip_id"], turned.json()["clip_id"]}) == 3

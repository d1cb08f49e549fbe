"""demo5.mp4 (a phone clip stored sideways with no rotation metadata) through /identify with the real
pipeline: upright people only when its camera's rotation is applied."""

from __future__ import annotations

import pytest

from tests.service.conftest import serve


def upright_walkers(answer: dict) -> list[dict]:
    """Tracks of a person seen standing: a median box at least 200 px tall and under half as wide."""
    found = []
    for track in answer["tracks"]:
        x1, y1, x2, y2 = track["track"]["median_box"]
        if y2 - y1 >= 200 and (x2 - x1) < 0.5 * (y2 - y1):
            found.append(track)
    return found


@pytest.mark.data
@pytest.mark.slow
def test_demo5_is_processed_upright_through_its_cameras_rotation(tmp_path, tiny_model, videos_dir):
    demo5 = (videos_dir / "phone" / "demo5.mp4").read_bytes()
    with serve(tmp_path, tiny_model, max_frames=120) as client:  # 120 of its 238 frames: half the time
        assert client.put("/cameras/phone-hall", json={"rotation": 90}).status_code == 201
        upright = client.post("/identify", data={"camera_id": "phone-hall"}, files={"video": ("demo5.mp4", demo5)})
        sideways = client.post("/identify", files={"video": ("demo5.mp4", demo5)})
    assert upright.status_code == 200, upright.text
    video = upright.json()["video"]
    assert video["rotation"] == 90 and video["size"] == [720, 1280] and video["source_size"] == [720, 1280]
    assert video["sampled_from"] == 238 and video["frames"] == 120
    walkers = upright_walkers(upright.json())
    assert walkers, upright.json()["tracks"]
    assert all(not any("small" in w for w in t["track"]["quality"]["warnings"]) for t in walkers)
    # As stored, the people lie on their side: nobody is found standing.
    assert sideways.status_code in (200, 422), sideways.text
    if sideways.status_code == 200:
        assert sideways.json()["video"]["rotation"] == 0 and sideways.json()["video"]["size"] == [1280, 720]
        assert upright_walkers(sideways.json()) == []

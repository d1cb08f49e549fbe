"""Sightings end to end on the shared CASIA-B clips: `gaitid rescore` an archive (cameras from paths
and a folder mapping, times from paths and a file's mtime), enroll a walker over HTTP, then ask
where and when they were seen — over HTTP and with `gaitid sightings` — and get their tracks back
in time order.

The tiny contract model of tests/conftest.py makes every walker's embedding alike, so the threshold
is 0.9999: only the enrolled walk itself (and its copies) matches. Nothing here measures accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from gaitid.cli import app
from service.pipeline.thumbnails import TILE_HEIGHT
from tests.conftest import require_shared
from tests.service.conftest import serve
from tests.service.rescore.conftest import BACKGROUND, CASIA, THRESHOLD

# archive path -> CASIA-B clip
ARCHIVE = {
    "camA/2024-01-02/10-00-00.avi": "002-nm-01-090.avi",
    "camA/2024-01-02/10-05-30.avi": "003-nm-01-090.avi",
    "camB/2024-01-03/09-30-15.avi": "004-nm-01-090.avi",
    "site/gate/2024-01-02/11-00-00.avi": "002-nm-01-090.avi",  # camera "gate" by path, "camG" by --camera
}
LOBBY = "lobby/walk.avi"  # a copy of 002's clip with no time in its path: its mtime tells
LOBBY_MTIME = datetime(2024, 1, 5, 12, 0, 10, tzinfo=UTC)


@pytest.mark.data
def test_rescore_enroll_and_find_the_walker_in_time_order(tmp_path, monkeypatch, tiny_model):
    archive = tmp_path / "archive"
    for name, clip in ARCHIVE.items():
        (archive / name).parent.mkdir(parents=True, exist_ok=True)
        (archive / name).symlink_to(require_shared(CASIA / clip))
    (archive / LOBBY).parent.mkdir(parents=True)
    shutil.copyfile(CASIA / "002-nm-01-090.avi", archive / LOBBY)
    os.utime(archive / LOBBY, ns=(int(LOBBY_MTIME.timestamp() * 1e9),) * 2)
    data = tmp_path / "data"
    settings = {"DATA_DIR": data, "EMBEDDING_MODEL": tiny_model, "SEGMENTER": "bgsub", "PROVIDERS": "cpu",
                "BACKGROUND_CLIP": BACKGROUND, "UNKNOWN_THRESHOLD": THRESHOLD}
    for key, value in settings.items():
        monkeypatch.setenv(f"GAITID_{key}", str(value))
    results = tmp_path / "job" / "results.jsonl"
    cli = CliRunner()
    done = cli.invoke(app, ["rescore", str(archive), "--out", str(results), "--no-progress", "--workers", "1",
                            "--camera", "site/gate=camG"])
    assert done.exit_code == 0, done.output
    assert "3 processed, 2 already done" in done.output  # the two copies of 002 share its tracks

    with serve(data, tiny_model, segmenter="bgsub", background_clip=BACKGROUND, unknown_threshold=THRESHOLD,
               rescore_state=results.parent) as client:
        with open(CASIA / "002-nm-01-090.avi", "rb") as video:
            enrolled = client.post("/enroll", data={"subject_id": "002"}, files={"video": ("002.avi", video)})
        assert enrolled.status_code == 201, enrolled.text
        answer = client.get("/subjects/002/sightings")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["threshold"] == THRESHOLD and body["archive_tracks"] == 5
        sightings = body["sightings"]
        assert [(s["video"].removeprefix(f"{archive}/"), s["camera"], s["time_source"]) for s in sightings] == [
            ("camA/2024-01-02/10-00-00.avi", "camA", "path"),
            ("site/gate/2024-01-02/11-00-00.avi", "camG", "path"),
            (LOBBY, None, "mtime"),
        ]
        first = sightings[0]
        start = datetime(2024, 1, 2, 10, 0, 0) + timedelta(seconds=first["first_frame"] / 25)  # path time + frame/fps
        assert first["start_time"] == start.isoformat(timespec="milliseconds")
        assert first["similarity"] > THRESHOLD and first["sequence_id"] == enrolled.json()["sequence_id"]
        assert first["frames"] >= 30 and first["first_frame"] < first["last_frame"] <= 126 and first["fps"] == 25.0
        lobby_start = datetime.fromisoformat(sightings[2]["start_time"])  # mtime - the clip's 5.08 s + first frame
        assert lobby_start.tzinfo is not None
        assert (lobby_start - LOBBY_MTIME).total_seconds() == pytest.approx(first["first_frame"] / 25 - 5.08, abs=0.01)
        thumbnail = client.get(first["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(thumbnail.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape[0] == TILE_HEIGHT and picture.shape[1] > 4 * TILE_HEIGHT // 3  # crops side by side

        only_gate = client.get("/subjects/002/sightings", params={"camera": "camG"}).json()["sightings"]
        assert [s["camera"] for s in only_gate] == ["camG"]
        january_2 = client.get("/subjects/002/sightings", params={"since": "2024-01-02T10:30:00",
                                                                  "until": "2024-01-02T23:59:59"}).json()
        assert [s["camera"] for s in january_2["sightings"]] == ["camG"]

    listed = cli.invoke(app, ["sightings", "002", "--state", str(results.parent), "--json",
                              "--thumbnails", str(tmp_path / "thumbs")])
    assert listed.exit_code == 0, listed.output
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["video"], r["start_time"], r["first_frame"]) for r in lines] == [
        (s["video"], s["start_time"], s["first_frame"]) for s in sightings]
    assert all(Path(r["thumbnail"]).read_bytes() == thumbnail.content for r in lines[:1])
    assert all(Path(r["thumbnail"]).suffix == ".jpg" for r in lines)
    camera_b = cli.invoke(app, ["sightings", "002", "--state", str(results.parent), "--camera", "camB"])
    assert camera_b.exit_code == 0 and camera_b.stdout == ""  # 004's walk is not 002
    nobody = cli.invoke(app, ["sightings", "999", "--state", str(results.parent)])
    assert nobody.exit_code == 2 and "999" in nobody.output

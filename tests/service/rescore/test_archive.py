"""service/rescore/archive.py: what an archive lists, and the camera and time a path tells."""

from __future__ import annotations

import pytest

from service.rescore import ArchiveError, OptionError, PathParser, list_archive


def test_default_patterns_read_camera_and_start_time():
    parser = PathParser()
    info = parser.parse("/mnt/nvr/camA/2024-01-02/10-05-30.avi")
    assert info.camera == "camA" and info.recorded_at.isoformat() == "2024-01-02T10:05:30"
    info = parser.parse("archive/lobby/cam12_20240104_083015.mp4")
    assert info.camera == "cam12" and info.recorded_at.isoformat() == "2024-01-04T08:30:15"
    info = parser.parse("camA/2024-13-45/10-00-00.avi")  # not a date: camera known, time unknown
    assert info.camera == "camA" and info.recorded_at is None
    assert parser.parse("holiday/beach.mp4").camera is None


def test_custom_path_patterns_and_their_errors():
    parser = PathParser([r"(?P<camera>gate\d+)-(?P<datetime>\d{8}T\d{6})"])
    info = parser.parse("x/gate3-20230405T235959.mkv")
    assert info.camera == "gate3" and info.recorded_at.isoformat() == "2023-04-05T23:59:59"
    with pytest.raises(OptionError, match="named groups"):
        PathParser([r"cam\d+"])
    with pytest.raises(OptionError, match="not a valid regular expression"):
        PathParser([r"(?P<camera>"])


def test_listing_walks_folders_and_reads_list_files(tmp_path):
    for name in ["b/2.MP4", "a/1.avi", "a/.trash/3.avi", ".4.avi", "c/readme.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_archive(tmp_path)] == ["a/1.avi", "b/2.MP4"]
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# tonight's footage\n\na/1.avi\n{tmp_path / 'b/2.MP4'}\nmissing.mp4\na/1.avi\n")
    assert list_archive(listing) == [tmp_path / "a/1.avi", tmp_path / "b/2.MP4", tmp_path / "missing.mp4"]
    assert list_archive(tmp_path / "a/1.avi") == [tmp_path / "a/1.avi"]
    with pytest.raises(ArchiveError, match="does not exist"):
        list_archive(tmp_path / "nope")
    with pytest.raises(ArchiveError, match="no video files"):
        list_archive(tmp_path / "c")

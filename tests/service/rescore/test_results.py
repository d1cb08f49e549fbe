"""service/rescore/results.py and report.py: the results file's format and the HTML report."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest

from service.rescore import OptionError, build_report, read_results
from service.rescore.results import results_format


def test_results_format_from_name_or_option():
    assert results_format("r.jsonl") == "jsonl" and results_format("r.CSV") == "csv"
    assert results_format("r.parquet") == "parquet" and results_format("r.txt", "csv") == "csv"
    with pytest.raises(OptionError, match="--format"):
        results_format("r.txt")
    with pytest.raises(OptionError):
        results_format("r.jsonl", "xlsx")


@pytest.mark.data
def test_html_report_shows_each_subject_with_track_thumbnails(first_run, tmp_path):
    records = read_results(first_run.out)
    matched = {r["subject_id"] for r in records if r["decision"] == "match"}
    assert matched  # at least the enrolled walk
    report = build_report(first_run.out, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert report.subjects == len(matched) and report.errors == 2
    for subject in matched:
        assert f"Subject {subject}" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == sum(r["decision"] != "error" for r in records)  # a strip per track
    strip = cv2.imdecode(np.frombuffer(base64.b64decode(images[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert strip.shape == (64, 8 * 44)
    assert "invalid_video" in page and "camB" in page and "2024-01-02T10:00" in page

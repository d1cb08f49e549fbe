"""service/rescore/job.py with the local runner on the CASIA-B archive: one record per track,
resumable, idempotent, re-scored when the gallery changes, never a duplicate after a crash."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from service.rescore import LocalRunner, RescoreOptions, RescoreState, read_results, run_rescore
from tests.conftest import TINY_CHANNELS, TINY_PARTS
from tests.service.rescore.conftest import (
    ARCHIVE_CLIPS,
    CORRUPT,
    THRESHOLD,
    SimulatedCrash,
    counting,
    enroll,
    relative,
    track_view,
)


@pytest.mark.data
def test_one_record_per_track_with_camera_time_and_decision(first_run, archive):
    records = relative(first_run.records, archive)
    assert first_run.decodes == len(ARCHIVE_CLIPS) + 1  # every listed video once; hidden and .txt skipped
    assert set(records) == {*ARCHIVE_CLIPS, CORRUPT}

    (corrupt,) = records[CORRUPT]
    assert (corrupt["decision"], corrupt["error_code"], corrupt["track_id"]) == ("error", "invalid_video", None)
    assert corrupt["camera"] == "camB" and corrupt["recorded_at"] == "2024-01-03T09:45:00.000"
    (empty,) = records["cam7_20240104_083000.avi"]
    assert (empty["error_code"], empty["camera"], empty["recorded_at"]) == ("no_person", "cam7", "2024-01-04T08:30:00.000")

    for name in ["camA/2024-01-02/10-00-00.avi", "camA/2024-01-02/10-05-30.avi", "camB/2024-01-03/09-30-15.avi"]:
        (track,) = records[name]  # one walker per CASIA-B clip
        camera, day, clock = name[:4], name[5:15], name[16:24]
        assert track["camera"] == camera and track["recorded_at"] == f"{day}T{clock.replace('-', ':')}.000"
        assert track["error_code"] is None and track["frames"] >= 30
        assert len(track["frame_indices"]) == len(track["boxes"]) == track["frames"]
        assert track["first_frame"] == track["frame_indices"][0] < track["last_frame"] == track["frame_indices"][-1]
        assert track["fps"] == 25.0 and track["start_s"] == pytest.approx(track["first_frame"] / 25.0, abs=1e-3)
        start = np.datetime64(track["recorded_at"]) + np.timedelta64(round(track["start_s"] * 1000), "ms")
        assert np.datetime64(track["start_time"]) == start
        x1, y1, x2, y2 = np.array(track["boxes"]).T
        assert np.all(x2 > x1) and np.all(y2 - y1 >= 40) and np.all(x2 <= 320) and np.all(y2 <= 240)
        assert [c["subject_id"] for c in track["candidates"]] == ["002"]
        assert track["threshold"] == THRESHOLD and track["namespace"] == "default"

    enrolled, other, third = (records[n][0] for n in ["camA/2024-01-02/10-00-00.avi", "camA/2024-01-02/10-05-30.avi",
                                                      "camB/2024-01-03/09-30-15.avi"])
    assert enrolled["decision"] == "match" and enrolled["subject_id"] == "002" and enrolled["similarity"] > THRESHOLD
    for track in (other, third):
        assert track["decision"] == "unknown" and track["subject_id"] is None and track["similarity"] < THRESHOLD


@pytest.mark.data
def test_state_keeps_embeddings_and_thumbnail_strips(first_run, extractor):
    enrolled = next(r for r in first_run.records if r["subject_id"] == "002")
    with RescoreState(str(first_run.out) + ".state.sqlite") as state:
        assert state.counts(extractor.model_id) == {"done": 5, "failed": 0, "tracks": 3}
        (track,) = state.tracks([enrolled["sha256"]], extractor.model_id)[enrolled["sha256"]]
        strip = cv2.imdecode(np.frombuffer(state.strip(enrolled["sha256"], extractor.model_id, track.track_id),
                                           np.uint8), cv2.IMREAD_UNCHANGED)
    assert track.embedding.shape == (TINY_CHANNELS, TINY_PARTS) and track.frame_indices.tolist() == enrolled["frame_indices"]
    assert strip.shape == (64, 8 * 44) and set(np.unique(strip)) <= {0, 255} and strip.mean() > 10


@pytest.mark.data
def test_rerun_skips_decoding_and_rescores_stored_embeddings_when_the_gallery_changes(first_run, extractor):
    counted, pipeline = counting(extractor)
    options = RescoreOptions(out=first_run.out, progress=False)
    summary = run_rescore(first_run.archive, options, LocalRunner(counted, 2), first_run.gallery)
    assert pipeline.calls == 0 and summary.processed == 0 and summary.skipped == len(ARCHIVE_CLIPS) + 1
    assert read_results(first_run.out) == first_run.records  # idempotent

    enroll(first_run.gallery, extractor, "004", "004-nm-01-090.avi")
    summary = run_rescore(first_run.archive, options, LocalRunner(counted, 2), first_run.gallery)
    assert pipeline.calls == 0 and summary.matches == 2
    records = relative(read_results(first_run.out), first_run.archive)
    assert track_view([r for rows in records.values() for r in rows]) == track_view(first_run.records)  # same tracks, re-scored
    (walker_004,) = records["camB/2024-01-03/09-30-15.avi"]
    assert walker_004["decision"] == "match" and walker_004["subject_id"] == "004"
    assert walker_004["candidates"][0]["display_name"] == "Subject 004" and len(walker_004["candidates"]) == 2
    assert walker_004["gallery_generation"] > first_run.records[0]["gallery_generation"]
    assert records["camA/2024-01-02/10-00-00.avi"][0]["subject_id"] == "002"
    assert records["camA/2024-01-02/10-05-30.avi"][0]["decision"] == "unknown"


@pytest.mark.data
def test_csv_and_parquet_hold_the_same_records(first_run, extractor, tmp_path):
    counted, pipeline = counting(extractor)
    state = Path(str(first_run.out) + ".state.sqlite")
    written = {}
    for name in ["r.jsonl", "r.csv", "r.parquet"]:
        options = RescoreOptions(out=tmp_path / name, state=state, progress=False)
        run_rescore(first_run.archive, options, LocalRunner(counted, 1), first_run.gallery)
        written[name] = read_results(tmp_path / name)
    assert pipeline.calls == 0  # a shared state: other formats need no decoding either
    assert written["r.csv"] == written["r.jsonl"] == written["r.parquet"]
    assert len(written["r.jsonl"]) == len(first_run.records)


@pytest.mark.data
def test_crash_mid_run_then_resume_finishes_without_duplicates(first_run, extractor, tmp_path):
    out = tmp_path / "results.jsonl"
    crashing, crashed = counting(extractor, crash_after=2)
    with pytest.raises(SimulatedCrash):
        run_rescore(first_run.archive, RescoreOptions(out=out, progress=False), LocalRunner(crashing, 2),
                    first_run.gallery)
    assert 1 <= len(crashed.finished) <= 2
    # Everything that finished before the crash is committed, and already in the results file.
    with RescoreState(str(out) + ".state.sqlite") as state:
        assert state.counts(extractor.model_id)["done"] == len(crashed.finished)
    assert {r["video"] for r in read_results(out)} == set(crashed.finished)

    resumed, pipeline = counting(extractor)
    summary = run_rescore(first_run.archive, RescoreOptions(out=out, progress=False), LocalRunner(resumed, 2),
                          first_run.gallery)
    assert pipeline.calls == len(ARCHIVE_CLIPS) + 1 - len(crashed.finished)  # nothing finished is redone
    assert not set(pipeline.finished) & set(crashed.finished)
    assert summary.pending == 0 and summary.skipped == len(crashed.finished)
    records = read_results(out)
    keys = [(r["video"], r["track_id"]) for r in records]
    assert len(keys) == len(set(keys))
    assert track_view(records) == track_view(first_run.records)

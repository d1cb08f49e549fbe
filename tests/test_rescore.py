"""Batch re-scoring of archived footage (service/rescore): records, resumability, Ray parity, report.

The archive is made of the CASIA-B clips in ../shared/data (symlinked under camera/date/time names)
plus a corrupt file; the embedding network is a tiny randomly initialised DeepGaitV2 exported to
ONNX here. Its embeddings of different walkers are all very similar (~0.997 mean per-part cosine),
so the tests use a 0.9999 threshold: only the very walk that was enrolled matches. Nothing here
says anything about recognition accuracy.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gallery import Gallery, SequenceInput
from model.config import ModelConfig
from model.depthgait import build_model
from model.export import export_module
from service.pipeline.embed import EmbeddingModelMetadata
from service.pipeline.errors import PipelineError
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence
from service.rescore import (
    ArchiveError,
    Extractor,
    ExtractorSpec,
    GalleryMismatchError,
    LocalRunner,
    OptionError,
    PathParser,
    RayRunner,
    RescoreOptions,
    RescoreState,
    build_report,
    list_archive,
    read_results,
    run_rescore,
)
from service.rescore.extract import FileJob, Prepared
from service.rescore.results import results_format
from service.settings import Settings, get_settings
from tests.conftest import VIDEOS, require_shared

THRESHOLD = 0.9999
CASIA = VIDEOS / "casia-b"
BACKGROUND = CASIA / "001-bkgrd-090.avi"
# archive path -> CASIA-B clip
ARCHIVE_CLIPS = {
    "camA/2024-01-02/10-00-00.avi": "002-nm-01-090.avi",
    "camA/2024-01-02/10-05-30.avi": "003-nm-01-090.avi",
    "camB/2024-01-03/09-30-15.avi": "004-nm-01-090.avi",
    "cam7_20240104_083000.avi": "001-bkgrd-090.avi",  # the empty scene: nobody walking
}
CORRUPT = "camB/2024-01-03/09-45-00.mp4"
TRACK_FIELDS = ("video", "camera", "recorded_at", "sha256", "track_id", "first_frame", "last_frame", "frames",
                "frame_indices", "boxes", "error_code")


class SimulatedCrash(BaseException):
    """Stands in for a kill or Ctrl-C in the middle of a run (not an Exception: it stops the job)."""


class CountingPipeline:
    """Wraps the clip pipeline: counts decodes, and can crash the run after `crash_after` calls."""

    def __init__(self, inner, crash_after: int | None = None):
        self.inner = inner
        self.crash_after = crash_after
        self.calls = 0
        self.finished: list[str] = []  # sources whose processing ended (tracks or a PipelineError)
        self._lock = threading.Lock()

    def process(self, source):
        with self._lock:
            self.calls += 1
            if self.crash_after is not None and self.calls > self.crash_after:
                raise SimulatedCrash(f"crash while decoding {source}")
        try:
            result = self.inner.process(source)
        except PipelineError:
            self._finish(source)
            raise
        self._finish(source)
        return result

    def _finish(self, source) -> None:
        with self._lock:
            self.finished.append(str(source))


def counting(extractor: Extractor, crash_after: int | None = None) -> tuple[Extractor, CountingPipeline]:
    pipeline = CountingPipeline(extractor.pipeline, crash_after)
    return Extractor(pipeline, extractor.embedder), pipeline


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_model(ModelConfig(width=8, layers=[1, 1, 1, 1]))
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_module(net, path, EmbeddingModelMetadata(variant="silhouette", inputs=["sils"], training_data="random"))
    return path


def make_settings(root: Path, model: Path) -> Settings:
    return Settings(data_dir=root / "gaitid", segmenter="bgsub", embedding_model=model, providers="cpu", threads=1)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    require_shared(CASIA)
    root = tmp_path_factory.mktemp("archive")
    for name, clip in ARCHIVE_CLIPS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(CASIA / clip)
    (root / CORRUPT).write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / ".hidden.avi").write_bytes(b"not listed")
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def spec(tmp_path_factory, tiny_model, archive) -> ExtractorSpec:
    return ExtractorSpec(make_settings(tmp_path_factory.mktemp("settings"), tiny_model), background=BACKGROUND)


@pytest.fixture(scope="module")
def extractor(spec) -> Extractor:
    return spec.build()


def enroll(gallery: Gallery, extractor: Extractor, subject_id: str, clip: str) -> None:
    """Enrollment as the service does it: the clip pipeline, the embedder, the gallery API."""
    (sequence,) = extractor.pipeline.process(CASIA / clip).sequences
    embedding = extractor.embedder.embed(sequence.silhouettes)
    gallery.enroll(subject_id, [SequenceInput.from_aligned(sequence, embedding, {"source": clip})],
                   model_id=extractor.model_id, display_name=f"Subject {subject_id}")


@dataclass
class FirstRun:
    archive: Path
    out: Path
    gallery: Gallery
    records: list[dict]
    decodes: int


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, archive, extractor) -> FirstRun:
    root = tmp_path_factory.mktemp("first")
    gallery = Gallery(root / "gallery", threshold=THRESHOLD)
    enroll(gallery, extractor, "002", "002-nm-01-090.avi")
    counted, pipeline = counting(extractor)
    out = root / "results.jsonl"
    run_rescore(archive, RescoreOptions(out=out, progress=False), LocalRunner(counted, workers=2), gallery)
    yield FirstRun(archive, out, gallery, read_results(out), pipeline.calls)
    gallery.close()


def relative(records: list[dict], root: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(Path(record["video"]).relative_to(root).as_posix(), []).append(record)
    return grouped


def track_view(records: list[dict]) -> list[tuple]:
    return [tuple(json.dumps(r[k]) for k in TRACK_FIELDS) for r in records]


# --- paths and listing (no data needed) ---------------------------------------------------------


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


def test_results_format_from_name_or_option():
    assert results_format("r.jsonl") == "jsonl" and results_format("r.CSV") == "csv"
    assert results_format("r.parquet") == "parquet" and results_format("r.txt", "csv") == "csv"
    with pytest.raises(OptionError, match="--format"):
        results_format("r.txt")
    with pytest.raises(OptionError):
        results_format("r.jsonl", "xlsx")


class ConstantEmbedder:
    model_id = "constant"
    needs_depth = False

    def embed(self, silhouettes, depth=None):
        return np.full((256, 16), float(len(silhouettes)), np.float32)


def test_extraction_reports_boxes_in_source_pixels_with_a_strip_per_track(tmp_path):
    """The pipeline works on frames capped at max_side; records point into the archived video itself."""
    sils = np.zeros((20, 64, 44), np.uint8)
    sils[:, 10:50, 15:30] = 255
    sequence = AlignedSequence(track_id=7, silhouettes=sils, depth=None, frame_indices=np.arange(100, 120),
                               boxes=np.tile(np.array([[10, 20, 30, 60]], np.float32), (20, 1)))
    result = ClipResult(sequences=[sequence], embeddings={}, timings={"decode": 0.1}, frame_count=20, fps=25.0,
                        size=(640, 360), source_size=(1920, 1080), rotation=0)
    extractor = Extractor(pipeline=None, embedder=ConstantEmbedder())
    prepared = Prepared(FileJob(str(tmp_path / "v.mp4")), sha256="ab" * 32, result=result,
                        strips={7: extractor.strip(sequence)})
    outcome = extractor.finish(prepared)
    (track,) = outcome.tracks
    assert outcome.status == "done" and outcome.size == (640, 360) and outcome.frame_count == 20
    np.testing.assert_allclose(track.boxes, np.tile([[30, 60, 90, 180]], (20, 1)))
    assert track.frame_indices.tolist() == list(range(100, 120)) and track.embedding[0, 0] == 20
    strip = cv2.imdecode(np.frombuffer(track.strip_png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert strip.shape == (64, 8 * 44) and strip[30, 20] == 255 and strip[5, 5] == 0


# --- failures that are not fatal, and the one that is (no CASIA-B clips needed) ---------------------


def test_missing_and_corrupt_videos_become_error_records(tmp_path, tiny_model):
    corrupt = tmp_path / "cam1_20240101_120000.avi"
    corrupt.write_bytes(b"RIFF" + bytes(2000))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{corrupt.name}\ngone.mp4\n")
    extractor = ExtractorSpec(make_settings(tmp_path, tiny_model)).build()
    counted, pipeline = counting(extractor)
    out = tmp_path / "results.jsonl"
    with Gallery(tmp_path / "gallery") as gallery:
        first = run_rescore(listing, RescoreOptions(out=out, progress=False), LocalRunner(counted, 2), gallery)
        records = read_results(out)
        assert [(Path(r["video"]).name, r["decision"], r["error_code"]) for r in records] == [
            (corrupt.name, "error", "invalid_video"), ("gone.mp4", "error", "unreadable")]
        assert records[0]["camera"] == "cam1" and records[0]["recorded_at"] == "2024-01-01T12:00:00.000"
        assert first.processed == 2 and first.failed == 1 and pipeline.calls == 1
        # The corrupt file is a fact about its content: not decoded again. The missing one is retried.
        again = run_rescore(listing, RescoreOptions(out=out, progress=False), LocalRunner(counted, 2), gallery)
        assert pipeline.calls == 1 and again.skipped == 1 and again.failed == 1
        assert read_results(out) == records


def test_a_gallery_of_another_model_stops_the_job_before_any_work(tmp_path, tiny_model):
    (tmp_path / "cam1_20240101_120000.avi").write_bytes(b"x")
    extractor = ExtractorSpec(make_settings(tmp_path, tiny_model)).build()
    counted, pipeline = counting(extractor)
    with Gallery(tmp_path / "gallery") as gallery:
        gallery.enroll("x", [SequenceInput(np.zeros((3, 64, 44), np.uint8), np.ones((256, 16), np.float32))],
                       model_id="another-model")
        with pytest.raises(GalleryMismatchError, match="another-model"):
            run_rescore(tmp_path, RescoreOptions(out=tmp_path / "r.jsonl", progress=False),
                        LocalRunner(counted, 1), gallery)
    assert pipeline.calls == 0 and not (tmp_path / "r.jsonl").exists()


# --- the CASIA-B archive -----------------------------------------------------------------------------


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
    assert track.embedding.shape == (256, 16) and track.frame_indices.tolist() == enrolled["frame_indices"]
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


@pytest.mark.data
def test_ray_data_gives_the_same_records_as_local(first_run, extractor, spec, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runner = RayRunner(spec, spec.model_id(), actors=2, num_cpus=1)
        summary = run_rescore(first_run.archive, RescoreOptions(out=tmp_path / "ray.jsonl", progress=False), runner,
                              first_run.gallery)
    finally:
        ray.shutdown()
    assert summary.processed == len(ARCHIVE_CLIPS) + 1 and summary.failed == 0
    counted, pipeline = counting(extractor)
    run_rescore(first_run.archive, RescoreOptions(out=tmp_path / "local.jsonl", state=Path(f"{first_run.out}.state.sqlite"),
                                                  progress=False), LocalRunner(counted, 1), first_run.gallery)
    assert pipeline.calls == 0
    ray_records, local_records = read_results(tmp_path / "ray.jsonl"), read_results(tmp_path / "local.jsonl")
    assert ray_records == local_records


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


@pytest.mark.data
def test_cli_rescore_and_report(tmp_path, monkeypatch, archive, tiny_model):
    listing = tmp_path / "tonight.txt"
    listing.write_text(f"{archive / CORRUPT}\n{archive / 'camA/2024-01-02/10-00-00.avi'}\n")
    for key, value in {"DATA_DIR": tmp_path / "data", "EMBEDDING_MODEL": tiny_model, "SEGMENTER": "bgsub",
                       "PROVIDERS": "cpu", "BACKGROUND_CLIP": BACKGROUND}.items():
        monkeypatch.setenv(f"GAITID_{key}", str(value))
    get_settings.cache_clear()
    try:
        from service.cli import app

        cli = CliRunner()
        out = tmp_path / "results.csv"
        done = cli.invoke(app, ["rescore", str(listing), "--out", str(out), "--no-progress", "--workers", "1"])
        assert done.exit_code == 0, done.output
        assert "2 processed" in done.output and "1 tracks" in done.output
        assert [r["decision"] for r in read_results(out)] == ["error", "unknown"]  # empty gallery
        changed = cli.invoke(app, ["rescore", str(listing), "--out", str(out), "--no-progress", "--max-frames", "50"])
        assert changed.exit_code == 0 and "2 already done" in changed.output
        assert "other settings" in changed.output and "--force" in changed.output  # kept, with a warning
        report = cli.invoke(app, ["rescore-report", str(out), "--out", str(tmp_path / "r.html")])
        assert report.exit_code == 0 and (tmp_path / "r.html").exists(), report.output
        missing = cli.invoke(app, ["rescore", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"])
        assert missing.exit_code == 2 and "does not exist" in missing.output
    finally:
        get_settings.cache_clear()

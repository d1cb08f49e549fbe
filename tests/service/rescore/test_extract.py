"""service/rescore/extract.py: one video -> its tracks with embeddings, boxes and thumbnail strips;
what becomes of a file that cannot be used."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gaitid.contract import EmbeddingModelMetadata, model_id
from gallery import Gallery, SequenceInput
from service.pipeline.errors import ModelNotFoundError
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence
from service.rescore import (
    Extractor,
    ExtractorSpec,
    GalleryMismatchError,
    LocalRunner,
    OptionError,
    RescoreOptions,
    read_results,
    run_rescore,
)
from service.rescore.extract import FileJob, Prepared, track_strip_png
from tests.conftest import TINY_CHANNELS, TINY_PARTS
from tests.service.rescore.conftest import counting, make_settings


class ConstantEmbedder:
    """A SequenceEmbedder whose embedding is the sequence's frame count, everywhere."""

    model_id = "constant"
    metadata = EmbeddingModelMetadata(variant="constant", inputs=["sils"])

    def embed(self, sequences):
        return np.stack([np.full((256, 16), float(s.frames), np.float32) for s in sequences])


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


def test_depth_strips_show_the_quantised_depth_under_the_silhouettes():
    sils = np.zeros((4, 64, 44), np.uint8)
    sils[:, 10:50, 15:30] = 255
    depth = np.where(sils > 0, 200, 0).astype(np.uint8)  # uint8, as the pipeline makes it
    sequence = AlignedSequence(track_id=1, silhouettes=sils, depth=depth, frame_indices=np.arange(4),
                               boxes=np.zeros((4, 4), np.float32))
    strip = cv2.imdecode(np.frombuffer(track_strip_png(sequence), np.uint8), cv2.IMREAD_UNCHANGED)
    assert strip.shape == (128, 4 * 44) and strip[30, 20] == 255 and strip[64 + 30, 20] == 200


def test_the_spec_checks_before_loading_and_knows_the_model_id(tmp_path, tiny_model):
    spec = ExtractorSpec(make_settings(tmp_path, tiny_model))
    assert spec.model_id() == model_id(tiny_model) == spec.build().model_id
    with pytest.raises(ModelNotFoundError, match="GAITID_EMBEDDING_MODEL"):
        ExtractorSpec(make_settings(tmp_path, tmp_path / "absent.onnx")).check()
    with pytest.raises(OptionError, match="background clip"):
        ExtractorSpec(make_settings(tmp_path, tiny_model, background_clip=tmp_path / "absent.avi")).check()


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
        gallery.enroll("x", [SequenceInput(np.zeros((3, 64, 44), np.uint8),
                                           np.ones((TINY_CHANNELS, TINY_PARTS), np.float32))], model_id="another-model")
        with pytest.raises(GalleryMismatchError, match="another-model"):
            run_rescore(tmp_path, RescoreOptions(out=tmp_path / "r.jsonl", progress=False),
                        LocalRunner(counted, 1), gallery)
    assert pipeline.calls == 0 and not (tmp_path / "r.jsonl").exists()

"""ClipOverrides through the real clip pipeline (background subtraction, synthetic clips): a rotation, a
region of interest, another background clip (its segmenter built once per clip file); and what the
pipeline adds for the API: each track's preview strip and cut frames, the clip's sampled_from."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from service.pipeline.config import PipelineSettings
from service.pipeline.errors import PipelineError
from service.pipeline.pipeline import build_pipeline, inside_region
from service.pipeline.types import ClipOverrides, FrameDetections, Masks
from tests.service.conftest import walking_clip


@pytest.fixture(scope="module")
def two_walkers() -> bytes:
    return walking_clip(people=2)


def pipeline(tmp_path: Path, **settings):
    return build_pipeline(PipelineSettings(data_dir=tmp_path, segmenter="bgsub", providers="cpu", **settings))


def test_overrides_validate_and_say_what_changes_the_result():
    assert ClipOverrides().is_default and ClipOverrides().fingerprint() == ""
    assert ClipOverrides(rotation=90).fingerprint() != ClipOverrides(rotation=270).fingerprint()
    assert ClipOverrides(roi=(0, 0, 0.5, 1)).fingerprint() != ClipOverrides(roi=(0, 0, 0.6, 1)).fingerprint()
    for bad in ({"rotation": 45}, {"roi": (0.5, 0, 0.5, 1)}, {"roi": (0, 0, 1.5, 1)}):
        with pytest.raises(ValueError):
            ClipOverrides(**bad)


def test_inside_region_keeps_the_people_whose_box_centre_is_in_it():
    boxes = np.array([[0, 0, 20, 40], [200, 100, 240, 200]], np.float32)
    masks = Masks.from_frames(np.zeros((2, 240, 320), bool))
    detections = FrameDetections(boxes, np.array([0.9, 0.8], np.float32), masks)
    kept = inside_region(detections, (0.5, 0.0, 1.0, 1.0), (320, 240))
    assert kept.boxes.tolist() == [[200, 100, 240, 200]] and len(kept.masks) == 1
    assert kept.scores.tolist() == pytest.approx([0.8])
    assert inside_region(detections, (0.0, 0.0, 1.0, 1.0), (320, 240)) is detections


def test_a_region_of_interest_leaves_out_the_people_outside_it(tmp_path, two_walkers):
    clip_pipeline = pipeline(tmp_path)
    both = clip_pipeline.process(two_walkers)
    left = clip_pipeline.process(two_walkers, ClipOverrides(roi=(0.0, 0.0, 0.5, 1.0)))
    assert len(both.sequences) == 2 and len(left.sequences) == 1
    assert np.median(left.sequences[0].boxes[:, 2]) < 160


def stored_sideways(video: bytes) -> bytes:
    """The clip's frames turned a quarter counter-clockwise, with no rotation metadata (like demo5.mp4)."""
    with av.open(io.BytesIO(video)) as source:
        frames = [np.ascontiguousarray(np.rot90(f.to_ndarray(format="rgb24"))) for f in source.decode(video=0)]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_a_rotation_turns_sideways_frames_upright(tmp_path, two_walkers):
    sideways = stored_sideways(two_walkers)
    upright = pipeline(tmp_path).process(sideways, ClipOverrides(rotation=90))
    assert upright.rotation == 90 and upright.size == (320, 240) and len(upright.sequences) == 2
    for sequence in upright.sequences:
        x1, y1, x2, y2 = np.median(sequence.boxes, axis=0)
        assert y2 - y1 > 2 * (x2 - x1)  # standing people
    assert pipeline(tmp_path).process(sideways, rotation=90).rotation == 90  # the keyword still works
    with pytest.raises(PipelineError):  # as stored, nobody stands in the picture
        pipeline(tmp_path).process(sideways)


def test_a_camera_background_gets_its_own_segmenter_built_once(tmp_path, two_walkers):
    background = tmp_path / "empty.avi"
    background.write_bytes(walking_clip(frames=10, people=0))
    clip_pipeline = pipeline(tmp_path)
    overrides = ClipOverrides(background_clip=background)
    with_background = clip_pipeline.segmenter_for(overrides)
    assert with_background is not clip_pipeline.segmenter and with_background.background is not None
    assert clip_pipeline.segmenter_for(overrides) is with_background
    assert clip_pipeline.segmenter_for(ClipOverrides()) is clip_pipeline.segmenter
    assert len(clip_pipeline.process(two_walkers, overrides).sequences) == 2


def test_the_pipeline_adds_previews_cut_frames_and_sampled_from(tmp_path, two_walkers):
    result = pipeline(tmp_path, max_frames=20).process(two_walkers)
    assert result.frame_count == 20 and result.sampled_from == 40
    for sequence in result.sequences:
        assert sequence.preview is not None and sequence.preview.shape[0] == 96 and sequence.preview.ndim == 3
        assert sequence.frames_cut_at_border >= 0 and "preview" in sequence.timings
    assert pipeline(tmp_path).process(two_walkers).sampled_from is None

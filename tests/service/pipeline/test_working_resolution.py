"""The clip path at a working resolution (issue 16): frames decoded straight to the segmenter's size,
masks kept around each person (`Mask`) and scaled to the frame only for alignment, the foreground
cleaned on the rectangle around it; and how far its silhouettes agree with the path before
(bench/legacy_pipeline.py).

Tolerances (measured values in bench/pipeline.py's output and the report of issue 16):
- frames at or below the working size (CASIA-B's 320x240, the synthetic 320x240 walk) are not
  shrunk, so the silhouettes are those of the path before, exactly;
- `decode_at_working_size=False` feeds the segmenter the frames of the path before: mean IoU >= 0.999
  (masks are scaled up from a crop instead of the whole frame: the same bilinear grid, other rounding);
- the default (FFmpeg shrinks while decoding, its area filter about a grey level from OpenCV's):
  mean IoU >= 0.95 on a clean synthetic 720p walk (measured 0.972: most frames 0.99, a few 0.82 where
  a leg's thin tip is in or out and the whole 64-px silhouette is rescaled). On hand-held phone
  footage background subtraction is so sensitive to exact pixel values that the path before
  disagrees with itself (mean IoU 0.95-0.97) when a grey level of noise is added to its full-size
  input, 0.89-0.92 when it is added where the background model looks (the working size, where the
  two shrinks differ by 0.5-1.1 grey levels on average); there the two paths agree to 0.90-0.92, at
  least as well as that (asserted on demo1, less 0.01), and the test that matters is quality: on
  CASIA-B walks re-encoded at 960x720, the silhouettes match CASIA-B's own as well as the path
  before does (within 0.01 IoU);
- the background model only where something moves (the default) against the model on whole
  frames: where nothing moves near a tile it follows the slow background update on every second
  frame only, mean IoU 0.998-1.000 on the shared clips (demo3 and demo5 aside: no stable track),
  0.9997-1.0 on the synthetic walks (>= 0.995 asserted); with `tile_side=None` the
  masks are those of the whole-frame model exactly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from bench.legacy_pipeline import agreement, legacy_process
from service.pipeline import segment_bgsub
from service.pipeline.align import align_sequence
from service.pipeline.config import DecodeLimits, PipelineConfig, TrackerConfig
from service.pipeline.decode import decode_video
from service.pipeline.pipeline import ClipPipeline
from service.pipeline.segment_bgsub import (
    BackgroundSubtractionSegmenter,
    BgSubConfig,
    _Kernels,
    _spread,
    _tiles,
)
from service.pipeline.types import Mask, Masks, Track
from tests.conftest import RecordingDepth, write_synthetic_walk

CONFIG = PipelineConfig(tracker=TrackerConfig(min_track_frames=15, min_person_height=40))


def write_walk(path: Path, width: int = 1280, height: int = 720, frames: int = 40) -> Path:
    """A textured static scene and a dark walker (head, body, striding legs) crossing it, H.264."""
    rng = np.random.default_rng(0)
    scale = height / 240
    scene = cv2.GaussianBlur(rng.integers(90, 200, (height, width, 3), dtype=np.uint8), (0, 0), 3 * scale)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for t in range(frames):
            image = scene.copy()
            x, stride = int((30 + 6 * t) * scale), int(18 * np.sin(t / 3) * scale)

            def at(value: float) -> int:
                return int(value * scale)

            cv2.circle(image, (x, at(62)), at(12), (30, 30, 40), -1)
            cv2.rectangle(image, (x - at(14), at(74)), (x + at(14), at(140)), (40, 35, 30), -1)
            cv2.line(image, (x, at(140)), (x - stride, at(200)), (35, 30, 45), at(9))
            cv2.line(image, (x, at(140)), (x + stride, at(200)), (35, 30, 45), at(9))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def walk_720p(tmp_path_factory) -> Path:
    return write_walk(tmp_path_factory.mktemp("clips") / "walk720.mp4")


DEFAULT_BGSUB = BgSubConfig()


def pipeline(config: PipelineConfig = CONFIG, background=None, bgsub: BgSubConfig = DEFAULT_BGSUB,
             **changes) -> ClipPipeline:
    return ClipPipeline(replace(config, **changes), BackgroundSubtractionSegmenter(bgsub, background=background))


# --- decoding straight to the working size --------------------------------------------------------


def test_decoder_delivers_working_size_pixels_in_full_size_coordinates(walk_720p):
    full = decode_video(walk_720p)
    small = decode_video(walk_720p, frame_side=480)
    assert full.frames.shape == (40, 720, 1280, 3) and small.frames.shape == (40, 270, 480, 3)
    assert small.size == full.size == (1280, 720) and small.pixel_size == (480, 270)
    np.testing.assert_array_equal(small.frame_indices, full.frame_indices)
    # An area average: each small pixel is close to the mean of the 8/3 x 8/3 block it covers.
    reference = cv2.resize(full.frames[10], (480, 270), interpolation=cv2.INTER_AREA)
    assert np.abs(small.frames[10].astype(int) - reference).mean() < 2.0
    # Frames at or below the working size are decoded as they are.
    assert decode_video(walk_720p, frame_side=2000).frames.shape == full.frames.shape


def test_pipeline_decodes_at_the_segmenters_size_unless_depth_needs_full_frames():
    assert pipeline().frame_side == 480
    assert pipeline(decode_at_working_size=False).frame_side is None
    with_depth = ClipPipeline(CONFIG, BackgroundSubtractionSegmenter(), RecordingDepth())
    assert with_depth.computes_depth and with_depth.frame_side is None


def test_results_stay_in_full_size_coordinates(walk_720p):
    result = pipeline().process(walk_720p)
    assert result.size == (1280, 720) and result.source_size == (1280, 720)
    (sequence,) = result.sequences
    centres = (sequence.boxes[:, 0] + sequence.boxes[:, 2]) / 2
    assert np.polyfit(sequence.frame_indices, centres, 1)[0] == pytest.approx(18.0, abs=1.5)  # 6 px x 3 a frame
    heights = sequence.boxes[:, 3] - sequence.boxes[:, 1]
    assert np.median(heights) == pytest.approx(3 * 154, rel=0.05)  # head top 50 to feet 204, times 3


# --- masks kept around the person -----------------------------------------------------------------


def test_mask_scaled_from_a_working_grid_matches_scaling_the_whole_frame():
    """A blob on a 3/8 grid, brought to the frame two ways: the whole grid resized (what the path before
    did) and only its crop (now). Same bilinear sampling, other rounding: a few pixels at most."""
    rng = np.random.default_rng(3)
    grid = np.zeros((270, 480), np.uint8)
    cv2.ellipse(grid, (200, 130), (25, 70), 10, 0, 360, 255, -1)
    grid[rng.random(grid.shape) < 0.02] = 0  # ragged inside, as real foreground is
    whole = cv2.resize(grid, (1280, 720), interpolation=cv2.INTER_LINEAR) > 127
    rows, cols = np.flatnonzero(grid.any(axis=1)), np.flatnonzero(grid.any(axis=0))
    pixels = grid[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] > 0
    mask = Mask(pixels, int(rows[0]), int(cols[0]), (1280, 720), 480 / 1280, 270 / 720)
    dense = mask.dense()
    assert np.count_nonzero(dense != whole) <= 0.002 * np.count_nonzero(whole)
    wr, wc = np.flatnonzero(whole.any(axis=1)), np.flatnonzero(whole.any(axis=0))
    np.testing.assert_allclose(mask.box(), [wc[0], wr[0], wc[-1] + 1, wr[-1] + 1], atol=1)
    crop, top, left = mask.frame_crop()
    np.testing.assert_array_equal(dense[top:top + crop.shape[0], left:left + crop.shape[1]], crop)
    assert not dense[:top].any() and not dense[:, :left].any()


def test_masks_read_as_frame_arrays_and_index_like_them():
    frames = np.zeros((3, 40, 60), bool)
    frames[0, 5:20, 10:15] = True
    frames[2, 30:40, 50:60] = True  # touching the frame's corner
    masks = Masks.from_frames(frames)
    assert masks.shape == (3, 40, 60) and masks.dtype == bool and len(masks) == 3
    np.testing.assert_array_equal(np.asarray(masks), frames)
    np.testing.assert_array_equal(np.asarray(masks[2]), frames[2])
    assert masks[0].pixels.shape == (15, 5) and (masks[0].top, masks[0].left) == (5, 10)
    assert masks[1].box() is None and masks[1].pixels.size == 0
    np.testing.assert_array_equal(np.asarray(masks[np.array([True, False, True])]), frames[[0, 2]])
    np.testing.assert_array_equal(np.asarray(masks[1:]), frames[1:])
    track = Track(1, np.arange(3), np.arange(3), np.zeros((3, 4), np.float32), frames)  # arrays are accepted
    assert isinstance(track.masks, Masks)


def test_alignment_from_masks_equals_alignment_from_frame_arrays():
    frames = np.zeros((4, 120, 90), bool)
    for t in range(4):
        cv2.ellipse(frames[t].view(np.uint8), (30 + 10 * t, 60), (12, 40), 5 * t, 0, 360, 1, -1)
    depth = np.where(frames, np.linspace(0.2, 0.9, 90, dtype=np.float32)[None, None, :], 0).astype(np.float32)
    from_arrays = align_sequence(frames, depth)
    from_masks = align_sequence(Masks.from_frames(frames), depth)
    for a, b in zip(from_arrays, from_masks):
        np.testing.assert_array_equal(a, b)


def test_foreground_cleaned_around_itself_equals_the_whole_frame(monkeypatch, walk_720p):
    """Closing, grouping and labelling run on the rectangle around the opened foreground: the same
    masks, positions and order as on the whole frame (speckle added all over the picture)."""
    frames = decode_video(walk_720p, frame_side=480).frames.copy()
    rng = np.random.default_rng(5)
    for frame in frames[::3]:
        ys, xs = rng.integers(0, 270, 40), rng.integers(0, 480, 40)
        frame[ys, xs] = 255 - frame[ys, xs]  # single-pixel flips: opened away
        frame[200:230, 440:470] = rng.integers(0, 255, 3)  # a lump far from the walker: kept
    around = BackgroundSubtractionSegmenter().segment(frames, (1280, 720))
    monkeypatch.setattr(_Kernels, "region", lambda self, image: (0, image.shape[0], 0, image.shape[1]))
    monkeypatch.setattr(segment_bgsub, "_around", lambda image, margin: (0, image.shape[0], 0, image.shape[1]))
    whole = BackgroundSubtractionSegmenter().segment(frames, (1280, 720))
    assert sum(len(d.boxes) for d in around) >= 40
    for a, b in zip(around, whole):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        for m, n in zip(a.masks, b.masks):
            assert (m.top, m.left) == (n.top, n.left)
            np.testing.assert_array_equal(m.pixels, n.pixels)


# --- the background model only where something moves ---------------------------------------------


def every_tile(self, frames, own, tiles):
    return np.ones((len(frames), len(tiles)), bool)


def test_tiled_model_equals_one_model_on_the_whole_frame(monkeypatch, walk_720p):
    """Each pixel's background model depends on that pixel's history alone: tiles with a subtractor
    each, all classified every frame, give the whole-frame subtractor's foreground exactly."""
    frames = decode_video(walk_720p, frame_side=480).frames
    whole = BackgroundSubtractionSegmenter(BgSubConfig(tile_side=None))._foreground(frames)
    monkeypatch.setattr(BackgroundSubtractionSegmenter, "_locate", every_tile)
    tiled = BackgroundSubtractionSegmenter(BgSubConfig(tile_side=50))._foreground(frames)
    assert np.count_nonzero(whole) > 40 * 2000  # the walker, every frame
    np.testing.assert_array_equal(tiled, whole)


def test_locator_covers_the_walker_and_only_needed_tiles_get_a_model(monkeypatch, walk_720p):
    frames = decode_video(walk_720p, frame_side=480).frames
    segmenter = BackgroundSubtractionSegmenter()
    tiles = _tiles(270, 480, segmenter.config.tile_side)
    active = segmenter._locate(frames, _spread(len(frames), segmenter.config.warmup_frames), tiles)
    covered = np.zeros((len(frames), 270, 480), bool)
    for k, (top, bottom, left, right) in enumerate(tiles):
        covered[active[:, k], top:bottom, left:right] = True
    people = BackgroundSubtractionSegmenter(BgSubConfig(tile_side=None)).segment(frames, (1280, 720))
    assert all(len(d.masks) == 1 for d in people)
    for t, detections in enumerate(people):
        (mask,) = detections.masks
        height, width = mask.pixels.shape  # working-resolution cells at (top, left)
        assert covered[t, mask.top:mask.top + height, mask.left:mask.left + width][mask.pixels].all(), t
    assert active.mean() < 0.4  # the walker and its margin: a fraction of each frame

    made = []
    warm_up = BackgroundSubtractionSegmenter._warmed_up_subtractor
    monkeypatch.setattr(BackgroundSubtractionSegmenter, "_warmed_up_subtractor",
                        lambda self, *frames: made.append(frames[1].shape) or warm_up(self, *frames))
    segmenter.segment(frames, (1280, 720))
    needed = int(active.any(axis=0).sum())
    assert len(made) == 1 + needed and needed < len(tiles)  # the locator's model, then one per needed tile


def test_segmenting_only_where_something_moves_agrees_with_the_whole_frame(walk_720p):
    """The one difference: a tile follows the slow background update on frames where nothing moves
    near it on every second frame only. Measured mean IoU 1.0 on this walk, 0.998-1.000 on the shared clips."""
    for clip in (walk_720p,):
        whole = pipeline(bgsub=BgSubConfig(tile_side=None)).process(clip).sequences
        result = agreement(whole, pipeline().process(clip).sequences)
        assert result.mean_iou >= 0.995 and result.coverage == 1.0, result


# --- agreement with the path before -------------------------------------------------------------


def test_synthetic_720p_walk_agrees_with_the_path_before(walk_720p):
    before, frames = legacy_process(walk_720p, CONFIG)
    now = agreement(before, pipeline().process(walk_720p).sequences)
    full_size = agreement(before, pipeline(decode_at_working_size=False).process(walk_720p).sequences)
    assert frames == 40 and now.frames_a >= 30
    assert now.mean_iou >= 0.95 and now.coverage >= 0.95, now
    assert full_size.mean_iou >= 0.999 and full_size.coverage >= 0.97, full_size


def test_synthetic_320x240_walk_is_unchanged(tmp_path):
    """Nothing shrunk: with the model on whole frames, exactly the old silhouettes; only where
    something moves (the default), as close as the thinned background updates allow (measured 0.9997)."""
    walk = write_synthetic_walk(tmp_path / "walk.mp4")
    before, _ = legacy_process(walk, CONFIG)
    exact = agreement(before, pipeline(bgsub=BgSubConfig(tile_side=None)).process(walk).sequences)
    assert exact.mean_iou == 1.0 and exact.coverage == 1.0, exact
    result = agreement(before, pipeline().process(walk).sequences)
    assert result.mean_iou >= 0.995 and result.coverage == 1.0, result


@pytest.mark.data
def test_casia_clip_is_unchanged(videos_dir):
    """320x240 is below the working size: nothing is shrunk, the silhouettes are exactly the old ones
    with the model on whole frames, and within the thinned background updates of them by default."""
    background = decode_video(videos_dir / "casia-b" / "001-bkgrd-090.avi").frames
    clip = videos_dir / "casia-b" / "003-nm-01-090.avi"
    before, _ = legacy_process(clip, CONFIG, background)
    exact = pipeline(background=background, bgsub=BgSubConfig(tile_side=None)).process(clip).sequences
    result = agreement(before, exact)
    assert result.mean_iou == 1.0 and result.coverage == 1.0, result
    np.testing.assert_array_equal(before[0].boxes, exact[0].boxes)
    result = agreement(before, pipeline(background=background).process(clip).sequences)
    assert result.mean_iou >= 0.995 and result.coverage == 1.0, result  # measured 0.9987


@pytest.mark.data
def test_phone_clip_agreement(videos_dir):
    """demo1 (720x1280, hand-held): today's frames and the model on whole frames give today's
    silhouettes; the default (the decoder's shrink, the model only where something moves) gives
    silhouettes as close to today's as the clip's sensitivity allows (see the module docstring)."""
    clip = videos_dir / "phone" / "demo1.mp4"
    config = replace(CONFIG, decode=DecodeLimits(max_frames=120))
    before, _ = legacy_process(clip, config)
    whole_frames = BgSubConfig(tile_side=None)
    full_size = agreement(before, pipeline(config, bgsub=whole_frames, decode_at_working_size=False).process(clip).sequences)
    now = agreement(before, pipeline(config).process(clip).sequences)
    assert full_size.mean_iou >= 0.999 and full_size.coverage >= 0.98, full_size
    assert now.mean_iou >= 0.85 and now.coverage >= 0.9, now
    # The stated tolerance: no further from today's than today's path is from itself with +-1 grey level
    # of noise where its background model looks (measured 0.890, seeds 0.882-0.890; now 0.901), less 0.01.
    yardstick = agreement(before, legacy_process(clip, config, noise=1)[0])
    assert now.mean_iou >= yardstick.mean_iou - 0.01, (now, yardstick)


def reencode_720(source: Path, target: Path) -> Path:
    """A 320x240 clip scaled x3 (bicubic) and re-encoded in H.264 at 960x720."""
    frames = decode_video(source, DecodeLimits(max_frames=1000)).frames
    with av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 960, 720, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            big = cv2.resize(frame, (960, 720), interpolation=cv2.INTER_CUBIC)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")))
        out.mux(stream.encode(None))
    return target


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("subject", ["003", "004"])
def test_casia_walk_at_720p_matches_casia_silhouettes_as_well_as_before(videos_dir, casia_root, tmp_path, subject):
    """Quality where the truth is known: CASIA-B's walk and empty scene at 960x720. Measured (best
    offset mean IoU against CASIA-B's silhouettes, before -> now): 003 0.916 -> 0.918, 004 0.906 -> 0.907."""
    from model.dataset import load_sequence
    from tests.service.pipeline.test_pipeline import best_offset_iou

    casia = videos_dir / "casia-b"
    walk = reencode_720(casia / f"{subject}-nm-01-090.avi", tmp_path / "walk.mp4")
    empty = reencode_720(casia / "001-bkgrd-090.avi", tmp_path / "empty.mp4")
    config = replace(CONFIG, full_width=True, decode=DecodeLimits(max_frames=300))
    reference = load_sequence(casia_root / subject / "nm-01" / "090")
    before, _ = legacy_process(walk, config, decode_video(empty, DecodeLimits(max_frames=200)).frames)
    now = pipeline(config, decode_video(empty, DecodeLimits(max_frames=200), frame_side=480).frames).process(walk)
    iou_before, _ = best_offset_iou(before[0].silhouettes, reference)
    iou_now, _ = best_offset_iou(max(now.sequences, key=lambda s: len(s.silhouettes)).silhouettes, reference)
    assert iou_before >= 0.85 and iou_now >= iou_before - 0.01, (iou_before, iou_now)


def test_background_model_on_packed_pixels_equals_whole_frame_model_there():
    """bench/pipeline.py's lower bound ("warm-up on the persons' pixels only") packs those pixels into
    one row: that is the same work only if MOG2 judges each pixel from its own history alone. Checked
    here on a noisy scene with a walker: the packed model's foreground equals the whole-frame model's
    at every packed pixel, frame after frame."""
    rng = np.random.default_rng(3)
    scene = rng.integers(40, 200, (60, 80, 3), dtype=np.uint8)
    frames = np.repeat(scene[None], 40, axis=0).astype(np.int16) + rng.integers(-3, 4, (40, 60, 80, 3))
    for t in range(40):
        frames[t, 10:50, 2 * t - 20 if t >= 10 else 0:2 * t] = 20  # a dark walker crossing the middle
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    rows, cols = np.nonzero(rng.random((60, 80)) < 0.3)
    segmenter = BackgroundSubtractionSegmenter(BgSubConfig(tile_side=None))
    empty = np.zeros((0, 60, 80, 3), np.uint8)
    whole = segmenter._warmed_up_subtractor(empty, frames)
    packed = segmenter._warmed_up_subtractor(empty[:, rows, cols][:, None], frames[:, rows, cols][:, None])
    foreground = 0
    for frame in frames:
        at_pixels = whole.apply(frame, learningRate=0.002)[rows, cols]
        np.testing.assert_array_equal(packed.apply(np.ascontiguousarray(frame[rows, cols][None]),
                                                   learningRate=0.002)[0], at_pixels)
        foreground += int(np.count_nonzero(at_pixels == 255))
    assert foreground > 100  # the walker was seen: the comparison covered foreground, not only background

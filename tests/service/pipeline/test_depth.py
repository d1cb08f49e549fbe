"""Depth Anything on ONNX Runtime: the export (random V2 Small, parity with torch, dynamic axes) and
the estimator's geometry and normalisation, checked exactly on a planted model.

The planted model returns its input's first (red) channel after ImageNet normalisation: a known,
increasing function of each pixel's red value. With sizes chosen so that no resizing happens, the
estimator's output must then equal (R - min R) / (max R - min R) over the silhouette at every pixel,
which pins down where each crop or frame value lands, the masking and the normalisation.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model.export_depth import export_depth_onnx, random_model, v2_small_config
from service.pipeline.depth import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DepthEstimator,
    crop_input_size,
    crop_windows,
    full_frame_input_size,
    normalise_in_mask,
    preprocess,
)
from service.pipeline.errors import ModelNotFoundError
from service.pipeline.types import Track


def red_channel_model(path) -> str:
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    depth = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, ["batch", "height", "width"])
    index = numpy_helper.from_array(np.array(0, np.int64), "red")
    graph = helper.make_graph([helper.make_node("Gather", ["pixel_values", "red"], ["predicted_depth"], axis=1)],
                              "red_channel", [pixels], [depth], [index])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


class CountingSession:
    """Wraps an ORT session and records the batch size of every run."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self.session.run(names, feeds)


def make_track(boxes, masks, positions=None) -> Track:
    count = len(masks)
    positions = np.arange(count) if positions is None else np.asarray(positions)
    return Track(1, positions, positions * 2, np.asarray(boxes, np.float32), np.asarray(masks, bool))


def expected_from_red(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    red = frame[..., 0].astype(np.float64)
    values = red[mask]
    out = np.zeros(mask.shape)
    out[mask] = (values - values.min()) / (values.max() - values.min())
    return out


def ellipse(height, width, box) -> np.ndarray:
    """A silhouette-like blob whose bounding box is exactly `box` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx, ry, rx = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2, (y2 - y1) / 2, (x2 - x1) / 2
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


# -- geometry and normalisation, exact --------------------------------------------------------------


def test_sizes_are_multiples_of_the_patch():
    assert full_frame_input_size(720, 1280, 518) == (518, 924)  # shorter side 518, like Depth Anything
    assert full_frame_input_size(240, 320, 518) == (518, 686)
    assert crop_input_size(0.5, 518) == (518, 252)  # crops: the longer side is 518
    assert crop_input_size(2.0, 518) == (252, 518)


def test_normalise_in_mask_maps_min_to_0_max_to_1_and_zero_outside():
    disparity = np.array([[5.0, 1.0, 3.0], [9.0, 2.0, 7.0]], np.float32)
    mask = np.array([[True, True, True], [False, False, True]])
    out = normalise_in_mask(disparity, mask)
    np.testing.assert_allclose(out, [[4 / 6, 0.0, 2 / 6], [0.0, 0.0, 1.0]], atol=1e-7)
    np.testing.assert_array_equal(normalise_in_mask(disparity, np.zeros_like(mask)), 0.0)
    flat = normalise_in_mask(np.full((2, 3), 4.0, np.float32), mask)
    np.testing.assert_array_equal(flat, mask.astype(np.float32))  # constant: the person stays visible


def test_preprocess_is_imagenet_normalised_nchw():
    image = np.random.default_rng(0).integers(0, 256, (28, 42, 3), dtype=np.uint8)
    batch = preprocess([image], 28, 42)
    want = ((image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    assert batch.shape == (1, 3, 28, 42) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], want, atol=1e-5)


def test_full_mode_output_is_masked_normalised_disparity_at_the_right_pixels(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 28, 42, 3), dtype=np.uint8)  # 28 = input_size: no resize at all
    masks = np.stack([ellipse(28, 42, (10 + i, 4, 24 + i, 26)) for i in range(3)])
    boxes = [(10 + i, 4, 24 + i, 26) for i in range(3)]
    estimator = DepthEstimator(red_channel_model(tmp_path / "red.onnx"), providers="cpu", input_size=28, mode="full")
    out = estimator.track_disparity(frames, make_track(boxes, masks))
    assert out.shape == (3, 28, 42) and out.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(out[i], expected_from_red(frames[i], masks[i]), atol=1e-5)


def test_crop_mode_output_maps_back_to_the_right_pixels(tmp_path):
    # Box 14 wide x 28 tall, margin 0 -> window == box, model input 28x14 == window: no resize.
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    boxes = [(20, 6, 34, 34), (30, 10, 44, 38)]
    masks = np.stack([ellipse(40, 60, box) for box in boxes])
    estimator = DepthEstimator(red_channel_model(tmp_path / "red.onnx"), providers="cpu", input_size=28,
                               mode="crop", margin=0.0)
    windows, aspect = crop_windows(np.asarray(boxes, float), masks, margin=0.0)
    assert aspect == 0.5 and (windows[0].x0, windows[0].y0, windows[0].width, windows[0].height) == (20, 6, 14, 28)
    out = estimator.track_disparity(frames, make_track(boxes, masks))
    for i in range(2):
        np.testing.assert_allclose(out[i], expected_from_red(frames[i], masks[i]), atol=1e-5)


def test_larger_network_output_is_brighter_no_inversion(tmp_path):
    """Depth Anything's output is disparity (near = large): it must come out near = 1, far = 0."""
    frames = np.zeros((1, 28, 42, 3), np.uint8)
    frames[0, :14, :, 0] = 200  # top half: large output ("near")
    frames[0, 14:, :, 0] = 50  # bottom half: small output ("far")
    mask = np.zeros((1, 28, 42), bool)
    mask[0, 4:24, 10:30] = True
    estimator = DepthEstimator(red_channel_model(tmp_path / "red.onnx"), providers="cpu", input_size=28, mode="full")
    out = estimator.track_disparity(frames, make_track([(10, 4, 30, 24)], mask))[0]
    assert np.all(out[4:14, 10:30] == 1.0) and np.all(out[14:24, 10:30] == 0.0)


@pytest.mark.parametrize("mode", ["crop", "full"])
def test_resized_crops_and_frames_land_where_the_person_is(tmp_path, mode):
    """With real resizing (margin, frame edge, input 56): a two-tone person keeps its top bright and
    bottom dark, at the right rows, also when the crop window sticks out of the frame."""
    height, width = 120, 160
    frames = np.full((2, height, width, 3), 120, np.uint8)
    boxes = [(40, 20, 70, 100), (0, 30, 28, 110)]  # the second touches the left edge
    masks = np.zeros((2, height, width), bool)
    split = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, y1:y2, x1:x2] = True
        middle = (y1 + y2) // 2
        frames[i, y1:middle, x1:x2, 0] = 220  # near half
        frames[i, middle:y2, x1:x2, 0] = 20  # far half
        split.append(middle)
    estimator = DepthEstimator(red_channel_model(tmp_path / "red.onnx"), providers="cpu", input_size=56,
                               mode=mode, margin=0.2)
    out = estimator.track_disparity(frames, make_track(boxes, masks))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        assert np.all(out[i][~masks[i]] == 0.0)
        inner = slice(x1 + 3, x2 - 3)
        assert out[i, y1 + 3:split[i] - 4, inner].min() > 0.9
        assert out[i, split[i] + 4:y2 - 3, inner].max() < 0.1


def test_full_mode_caches_per_frame_and_forgets_with_reset_or_new_frames(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (6, 28, 42, 3), dtype=np.uint8)
    mask = ellipse(28, 42, (10, 4, 24, 26))
    estimator = DepthEstimator(red_channel_model(tmp_path / "red.onnx"), providers="cpu", input_size=28,
                               mode="full", batch=4)
    counter = estimator.session = CountingSession(estimator.session)
    first = make_track([(10, 4, 24, 26)] * 4, [mask] * 4, positions=[0, 1, 2, 3])
    second = make_track([(10, 4, 24, 26)] * 3, [mask] * 3, positions=[2, 3, 4])
    estimator.track_disparity(frames, first)
    estimator.track_disparity(frames, second)
    assert counter.batches == [4, 1]  # frames 0-3, then only frame 4: 2 and 3 came from the cache
    estimator.reset()
    estimator.track_disparity(frames, second)
    assert counter.batches == [4, 1, 3]
    estimator.track_disparity(frames.copy(), second)  # another clip: its own cache
    assert counter.batches == [4, 1, 3, 3]


def test_frames_without_silhouette_are_zero_and_not_computed(tmp_path):
    frames = np.random.default_rng(4).integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    masks = np.stack([ellipse(40, 60, (20, 6, 34, 34)), np.zeros((40, 60), bool), ellipse(40, 60, (20, 6, 34, 34))])
    estimator = DepthEstimator(red_channel_model(tmp_path / "red.onnx"), providers="cpu", input_size=28,
                               margin=0.0, batch=8)
    counter = estimator.session = CountingSession(estimator.session)
    out = estimator.track_disparity(frames, make_track([(20, 6, 34, 34)] * 3, masks))
    assert counter.batches == [2]
    assert np.all(out[1] == 0.0) and out[0].max() == 1.0


def test_bad_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="gaitid models"):
        DepthEstimator(tmp_path / "absent.onnx")
    path = red_channel_model(tmp_path / "red.onnx")
    with pytest.raises(ValueError, match="mode"):
        DepthEstimator(path, mode="half")
    estimator = DepthEstimator(path, providers="cpu", input_size=28)
    masks = np.zeros((1, 40, 60), bool)
    with pytest.raises(ValueError, match="do not match"):
        estimator.track_disparity(np.zeros((1, 30, 60, 3), np.uint8), make_track([(0, 0, 1, 1)], masks))
    with pytest.raises(ValueError, match="positions"):
        estimator.track_disparity(np.zeros((1, 40, 60, 3), np.uint8), make_track([(0, 0, 1, 1)], masks, [3]))


# -- the real export path ---------------------------------------------------------------------------


def test_v2_small_config_is_the_published_architecture():
    config = v2_small_config()
    backbone = config.backbone_config
    assert (backbone.hidden_size, backbone.num_hidden_layers, backbone.num_attention_heads) == (384, 12, 6)
    assert list(backbone.out_indices) == [3, 6, 9, 12] and backbone.patch_size == 14
    assert list(config.neck_hidden_sizes) == [48, 96, 192, 384] and config.fusion_hidden_size == 64
    assert config.depth_estimation_type == "relative"


@pytest.fixture(scope="module")
def exported_random_v2_small(tmp_path_factory):
    model = random_model(seed=0)
    out = tmp_path_factory.mktemp("depth") / "depth-anything-v2-small.onnx"
    # Checked shapes differ from the export example (2x140x98) in batch, height and width.
    report = export_depth_onnx(model, out, source="random init (test)", check_shapes=((1, 112, 56), (3, 70, 126)))
    return model, out, report


def test_export_matches_torch_with_dynamic_batch_height_width(exported_random_v2_small):
    model, path, report = exported_random_v2_small
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(24.8e6, rel=0.01)  # V2 Small's size
    assert report.parity_relative < 1e-3 and report.output == "disparity"
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    assert "forward" not in vars(model.head)  # the traceable head was only patched in for the export


def test_estimator_runs_the_exported_model_in_both_modes(exported_random_v2_small):
    _, path, _ = exported_random_v2_small
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)
    masks = np.stack([ellipse(60, 80, (30, 10, 50, 55))] * 3)
    track = make_track([(30, 10, 50, 55)] * 3, masks)
    for mode in ("crop", "full"):
        out = DepthEstimator(path, providers="cpu", input_size=56, mode=mode).track_disparity(frames, track)
        assert out.shape == (3, 60, 80) and np.all(out[~masks] == 0)
        assert np.all((out >= 0) & (out <= 1))

"""YOLO-seg on ONNX Runtime: exact postprocessing on planted outputs, and the real export path.

The planted model is a tiny ONNX graph that ignores the pixels and emits chosen detections and
prototypes in the Ultralytics Segment export layout (output0 (B, 4 + nc + 32, A): xywh in input
pixels, class scores, mask coefficients; output1 (B, 32, H/4, W/4)). Everything the segmenter returns
is then known exactly: which boxes survive the class filter, the confidence threshold and NMS, where
they land in the frame after undoing the letterbox, and which pixels their masks cover.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model.zoo import EXPORT_YOLO_SCRIPT, UltralyticsEnvError, ultralytics_python
from service.pipeline.errors import ModelNotFoundError
from service.pipeline.segment_yolo import Letterbox, YoloModelError, YoloSegmenter

NAMES = {0: "person", 1: "bicycle", 2: "car"}
NM = 32  # mask coefficients / prototypes


def planted_model(path: Path, predictions: np.ndarray, protos: np.ndarray, names: dict | None = None,
                  task: str = "segment") -> Path:
    """An ONNX model whose outputs are `predictions` (C, A) and `protos` (32, mh, mw) for every image."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    out0 = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", predictions.shape[0], "anchors"])
    out1 = helper.make_tensor_value_info("output1", TensorProto.FLOAT, ["batch", NM, "mh", "mw"])
    inits = [
        numpy_helper.from_array(predictions[None].astype(np.float32), "pred"),
        numpy_helper.from_array(protos[None].astype(np.float32), "proto"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array(predictions.shape, np.int64), "pred_rest"),
        numpy_helper.from_array(np.array(protos.shape, np.int64), "proto_rest"),
    ]
    nodes = [
        helper.make_node("Shape", ["images"], ["image_shape"]),
        helper.make_node("Slice", ["image_shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "pred_rest"], ["pred_shape"], axis=0),
        helper.make_node("Concat", ["batch", "proto_rest"], ["proto_shape"], axis=0),
        helper.make_node("Expand", ["pred", "pred_shape"], ["output0"]),
        helper.make_node("Expand", ["proto", "proto_shape"], ["output1"]),
    ]
    graph = helper.make_graph(nodes, "planted_yolo_seg", [images], [out0, out1], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"task": task, "stride": "32", "names": repr(names if names is not None else NAMES)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def planted_detections(pad_top: int, pad_left: int, scale: float, nc: int = 3):
    """Detections placed by their *frame* boxes, converted to input pixels with the letterbox.

    Returns (predictions (4 + nc + 32, A), protos for the given proto size built by the caller, the
    expected surviving frame boxes with scores and which proto each one's mask uses).
    """
    def to_input(x1, y1, x2, y2):
        return (x1 * scale + pad_left, y1 * scale + pad_top, x2 * scale + pad_left, y2 * scale + pad_top)

    # (frame xyxy, {class: score}, proto index used as the mask)
    planted = [
        ((50, 20, 150, 180), {0: 0.90}, 0),  # A: a person
        ((52, 22, 150, 180), {0: 0.80}, 0),  # B: A's duplicate -> suppressed by NMS (IoU 0.96)
        ((200, 40, 260, 160), {0: 0.70}, 1),  # C: a second person
        ((230, 40, 290, 160), {0: 0.50}, 1),  # D: overlaps C with IoU 1/3 < 0.45 -> kept
        ((10, 10, 30, 50), {0: 0.20}, 1),  # E: below conf 0.25 -> dropped
        ((270, 100, 310, 150), {0: 0.60, 2: 0.95}, 1),  # F: more car than person -> dropped
    ]
    anchors = len(planted) + 4  # plus empty anchors (all scores 0)
    predictions = np.zeros((4 + nc + NM, anchors), np.float32)
    for a, (frame_box, scores, proto) in enumerate(planted):
        x1, y1, x2, y2 = to_input(*frame_box)
        predictions[0:4, a] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        for cls, score in scores.items():
            predictions[4 + cls, a] = score
        predictions[4 + nc + proto, a] = 1.0  # mask logits = this prototype
    expected = [(planted[i][0], planted[i][1][0], planted[i][2]) for i in (0, 2, 3)]  # score order
    return predictions, expected


def protos_for(mh: int, mw: int, pad_top: int, pad_left: int, scale: float, region: tuple[int, int, int, int]):
    """Prototype 0: +1 on the frame rectangle `region` (x1, y1, x2, y2), -1 elsewhere. Prototype 1: +1
    everywhere (its masks are exactly their boxes). Frame pixels map to proto pixels by (v*scale + pad)/4."""
    protos = np.full((NM, mh, mw), -1.0, np.float32)
    x1, y1, x2, y2 = region
    cols = [int((x * scale + pad_left) / 4) for x in (x1, x2)]
    rows = [int((y * scale + pad_top) / 4) for y in (y1, y2)]
    protos[0, rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    protos[1] = 1.0
    return protos


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


# Frame 200x320 at imgsz 640: scale 2 -> 640x400, rect input 640x416 (pad 8 top, 8 bottom), protos 104x160.
# Square input (rect=False): 640x640, pad 120 top -> protos 160x160.
@pytest.mark.parametrize("rect, input_hw, pad_top", [(True, (416, 640), 8), (False, (640, 640), 120)])
def test_planted_outputs_give_exact_boxes_scores_and_masks(tmp_path, rect, input_hw, pad_top):
    height, width, scale, pad_left = 200, 320, 2.0, 0
    geometry = Letterbox.fit(height, width, 640, 32, rect)
    assert (geometry.input_height, geometry.input_width) == input_hw
    assert (geometry.pad_top, geometry.pad_left) == (pad_top, pad_left)

    predictions, expected = planted_detections(pad_top, pad_left, scale)
    region = (60, 40, 120, 160)  # inside box A
    protos = protos_for(input_hw[0] // 4, input_hw[1] // 4, pad_top, pad_left, scale, region)
    path = planted_model(tmp_path / "planted.onnx", predictions, protos)
    segmenter = YoloSegmenter(path, providers="cpu", imgsz=640, conf=0.25, iou=0.45, batch=2, rect=rect)

    frames = np.random.default_rng(0).integers(0, 256, (5, height, width, 3), dtype=np.uint8)
    results = segmenter.segment(frames)  # 5 frames in batches of 2, 2, 1

    assert len(results) == 5
    for detections in results:
        np.testing.assert_allclose(detections.boxes, [box for box, _, _ in expected], atol=1e-4)
        np.testing.assert_allclose(detections.scores, [score for _, score, _ in expected], atol=1e-6)
        assert detections.boxes.dtype == np.float32 and detections.scores.dtype == np.float32
        assert detections.masks.shape == (3, height, width) and detections.masks.dtype == bool
        # A's mask: prototype 0's rectangle, undone from letterbox and /4 prototype stride.
        np.testing.assert_array_equal(detections.masks[0], box_mask(height, width, region))
        # C and D use the all-positive prototype: their masks are exactly their (cropped-to) boxes.
        np.testing.assert_array_equal(detections.masks[1], box_mask(height, width, expected[1][0]))
        np.testing.assert_array_equal(detections.masks[2], box_mask(height, width, expected[2][0]))


def test_mask_is_cropped_to_its_box(tmp_path):
    """A prototype region larger than the box is cut at the box edges."""
    height, width = 200, 320
    predictions, expected = planted_detections(8, 0, 2.0)
    protos = protos_for(104, 160, 8, 0, 2.0, (0, 0, 320, 200))  # prototype 0 covers the whole frame
    segmenter = YoloSegmenter(planted_model(tmp_path / "m.onnx", predictions, protos), providers="cpu")
    (detections,) = segmenter.segment(np.zeros((1, height, width, 3), np.uint8))
    np.testing.assert_array_equal(detections.masks[0], box_mask(height, width, expected[0][0]))


def test_boxes_are_clipped_and_nothing_found_gives_empty_detections(tmp_path):
    height, width = 200, 320
    predictions = np.zeros((4 + 3 + NM, 3), np.float32)
    predictions[0:4, 0] = (20, 100, 100, 100)  # input x from -30 -> frame x from -15 -> clipped to 0
    predictions[4, 0] = 0.9
    protos = np.ones((NM, 104, 160), np.float32)
    segmenter = YoloSegmenter(planted_model(tmp_path / "m.onnx", predictions, protos), providers="cpu")
    (detections,) = segmenter.segment(np.zeros((1, height, width, 3), np.uint8))
    np.testing.assert_allclose(detections.boxes, [[0, 21, 35, 71]], atol=1e-4)  # ((x-0)/2, (y-8)/2)

    predictions[4, 0] = 0.1  # below conf
    quiet = YoloSegmenter(planted_model(tmp_path / "q.onnx", predictions, protos), providers="cpu")
    (nothing,) = quiet.segment(np.zeros((1, height, width, 3), np.uint8))
    assert nothing.boxes.shape == (0, 4) and nothing.scores.shape == (0,)
    assert nothing.masks.shape == (0, height, width)
    assert quiet.segment(np.zeros((0, height, width, 3), np.uint8)) == []


def test_person_class_comes_from_the_model_names(tmp_path):
    """A model whose 'person' is class 2 keeps class-2 boxes, not class-0 ones."""
    predictions = np.zeros((4 + 3 + NM, 2), np.float32)
    predictions[0:4, 0] = (100, 100, 40, 80)
    predictions[4 + 0, 0] = 0.9  # class 0 ("dog" here)
    predictions[0:4, 1] = (200, 100, 40, 80)
    predictions[4 + 2, 1] = 0.8  # class 2 ("person" here)
    protos = np.ones((NM, 104, 160), np.float32)
    names = {0: "dog", 1: "cat", 2: "person"}
    segmenter = YoloSegmenter(planted_model(tmp_path / "m.onnx", predictions, protos, names), providers="cpu")
    assert segmenter.person_class == 2
    (detections,) = segmenter.segment(np.zeros((1, 200, 320, 3), np.uint8))
    np.testing.assert_allclose(detections.scores, [0.8])


def test_bad_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="gaitid models import"):
        YoloSegmenter(tmp_path / "absent.onnx")
    protos = np.ones((NM, 104, 160), np.float32)
    predictions = np.zeros((4 + 3 + NM, 2), np.float32)
    with pytest.raises(YoloModelError, match="detect"):
        YoloSegmenter(planted_model(tmp_path / "det.onnx", predictions, protos, task="detect"), providers="cpu")
    segmenter = YoloSegmenter(planted_model(tmp_path / "m.onnx", predictions, protos), providers="cpu")
    with pytest.raises(ValueError, match="uint8"):
        segmenter.segment(np.zeros((2, 200, 320, 3), np.float32))
    with pytest.raises(ValueError, match="multiple"):
        YoloSegmenter(tmp_path / "m.onnx", providers="cpu", imgsz=300)


# -- the real export path (needs the Ultralytics environment) ---------------------------------------


@pytest.fixture(scope="module")
def exported_random_yolo(tmp_path_factory) -> tuple[Path, dict]:
    """yolov8n-seg.yaml, randomly initialised, exported by model/export_yolo.py inside .venv-ultra."""
    try:
        python = ultralytics_python()
    except UltralyticsEnvError as exc:
        pytest.skip(f"no Ultralytics environment (.venv-ultra): {str(exc).splitlines()[0]}")
    work = tmp_path_factory.mktemp("yolo")
    out, report = work / "yolov8n-seg.onnx", work / "report.json"
    done = subprocess.run(
        [str(python), str(EXPORT_YOLO_SCRIPT), "--weights", "yolov8n-seg.yaml", "--out", str(out),
         "--imgsz", "640", "--report", str(report)],
        check=False, capture_output=True, text=True, cwd=work, timeout=600,
        env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(work / "cfg"),
             "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(report.read_text())


def test_export_of_random_yolov8n_seg_matches_torch_and_has_dynamic_axes(exported_random_yolo):
    path, report = exported_random_yolo
    # Parity is measured by the script on two shapes (2x640x640 and 1x320x640), relative to scale.
    assert set(report["parity_relative_max_abs_diff"]) == {"output0", "output1"}
    assert max(report["parity_relative_max_abs_diff"].values()) < 1e-4
    assert report["origin"].startswith("random initialisation")
    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outputs["output0"][1] == 4 + 80 + 32 and outputs["output1"][1] == 32


@pytest.mark.parametrize("imgsz", [640, 320])
def test_segmenter_runs_the_exported_model_at_both_sizes(exported_random_yolo, imgsz):
    path, _ = exported_random_yolo
    # Random weights score everything ~1e-5: a tiny conf lets detections (and masks) flow through.
    segmenter = YoloSegmenter(path, providers="cpu", imgsz=imgsz, conf=1e-7, batch=3)
    frames = np.random.default_rng(1).integers(0, 256, (4, 180, 320, 3), dtype=np.uint8)
    results = segmenter.segment(frames)
    assert len(results) == 4
    for detections in results:
        n = len(detections.boxes)
        assert 0 < n <= segmenter.max_detections
        assert detections.masks.shape == (n, 180, 320)
        assert np.all(np.diff(detections.scores) <= 0)  # strongest first
        assert np.all((detections.boxes[:, [0, 2]] >= 0) & (detections.boxes[:, [0, 2]] <= 320))
        assert np.all((detections.boxes[:, [1, 3]] >= 0) & (detections.boxes[:, [1, 3]] <= 180))


def test_frames_decoded_at_the_input_size_give_the_same_detections(tmp_path):
    """The pipeline decodes frames straight to the letterbox size (`input_side`) and passes the clip's
    frame coordinates: boxes and masks must be those of full-size frames, and no resize happens."""
    height, width = 200, 320
    predictions, expected = planted_detections(8, 0, 2.0)
    protos = protos_for(104, 160, 8, 0, 2.0, (60, 40, 120, 160))
    segmenter = YoloSegmenter(planted_model(tmp_path / "m.onnx", predictions, protos), providers="cpu", imgsz=640)
    assert segmenter.input_side == 640
    (full,) = segmenter.segment(np.zeros((1, height, width, 3), np.uint8))
    (decoded_small,) = segmenter.segment(np.zeros((1, 400, 640, 3), np.uint8), (width, height))
    np.testing.assert_allclose(full.boxes, [box for box, _, _ in expected], atol=1e-4)
    np.testing.assert_array_equal(decoded_small.boxes, full.boxes)
    np.testing.assert_array_equal(np.asarray(decoded_small.masks), np.asarray(full.masks))
    np.testing.assert_array_equal(np.asarray(full.masks[0]), box_mask(height, width, (60, 40, 120, 160)))
    # Masks are kept as their boxes' crops, not frame-sized arrays.
    for mask, box in zip(full.masks, full.boxes):
        x1, y1, x2, y2 = np.ceil(box).astype(int)
        assert (mask.top, mask.left) == (y1, x1) and mask.pixels.shape == (y2 - y1, x2 - x1)

"""Person instance masks from a YOLO-seg network (Ultralytics export) on ONNX Runtime.

The ONNX file is what `gaitid models fetch/import` writes (model/export_yolo.py): Ultralytics' own
exporter with dynamic batch, height and width. Its two outputs, as the Ultralytics Segment head emits
them in export mode:

- `output0` (B, 4 + nc + nm, A): per anchor, the box as centre-x, centre-y, width, height in input
  pixels, then nc class scores (sigmoid already applied), then nm (32) mask coefficients;
- `output1` (B, nm, H/4, W/4): mask prototypes. An instance's mask logits are its coefficients
  times the prototypes (a linear combination); mask probability = sigmoid(logits).

What `segment` does per batch of frames:
1. letterbox: resize keeping the aspect ratio, pad with grey (114) to the network size, split evenly
   top/bottom and left/right (the preprocessing the network was trained with). With a dynamic-size
   model and `rect=True`, the padded size is the smallest stride multiple around the resized frame
   instead of a square: a 16:9 frame at 640 runs at 640x384, ~40% less work, same detections. The
   pipeline decodes frames straight to that size (`input_side`), so the resize is then skipped;
2. one ONNX Runtime call for the whole batch;
3. candidates: anchors whose best class is the person class with a score above `conf` (a box that
   is more "bicycle" than "person" is not a person, as in Ultralytics' class filter);
4. non-maximum suppression (OpenCV's `cv2.dnn.NMSBoxes`; the service has no torch/torchvision);
5. masks, for the persons kept by NMS only: logits = coefficients @ prototypes over the prototype
   cells under the instance's box, then mapped straight into frame coordinates with one affine warp
   per instance (bilinear), which undoes the /4 prototype stride and the letterbox in one step,
   evaluated only inside the box (the mask is cropped to its box, as in Ultralytics) and kept as that
   crop (`types.Mask`), thresholded at probability `mask_threshold` (compared as a logit: no sigmoid
   over the whole map is needed);
6. boxes mapped back from input pixels to frame pixels and clipped to the frame.

Frame coordinates are the `size` given to `segment` (the clip's), whatever the frames' own pixel size.
"""

from __future__ import annotations

import ast
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from service.pipeline.config import YOLO_IMGSZ, require_model
from service.pipeline.types import FrameDetections, Mask, Masks
from service.runtime import make_session

COCO_PERSON = 0
LETTERBOX_FILL = 114  # grey padding value used when the network was trained
DEFAULT_STRIDE = 32


class YoloModelError(ValueError):
    """The ONNX file is not a YOLO-seg export this segmenter understands."""


@dataclass(frozen=True)
class Letterbox:
    """How frames of one size are placed into the network input, and back. `frame_*` are the frame
    coordinates' size; the pixels placed may be any uniformly scaled copy (they are resized to
    `resized_*`, which is a no-op when they were decoded at that size)."""

    frame_height: int
    frame_width: int
    input_height: int
    input_width: int
    resized_height: int
    resized_width: int
    pad_top: int
    pad_left: int

    @classmethod
    def fit(cls, frame_height: int, frame_width: int, imgsz: int, stride: int, rect: bool) -> Letterbox:
        gain = min(imgsz / frame_height, imgsz / frame_width)
        resized_w, resized_h = round(frame_width * gain), round(frame_height * gain)
        if rect:  # smallest stride multiple that holds the resized frame
            input_h = int(math.ceil(resized_h / stride) * stride)
            input_w = int(math.ceil(resized_w / stride) * stride)
        else:
            input_h = input_w = imgsz
        # Odd padding: the extra pixel goes bottom/right (round(x - 0.1) for the top/left half).
        pad_top = round((input_h - resized_h) / 2 - 0.1)
        pad_left = round((input_w - resized_w) / 2 - 0.1)
        return cls(frame_height, frame_width, input_h, input_w, resized_h, resized_w, pad_top, pad_left)

    @property
    def scale_x(self) -> float:
        """Input pixels per frame pixel, horizontally (the actual resize ratio after rounding)."""
        return self.resized_width / self.frame_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.frame_height

    def place(self, frames: np.ndarray, out: np.ndarray) -> None:
        """Write letterboxed `frames` (B, H, W, 3) uint8 into `out` (B, input_h, input_w, 3) uint8."""
        out[...] = LETTERBOX_FILL
        top, left = self.pad_top, self.pad_left
        for frame, target in zip(frames, out):
            if (self.resized_height, self.resized_width) == frame.shape[:2]:
                resized = frame
            else:
                resized = cv2.resize(frame, (self.resized_width, self.resized_height), interpolation=cv2.INTER_LINEAR)
            target[top:top + self.resized_height, left:left + self.resized_width] = resized

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in input pixels -> frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_left) / self.scale_x
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_top) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.frame_width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.frame_height)
        return out

    def frame_to_proto_affine(self, proto_height: int, proto_width: int) -> np.ndarray:
        """2x3 matrix taking frame pixel indices to prototype-map pixel indices (pixel centres aligned).

        frame x (centre x + 0.5) -> input u = (x + 0.5) * scale_x + pad_left -> prototype index
        u * (proto_w / input_w) - 0.5; likewise for y.
        """
        px, py = proto_width / self.input_width, proto_height / self.input_height
        sx, sy = self.scale_x * px, self.scale_y * py
        tx = (0.5 * self.scale_x + self.pad_left) * px - 0.5
        ty = (0.5 * self.scale_y + self.pad_top) * py - 0.5
        return np.array([[sx, 0.0, tx], [0.0, sy, ty]], np.float64)


@dataclass(frozen=True)
class _ModelLayout:
    input_name: str
    input_dtype: type
    fixed_batch: int | None  # None = dynamic batch axis
    fixed_size: tuple[int, int] | None  # (H, W) when the spatial axes are static
    stride: int
    class_names: dict[int, str]


class YoloSegmenter:
    """`segment(frames)` -> one `FrameDetections` (persons only) per frame."""

    def __init__(
        self,
        path: str | Path,
        providers: str | list[str] = "auto",
        threads: int = 1,
        imgsz: int = YOLO_IMGSZ,
        conf: float = 0.25,
        iou: float = 0.45,
        batch: int = 8,
        *,
        rect: bool = True,
        mask_threshold: float = 0.5,
        max_detections: int = 100,
        max_candidates: int = 3000,
        person_class: int | None = None,
    ):
        self.path = require_model(Path(path), "yolo")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        if not (0.0 <= conf <= 1.0 and 0.0 < iou <= 1.0):
            raise ValueError(f"conf must be in [0, 1] and iou in (0, 1], got conf={conf}, iou={iou}")
        self.session = make_session(self.path, providers, threads)
        self.layout = _read_layout(self.session, self.path)
        stride = self.layout.stride
        if imgsz <= 0 or imgsz % stride:
            raise ValueError(f"imgsz must be a positive multiple of the model stride {stride}, got {imgsz}")
        if self.layout.fixed_size is not None and self.layout.fixed_size != (imgsz, imgsz):
            raise ValueError(
                f"{self.path.name} was exported for a fixed {self.layout.fixed_size} input; "
                f"imgsz={imgsz} needs a dynamic-size export (`gaitid models import` writes one)")
        self.imgsz = imgsz
        self.conf = float(conf)
        self.iou = float(iou)
        self.batch = self.layout.fixed_batch or max(1, int(batch))
        # A square input is forced when the spatial axes are static.
        self.rect = rect and self.layout.fixed_size is None
        self.mask_logit_threshold = math.log(mask_threshold / (1.0 - mask_threshold))
        self.max_detections = max_detections
        self.max_candidates = max_candidates
        self.person_class = _person_class(self.layout.class_names) if person_class is None else person_class
        self.timings: dict[str, float] = {}  # seconds spent per step in the last `segment` call

    @property
    def input_side(self) -> int:
        """The longer side frames are resized to: decode straight to it."""
        return self.imgsz

    def segment(self, frames: np.ndarray, size: tuple[int, int] | None = None) -> list[FrameDetections]:
        """frames: (T, h, w, 3) uint8 RGB (all the same size, as decoded from one clip). size: (width,
        height) of the frame coordinates of the detections; None: the frames' own."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        width, height = size or (frames.shape[2], frames.shape[1])
        if frames.shape[1] == 0 or frames.shape[2] == 0 or height == 0 or width == 0:
            raise ValueError(f"frames must not be empty, got {frames.shape} for a {width}x{height} frame")
        box = Letterbox.fit(height, width, self.imgsz, self.layout.stride, self.rect)
        buffer = np.empty((self.batch, box.input_height, box.input_width, 3), np.uint8)
        results: list[FrameDetections] = []
        for start in range(0, len(frames), self.batch):
            chunk = frames[start:start + self.batch]
            t0 = time.perf_counter()
            images = self._preprocess(chunk, box, buffer)
            t1 = time.perf_counter()
            predictions, protos = self.session.run(["output0", "output1"], {self.layout.input_name: images})
            t2 = time.perf_counter()
            for i in range(len(chunk)):
                results.append(self._postprocess(predictions[i], protos[i], box))
            t3 = time.perf_counter()
            timings["preprocess"] += t1 - t0
            timings["inference"] += t2 - t1
            timings["postprocess"] += t3 - t2
        self.timings = timings
        return results

    def _preprocess(self, chunk: np.ndarray, box: Letterbox, buffer: np.ndarray) -> np.ndarray:
        """Letterboxed, NCHW, [0, 1]. A fixed-batch model gets the chunk padded with blank frames."""
        count = len(chunk) if self.layout.fixed_batch is None else self.batch
        target = buffer[:count]
        box.place(chunk, target[:len(chunk)])
        target[len(chunk):] = LETTERBOX_FILL
        images = target.transpose(0, 3, 1, 2).astype(np.float32)
        images *= 1.0 / 255.0
        return images.astype(self.layout.input_dtype, copy=False)

    def _postprocess(self, prediction: np.ndarray, protos: np.ndarray, box: Letterbox) -> FrameDetections:
        """prediction (4 + nc + nm, A), protos (nm, mh, mw) of one frame -> person detections."""
        boxes, scores, coefficients = self._persons(prediction, protos.shape[0], box)
        if not len(boxes):
            return FrameDetections.empty(box.frame_height, box.frame_width)
        return FrameDetections(boxes, scores, self._masks(coefficients, protos, boxes, box))

    def _persons(self, prediction: np.ndarray, nm: int, box: Letterbox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (K, 4) in frame pixels, scores (K,), mask coefficients (nm, K)) of the persons NMS keeps,
        strongest first."""
        nc = prediction.shape[0] - 4 - nm
        if nc <= 0:
            raise YoloModelError(f"output0 has {prediction.shape[0]} rows; expected 4 + classes + {nm}")
        scores_all = prediction[4:4 + nc]
        best = scores_all.argmax(axis=0)
        score = scores_all[best, np.arange(scores_all.shape[1])]
        candidates = np.flatnonzero((best == self.person_class) & (score > self.conf))
        if len(candidates) > self.max_candidates:  # keep the strongest; NMS cost grows quadratically
            top = np.argpartition(-score[candidates], self.max_candidates)[:self.max_candidates]
            candidates = candidates[top]
        if len(candidates) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((nm, 0), np.float32)

        candidate_scores = score[candidates]
        cx, cy, w, h = prediction[0:4, candidates].astype(np.float64)
        xyxy_input = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        xywh_input = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
        # Positions into `candidates`, in descending score order.
        picked = np.asarray(
            cv2.dnn.NMSBoxes(xywh_input, candidate_scores.astype(np.float64), self.conf, self.iou), np.int64
        ).reshape(-1)[:self.max_detections]
        return (box.boxes_to_frame(xyxy_input[picked]), candidate_scores[picked].astype(np.float32),
                prediction[4 + nc:, candidates[picked]])

    def _masks(self, coefficients: np.ndarray, protos: np.ndarray, boxes: np.ndarray, box: Letterbox) -> Masks:
        """coefficients (nm, K), protos (nm, mh, mw), boxes (K, 4) in frame pixels -> K masks cut to their boxes."""
        nm, mh, mw = protos.shape
        to_proto = box.frame_to_proto_affine(mh, mw)
        size = (box.frame_width, box.frame_height)
        masks = []
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            # Pixel columns c with x1 <= c < x2 (and rows likewise) belong to the box.
            left, top = math.ceil(x1), math.ceil(y1)
            right, bottom = math.ceil(x2), math.ceil(y2)
            if right <= left or bottom <= top:
                masks.append(Mask(np.zeros((0, 0), bool), 0, 0, size))
                continue
            # The prototype cells the box's pixels sample (bilinear: one more on each side), clamped
            # as BORDER_REPLICATE would clamp them; only those get logits.
            (u0, v0), (u1, v1) = (to_proto[:, :2] @ np.array(corner, np.float64) + to_proto[:, 2]
                                  for corner in ((left, top), (right - 1, bottom - 1)))
            c0, r0 = max(0, min(mw - 1, math.floor(u0))), max(0, min(mh - 1, math.floor(v0)))
            c1, r1 = max(c0, min(mw - 1, math.ceil(u1))), max(r0, min(mh - 1, math.ceil(v1)))
            cells = protos[:, r0:r1 + 1, c0:c1 + 1]
            logits = (coefficients[:, k].astype(np.float32) @ cells.reshape(nm, -1).astype(np.float32))
            window = to_proto.copy()
            window[:, 2] += window[:, :2] @ np.array([left, top], np.float64) - (c0, r0)  # origins: box, cells
            region = cv2.warpAffine(
                logits.reshape(r1 - r0 + 1, c1 - c0 + 1), window, (right - left, bottom - top),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
            )
            masks.append(Mask(region > self.mask_logit_threshold, top, left, size))
        return Masks(masks, size)


def _read_layout(session, path: Path) -> _ModelLayout:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    output_names = [o.name for o in outputs]
    if len(inputs) != 1 or output_names[:2] != ["output0", "output1"]:
        raise YoloModelError(
            f"{path.name} is not a YOLO-seg export: expected one input and outputs output0, output1 "
            f"(got inputs {[i.name for i in inputs]}, outputs {output_names})")
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("task", "segment") != "segment":
        raise YoloModelError(f"{path.name} is a '{meta['task']}' model, not a segmentation model")
    if meta.get("end2end", "False") == "True":
        raise YoloModelError(f"{path.name} is an end-to-end (NMS-free) export; export it with end2end=False")
    shape = inputs[0].shape
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    fixed_size = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    return _ModelLayout(inputs[0].name, dtype, fixed_batch, fixed_size,
                        int(meta.get("stride", DEFAULT_STRIDE)), _class_names(meta.get("names", "")))


def _class_names(text: str) -> dict[int, str]:
    """Ultralytics stores names as a Python dict literal, e.g. "{0: 'person', 1: 'bicycle'}"."""
    if not text:
        return {}
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def _person_class(names: dict[int, str]) -> int:
    """The 'person' class of the model's own names; COCO's index when the file names no classes."""
    for index, name in names.items():
        if name.lower() == "person":
            return index
    return COCO_PERSON

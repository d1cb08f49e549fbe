"""The clip pipeline's configuration: its stage settings (defaults written once, here), the model
files it loads (names, where they live, "is the file there?"), and `PipelineSettings`, the typed
settings read from the environment (GAITID_*).

Light on purpose (dataclasses and pydantic only): the HTTP settings, the CLI and the training
tooling (`model/prepare.py`, `model/zoo.py`) import it without loading OpenCV, supervision or
ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.pipeline.errors import ModelNotFoundError

# Every part's settings read the same environment the same way: GAITID_<FIELD>, or a .env file.
ENV_CONFIG = SettingsConfigDict(env_prefix="GAITID_", env_file=".env", extra="ignore")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = Path(".gaitid")
MODELS_SUBDIR = "models"  # data_dir/models holds installed model files

# Model files. `model/zoo.py` installs the first two under these names; the service loads them.
YOLO_MODEL_FILE = "yolov8n-seg.onnx"
DEPTH_MODEL_FILE = "depth-anything-v2-small.onnx"
# The reference model trained on CASIA-B (see models/README.md), shipped in the repository.
SHIPPED_EMBEDDING_MODEL = REPO_ROOT / "models" / "deepgaitv2-sil-casiab.onnx"

ModelKind = Literal["embedding", "yolo", "depth"]
SegmenterChoice = Literal["auto", "yolo", "bgsub"]
DepthMode = Literal["crop", "full"]

# How to get each kind of model file: said by every error and readiness check about a missing one.
MODEL_FIX: dict[ModelKind, str] = {
    "embedding": (
        "set GAITID_EMBEDDING_MODEL to an exported model (the reference one ships in the repository's "
        "models/), or train and export one: `gaitid train model/configs/deepgaitv2_sil_casiab_cpu.yaml "
        "--out runs/sil` then `gaitid export runs/sil/last.pt MODEL.onnx`"
    ),
    "yolo": "run `gaitid models fetch` (needs internet) or, offline, `gaitid models import DIR` with "
            "yolov8n-seg.pt in DIR",
    "depth": "run `gaitid models fetch` (needs internet) or, offline, `gaitid models import DIR`",
}
_MODEL_NAMES: dict[ModelKind, str] = {
    "embedding": "embedding model", "yolo": "YOLO segmentation model", "depth": "depth model",
}

# Stage defaults. Each is the one home of its numbers; PipelineSettings takes its defaults from them.
YOLO_IMGSZ = 640  # YOLO-seg letterbox size (its training size)
DEPTH_INPUT_SIZE = 518  # Depth Anything V2's own input size
DEPTH_INPUT: DepthMode = "crop"  # see service.pipeline.depth


@dataclass(frozen=True)
class DecodeLimits:
    """What `decode_video` accepts and keeps (see service.pipeline.decode)."""

    max_frames: int = 300
    max_duration_s: float = 120.0
    max_side: int = 1280
    on_too_long: Literal["reject", "truncate"] = "reject"


@dataclass(frozen=True)
class TrackerConfig:
    """Which tracks can carry a gait, and ByteTrack's knobs (see service.pipeline.track)."""

    min_track_frames: int = 15
    min_person_height: int = 40  # pixels, median over the track's boxes
    # ByteTrack knobs (supervision's names). Detections scoring under the activation threshold
    # only extend existing tracks (ByteTrack's second association); they never start one.
    track_activation_threshold: float = 0.25
    lost_track_buffer_s: float = 1.0  # how long a lost person may reappear under the same id
    minimum_matching_threshold: float = 0.8


@dataclass(frozen=True)
class PipelineConfig:
    """How `ClipPipeline` runs its stages."""

    decode: DecodeLimits = field(default_factory=DecodeLimits)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # Mask pixels below which a frame counts as empty at alignment (at clip resolution).
    min_mask_pixels: int = 20
    decoder_threads: int = 1
    # Drop frames whose person box touches the frame border: someone entering or leaving the view
    # is cut off there, and a cut silhouette is a wrong gait shape (CASIA-B's own sequences also
    # start only once the walker is fully inside).
    drop_truncated: bool = True
    # Datasets keep the 64x64 alignment (the OpenGait layout; training trims to 44 at load time);
    # the service feeds the network 64x44.
    full_width: bool = False
    # Decode straight to the segmenter's working resolution (FFmpeg shrinks while converting). False:
    # full-size frames that the segmenter shrinks with OpenCV, ~1.5x slower at 720p, giving (with the
    # background model on whole frames, `BgSubConfig(tile_side=None)`) the silhouettes of the
    # releases before issue 16 (mean IoU 1.0000 on the shared clips). Background
    # subtraction on hand-held footage is so sensitive to exact pixel values that the two shrinks
    # (about a grey level apart) give per-frame silhouettes agreeing to a mean IoU of ~0.9, of equal
    # quality where the truth is known (tests/service/pipeline/test_working_resolution.py).
    decode_at_working_size: bool = True
    # A strip of the person's crops per track (service.pipeline.thumbnails): what the service shows an
    # operator to check an answer; a few milliseconds per track.
    previews: bool = True


_DECODE = DecodeLimits()
_TRACKER = TrackerConfig()


def missing_model(path: Path, kind: ModelKind) -> ModelNotFoundError | None:
    """None when the model file at `path` exists, else the error that says how to install it.
    The one place that asks "is the model file there?"."""
    if path.is_file():
        return None
    alternative = "; or set GAITID_SEGMENTER=bgsub for a fixed camera" if kind == "yolo" else ""
    return ModelNotFoundError(
        f"The {_MODEL_NAMES[kind]} {path} does not exist: {MODEL_FIX[kind]}{alternative}.",
        path=str(path), kind=kind,
    )


def require_model(path: Path, kind: ModelKind) -> Path:
    """`path`, or ModelNotFoundError saying how to install the file."""
    error = missing_model(path, kind)
    if error is not None:
        raise error
    return path


class PipelineSettings(BaseSettings):
    """The clip pipeline's settings: runtime, model files, segmenter, decode and track limits."""

    model_config = ENV_CONFIG

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="gallery database, index and model files")
    providers: str = Field("auto", description="ONNX Runtime providers: auto | cpu | cuda | tensorrt,cuda")
    threads: int = Field(1, ge=1, description="intra-op threads per ONNX Runtime session (and decoder threads)")

    # Models. Relative paths are resolved against data_dir/models.
    embedding_model: Path = SHIPPED_EMBEDDING_MODEL
    segmenter: SegmenterChoice = Field(
        "auto", description="auto = YOLO-seg when its ONNX file is present, else background subtraction"
    )
    yolo_model: Path = Path(YOLO_MODEL_FILE)
    yolo_imgsz: int = YOLO_IMGSZ
    depth_model: Path = Path(DEPTH_MODEL_FILE)
    depth_input: DepthMode = DEPTH_INPUT
    depth_size: int = DEPTH_INPUT_SIZE
    # Background subtraction (the segmenter without a YOLO model): an empty-scene clip of the same
    # fixed camera makes the background model better from the first frame. Optional.
    background_clip: Path | None = None

    # Decoding limits.
    max_duration_s: float = _DECODE.max_duration_s
    max_frames: int = _DECODE.max_frames
    max_side: int = _DECODE.max_side

    # Tracks.
    min_track_frames: int = _TRACKER.min_track_frames
    min_person_height: int = _TRACKER.min_person_height

    @property
    def models_dir(self) -> Path:
        return self.data_dir / MODELS_SUBDIR

    def model_path(self, path: Path) -> Path:
        """An absolute path as is; a relative one inside data_dir/models."""
        return path if path.is_absolute() else self.models_dir / path

    @property
    def embedding_path(self) -> Path:
        return self.model_path(self.embedding_model)

    @property
    def yolo_path(self) -> Path:
        return self.model_path(self.yolo_model)

    @property
    def depth_path(self) -> Path:
        return self.model_path(self.depth_model)

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(max_frames=self.max_frames, max_duration_s=self.max_duration_s, max_side=self.max_side)

    def tracker_config(self) -> TrackerConfig:
        return TrackerConfig(min_track_frames=self.min_track_frames, min_person_height=self.min_person_height)

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(decode=self.decode_limits(), tracker=self.tracker_config(),
                              decoder_threads=self.threads)

    def extraction_fingerprint(self) -> dict[str, str]:
        """The settings that change which tracks a video yields (re-scoring records them)."""
        fields = ("segmenter", "yolo_model", "yolo_imgsz", "depth_model", "depth_input", "depth_size", "max_frames",
                  "max_duration_s", "max_side", "min_track_frames", "min_person_height", "background_clip")
        return {name: str(getattr(self, name)) for name in fields}

"""Service configuration, read from the environment (prefix GAITID_) or a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# The reference model trained on CASIA-B (see models/README.md), shipped in the repo.
SHIPPED_EMBEDDING_MODEL = REPO_ROOT / "models" / "deepgaitv2-sil-casiab.onnx"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GAITID_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".gaitid"), description="gallery database, index and model files")
    providers: str = Field("auto", description="ONNX Runtime providers: auto | cpu | cuda | tensorrt,cuda")
    threads: int = Field(1, ge=1, description="intra-op threads per ONNX Runtime session")

    # Models. Relative paths are resolved against data_dir/models.
    embedding_model: Path = SHIPPED_EMBEDDING_MODEL
    segmenter: Literal["auto", "yolo", "bgsub"] = Field(
        "auto", description="auto = YOLO-seg when its ONNX file is present, else background subtraction"
    )
    yolo_model: Path = Path("yolov8n-seg.onnx")
    yolo_imgsz: int = 640
    depth_model: Path = Path("depth-anything-v2-small.onnx")
    depth_input: Literal["crop", "full"] = "crop"
    depth_size: int = 518

    # Decoding limits.
    max_upload_mb: float = 200.0
    max_duration_s: float = 120.0
    max_frames: int = 300
    max_side: int = 1280

    # Tracks and decisions.
    min_track_frames: int = 15
    min_person_height: int = 40
    top_k: int = 5
    # The shipped model's equal-error point from `gaitid calibrate` on subjects it never trained on
    # (models/README.md); re-calibrate for another model or your own footage.
    unknown_threshold: float = Field(0.9996, description="mean per-part cosine below which the answer is unknown")

    # Comma-separated API keys; empty disables authentication (the embedded single-user default).
    api_keys: str = ""

    # Background subtraction (the segmenter without a YOLO model): an empty-scene clip of the same
    # fixed camera makes the background model better from the first frame. Optional.
    background_clip: Path | None = None

    # Serving. Each clip in flight holds its decoded frames (up to max_frames x max_side^2 x 3 bytes),
    # so this bounds memory as well as CPU.
    max_concurrent_clips: int = Field(2, ge=1, description="clips processed at once; more requests wait")
    embed_batching: bool = Field(False, description="batch the embedding network across concurrent requests")
    embed_batch_max: int = Field(8, ge=1, description="most sequences in one batched network call")
    embed_batch_wait_ms: float = Field(10.0, ge=0, description="how long a batch waits for more requests")

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def gallery_dir(self) -> Path:
        return self.data_dir / "gallery"

    def model_path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.models_dir / path


@lru_cache
def get_settings() -> Settings:
    return Settings()

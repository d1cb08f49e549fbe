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
    unknown_threshold: float = Field(0.5, description="mean per-part cosine below which the answer is unknown")

    # Comma-separated API keys; empty disables authentication (the embedded single-user default).
    api_keys: str = ""

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def model_path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.models_dir / path


@lru_cache
def get_settings() -> Settings:
    return Settings()

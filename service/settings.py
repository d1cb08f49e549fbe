"""The service's settings, one typed part per concern, all read from the environment (prefix
GAITID_, or a .env file) here, in `load_settings`:

- `pipeline`: `service.pipeline.config.PipelineSettings` (models, segmenter, decode/track limits);
- `gallery`: where the gallery lives and how its answers are decided (top-k, open-set threshold);
- `http`: what the HTTP server accepts (upload size, API keys and the keys file, concurrency,
  embedding batching).

Variable names are the field names, flat (GAITID_MAX_FRAMES, GAITID_API_KEYS...), whatever part
holds the field.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings

from gaitid.contract import EmbeddingModelMetadata
from gallery.backends import Backend
from gallery.types import IndexKind
from service.pipeline.config import DEFAULT_DATA_DIR, ENV_CONFIG, PipelineSettings

if TYPE_CHECKING:
    from gallery import Gallery

# For a model that was never calibrated and no GAITID_UNKNOWN_THRESHOLD: a guess, reported as such.
UNCALIBRATED_THRESHOLD = 0.5

GALLERY_SUBDIR = "gallery"


class GallerySettings(BaseSettings):
    """The gallery's folder and the defaults of its answers."""

    model_config = ENV_CONFIG

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="gallery database, index and model files")
    top_k: int = Field(5, ge=1, description="candidate subjects per track")
    # None: the threshold the embedding model declares (`gaitid calibrate --write-threshold` measured it
    # on subjects the model never trained on); set it to decide otherwise, e.g. after calibrating on
    # your own footage.
    unknown_threshold: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="similarity below which the answer is unknown (default: the embedding model's calibrated one)")
    # Where the search vectors live (gallery.backends); subjects and sequences stay in SQLite under data_dir.
    index_backend: Backend = Field("faiss", description="faiss (in the service process) or milvus (milvus_uri)")
    # compact: ~140 bytes/sequence in memory, shortlist re-ranked with the stored embeddings (FAISS backend).
    index_kind: IndexKind = Field("flat", description="flat (exact float32) | fp16 | compact (gallery.compact_index)")
    milvus_uri: str | None = Field(
        None, description="Milvus server, e.g. http://milvus:19530 (default: a milvus-lite file in the gallery folder)")
    rescore_state: Path | None = Field(
        None, description="a `gaitid rescore` state file (or its folder): enables GET /subjects/{id}/sightings")

    @property
    def gallery_dir(self) -> Path:
        return self.data_dir / GALLERY_SUBDIR

    @property
    def index_options(self) -> dict[str, Any]:
        """Where and how the gallery keeps its search vectors: the same for the service and every
        command, so that neither finds the other's index stale and rebuilds it."""
        return {"backend": self.index_backend, "index_kind": self.index_kind, "milvus_uri": self.milvus_uri}

    def open_gallery(self, gallery_dir: Path | None = None, **options: Any) -> Gallery:
        """Open the gallery at `gallery_dir` (None: `gallery_dir` of these settings) with `index_options`;
        `options` are Gallery's other keyword arguments (threshold, similarity...)."""
        from gallery import Gallery

        return Gallery(gallery_dir or self.gallery_dir, **self.index_options, **options)

    def decision_threshold(self, model: Callable[[], EmbeddingModelMetadata | None]) -> tuple[float, str]:
        """The open-set threshold in force and where it comes from: this setting, else the model's
        calibrated one, else UNCALIBRATED_THRESHOLD. `model` (the embedding model's metadata) is read
        only when the setting leaves the choice to it."""
        if self.unknown_threshold is not None:
            return self.unknown_threshold, "GAITID_UNKNOWN_THRESHOLD"
        metadata = model()
        if metadata is not None and metadata.open_set_threshold is not None:
            return metadata.open_set_threshold, "the embedding model's calibration"
        return UNCALIBRATED_THRESHOLD, ("uncalibrated default: run `gaitid calibrate MODEL DATA --write-threshold` "
                                        "or set GAITID_UNKNOWN_THRESHOLD")


class HttpSettings(BaseSettings):
    """What the HTTP server accepts and how much it does at once."""

    model_config = ENV_CONFIG

    max_upload_mb: float = Field(200.0, gt=0, description="largest video upload")
    # Comma-separated API keys of the first releases: each opens its own gallery (named by 16 hex digits
    # of the key's sha256) with role admin. Prefer keys_file. No keys anywhere = no authentication
    # (the embedded single-user default: everyone is admin of the gallery "default").
    api_keys: str = ""
    # TOML file of API keys (name, gallery, role, sha256 of the secret), edited by the operator and read
    # at start-up; its format is in service.auth. `gaitid keys new` makes an entry.
    keys_file: Path | None = Field(None, description="the operator's API keys file (TOML)")
    # Each clip in flight holds its decoded frames (up to max_frames x max_side^2 x 3 bytes), so this
    # bounds memory as well as CPU.
    max_concurrent_clips: int = Field(2, ge=1, description="clips processed at once; more requests wait")
    # Processed clips kept so a track can be chosen (or the same video sent again) without re-running the
    # pipeline, and their thumbnails served (service.clip_cache). 0 keeps none.
    clip_cache_mb: float = Field(256.0, ge=0, description="memory for processed clips kept for reuse")
    clip_cache_ttl_s: float = Field(900.0, gt=0, description="how long a processed clip and its thumbnails are kept")
    embed_batching: bool = Field(False, description="batch the embedding network across concurrent requests")
    embed_batch_max: int = Field(8, ge=1, description="most sequences in one batched network call")
    embed_batch_wait_ms: float = Field(10.0, ge=0, description="how long a batch waits for more requests")

    @property
    def api_key_bytes(self) -> tuple[bytes, ...]:
        """api_keys ("k1,k2") as bytes; blanks ignored."""
        return tuple(k.strip().encode() for k in self.api_keys.split(",") if k.strip())


class Settings(BaseModel):
    """All of the service's settings, by part. Build it with `load_settings`."""

    model_config = ConfigDict(frozen=True)

    pipeline: PipelineSettings
    gallery: GallerySettings
    http: HttpSettings


_PARTS: dict[str, type[BaseSettings]] = {"pipeline": PipelineSettings, "gallery": GallerySettings,
                                         "http": HttpSettings}


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Every part from the environment (and `env_file`; None reads none). `overrides` are field names
    of any part (`data_dir`, `max_frames`, `api_keys`...); a field several parts hold (`data_dir`)
    is set in each."""
    unknown = set(overrides) - {name for part in _PARTS.values() for name in part.model_fields}
    if unknown:
        raise TypeError(f"no such setting: {', '.join(sorted(unknown))}")
    parts = {
        name: part(_env_file=env_file, **{k: v for k, v in overrides.items() if k in part.model_fields})
        for name, part in _PARTS.items()
    }
    return Settings(**parts)


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()

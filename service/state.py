"""What the app builds once at startup and every request reads: settings, metrics, the API key ring,
the embedding model, the clip pipeline, the clip cache, the cameras, the gallery, and the readiness checks that
say what could not be loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from gaitid.contract import SequenceEmbedder
from gallery import Gallery
from service.auth import KeyRing
from service.cameras import CameraRegistry
from service.clip_cache import ClipCache
from service.metrics import ServiceMetrics
from service.pipeline.pipeline import ClipProcessor
from service.settings import Settings


@dataclass
class ReadinessCheck:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class ServiceState:
    """Everything the app builds once at startup (see service.startup)."""

    settings: Settings
    metrics: ServiceMetrics
    clip_limiter: anyio.CapacityLimiter
    clip_cache: ClipCache  # processed clips kept for reuse, and their thumbnails
    cameras: CameraRegistry  # the galleries' cameras and their processing settings
    keyring: KeyRing = field(default_factory=KeyRing)  # no keys: authentication off
    embedder: SequenceEmbedder | None = None  # the loaded embedding model (re-embedding uses it)
    pipeline: ClipProcessor | None = None
    gallery: Gallery | None = None
    # Startup checks (model files, pipeline construction); gallery health is checked live.
    checks: list[ReadinessCheck] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)  # objects with close(), closed in reverse order

    def not_ready_message(self, component: str) -> str:
        failed = [c for c in self.checks if not c.ok]
        reasons = "; ".join(f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in failed)
        return f"the service is not ready: the {component} is unavailable" + (f" ({reasons})" if reasons else "")

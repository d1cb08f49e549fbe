"""What the app builds once at startup and every request reads: settings, metrics, the clip
pipeline, the gallery, and the readiness checks that say what could not be loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from gallery import Gallery
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
    pipeline: ClipProcessor | None = None
    gallery: Gallery | None = None
    # Startup checks (model files, pipeline construction); gallery health is checked live.
    checks: list[ReadinessCheck] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)  # objects with close(), closed in reverse order

    @property
    def api_keys(self) -> tuple[bytes, ...]:
        return self.settings.http.api_key_bytes

    def not_ready_message(self, component: str) -> str:
        failed = [c for c in self.checks if not c.ok]
        reasons = "; ".join(f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in failed)
        return f"the service is not ready: the {component} is unavailable" + (f" ({reasons})" if reasons else "")

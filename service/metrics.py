"""Prometheus metrics: requests and latency per route, pipeline stage timings, batch sizes and
the gallery's size. Each app owns its registry, so several apps (tests) never share counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Whole-request latencies: health checks take microseconds, a long clip on a CPU tens of seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

GallerySizes = Callable[[], Iterable[tuple[str, int, int]]]  # (namespace, subjects, sequences)


class _GalleryCollector(Collector):
    """Reads the gallery's size when scraped, so the numbers are never stale."""

    def __init__(self, sizes: GallerySizes):
        self._sizes = sizes

    def collect(self):
        subjects = GaugeMetricFamily("gaitid_gallery_subjects", "Enrolled subjects", labels=["namespace"])
        sequences = GaugeMetricFamily("gaitid_gallery_sequences", "Enrolled sequences", labels=["namespace"])
        try:
            rows = list(self._sizes())
        except Exception:  # a scrape must not fail because the gallery is closed or not open yet
            log.debug("gallery size unavailable for /metrics", exc_info=True)
            rows = []
        for namespace, subject_count, sequence_count in rows:
            subjects.add_metric([namespace], subject_count)
            sequences.add_metric([namespace], sequence_count)
        yield subjects
        yield sequences


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "gaitid_http_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gaitid_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "gaitid_pipeline_stage_seconds", "Time spent in each clip pipeline stage", ["stage"],
            buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.tracks_per_clip = Histogram(
            "gaitid_tracks_per_clip", "Person tracks found per clip", buckets=(0, 1, 2, 3, 5, 8, 13, 21),
            registry=self.registry,
        )
        self.decisions = Counter(
            "gaitid_identifications", "Identified tracks by decision", ["decision"], registry=self.registry
        )
        self.embed_batch_size = Histogram(
            "gaitid_embedding_batch_size", "Sequences per embedding network call (cross-request batching)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry,
        )
        self.embed_batch_seconds = Histogram(
            "gaitid_embedding_batch_seconds", "Embedding network time per batch", buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )

    def watch_gallery(self, sizes: GallerySizes) -> None:
        self.registry.register(_GalleryCollector(sizes))

    def observe_stages(self, timings_s: Mapping[str, float]) -> None:
        for stage, seconds in timings_s.items():
            self.stage_seconds.labels(stage).observe(max(0.0, float(seconds)))

    def observe_batch(self, size: int, seconds: float) -> None:
        self.embed_batch_size.observe(size)
        self.embed_batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template
    ("/subjects/{subject_id}", never the raw path, which would make one series per subject)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before answering, the server answers 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)

"""Prometheus metrics: requests and latency per route, pipeline stage timings, batch sizes, the
gallery's size, and the clip cache's hits, misses, evictions, expirations and bytes held (to size
GAITID_CLIP_CACHE_MB and GAITID_CLIP_CACHE_TTL_S). Each app owns its registry, so several apps (tests)
never share counters. The gallery and the clip cache are read when scraped: they keep their own
numbers and know nothing of Prometheus."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from service.clip_cache import ClipCacheStats

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


class _ClipCacheCollector(Collector):
    """Reads the clip cache's counts when scraped (service.clip_cache.ClipCache.stats)."""

    def __init__(self, stats: Callable[[], ClipCacheStats]):
        self._stats = stats

    def collect(self):
        stats = self._stats()
        hits = CounterMetricFamily("gaitid_clip_cache_hits", "Clip cache look-ups that found the clip, by look-up "
                                   "(upload: the same bytes again, no pipeline run; clip_id: a clip named by its id)",
                                   labels=["lookup"])
        misses = CounterMetricFamily("gaitid_clip_cache_misses", "Clip cache look-ups that did not find the clip, by "
                                     "look-up (upload: the pipeline ran; clip_id: answered clip_expired)",
                                     labels=["lookup"])
        for lookup, count in stats.hits.items():
            hits.add_metric([lookup], count)
        for lookup, count in stats.misses.items():
            misses.add_metric([lookup], count)
        yield hits
        yield misses
        yield CounterMetricFamily("gaitid_clip_cache_evictions", "Kept clips dropped, least recently used first, to "
                                  "stay within GAITID_CLIP_CACHE_MB", value=stats.evictions)
        yield CounterMetricFamily("gaitid_clip_cache_expirations", "Kept clips dropped GAITID_CLIP_CACHE_TTL_S after "
                                  "they were processed or last uploaded again", value=stats.expirations)
        yield CounterMetricFamily("gaitid_clip_cache_too_large", "Processed clips larger than the whole clip cache, "
                                  "never kept", value=stats.too_large)
        yield GaugeMetricFamily("gaitid_clip_cache_bytes", "Bytes held by kept clips", value=stats.bytes_kept)
        yield GaugeMetricFamily("gaitid_clip_cache_max_bytes", "The clip cache's bound (GAITID_CLIP_CACHE_MB)",
                                value=stats.max_bytes)
        yield GaugeMetricFamily("gaitid_clip_cache_clips", "Clips kept", value=stats.clips)


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

    def watch_clip_cache(self, stats: Callable[[], ClipCacheStats]) -> None:
        self.registry.register(_ClipCacheCollector(stats))

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

"""Processed clips kept for a bounded time, so choosing a track after a 409, or sending the same video
again, needs no second run of the clip pipeline; and the tracks' thumbnails served meanwhile.

A clip is known by `clip_id`: the sha256 of the uploaded bytes (with the processing overrides --
rotation, a camera's background or region -- when any, since they change the result), 32 hex digits.
What is kept is what enrolling or identifying a track needs: the aligned sequences (silhouettes,
depth, frames, boxes), their embeddings, the clip's video facts, each track's quality and its
thumbnail image (WebP, ~15 KB) -- never the video or its frames.

Bounded: least recently used clips go first once the kept bytes pass `max_bytes`, and every clip goes
`ttl_s` seconds after it was processed (cachetools.TTLCache). A clip is visible only to the galleries
whose callers uploaded it (another tenant holding the same bytes gets it by uploading them).

Counted (`ClipCache.stats`, exported at /metrics by service.metrics): hits and misses of repeat
uploads and of clip ids, clips dropped to stay within `max_bytes` (evictions) or after `ttl_s`
(expirations), clips too large to keep at all, and the bytes held -- what sizing GAITID_CLIP_CACHE_MB
and GAITID_CLIP_CACHE_TTL_S needs. Plain counters read on demand: the cache knows nothing of HTTP or
Prometheus.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from cachetools import TTLCache

from service.pipeline.pipeline import ClipResult
from service.pipeline.quality import TrackQuality, track_quality
from service.pipeline.thumbnails import encode, strip_of
from service.pipeline.types import AlignedSequence, ClipOverrides

# How a clip is looked up, as the hit and miss counts tell them apart: "upload" (the same bytes sent
# again: a hit saves a pipeline run) and "clip_id" (a clip named by its id: /enroll with clip_id,
# thumbnails; a miss is a clip_expired answer).
LOOKUPS = ("upload", "clip_id")

CLIP_ID_HEX = 32
CLIP_ID_PATTERN = rf"^[0-9a-f]{{{CLIP_ID_HEX}}}$"
_CHUNK = 1 << 20


class ClipExpiredError(Exception):
    """The clip id names no clip kept for the caller: never uploaded by its gallery, or expired."""

    code = "clip_expired"

    def __init__(self, clip_id: str, ttl_s: float):
        self.clip_id = clip_id
        self.message = (f"Clip {clip_id} is not kept any more (clips are kept {ttl_s:g} s after processing, fewer "
                        "when many arrive): upload the video again.")
        self.details = {"clip_id": clip_id}
        super().__init__(self.message)


def clip_id_of(file: BinaryIO, overrides: ClipOverrides | None = None) -> str:
    """The id of an upload: sha256 of its bytes (read in chunks from the start, left at the start),
    and of the overrides' fingerprint when there are any."""
    digest = hashlib.sha256()
    file.seek(0)
    while chunk := file.read(_CHUNK):
        digest.update(chunk)
    file.seek(0)
    if overrides is not None and (fingerprint := overrides.fingerprint()):
        digest.update(b"\0overrides\0" + fingerprint.encode())
    return digest.hexdigest()[:CLIP_ID_HEX]


@dataclass
class ProcessedClip:
    """A clip through the pipeline, as /enroll and /identify answer from it (fresh or kept)."""

    clip_id: str
    result: ClipResult  # its sequences carry no preview: the thumbnails below replace them
    thumbnails: dict[int, bytes]  # track_id -> image file (thumbnails.MEDIA_TYPE)
    quality: dict[int, TrackQuality]  # track_id -> quality
    source_name: str  # the upload's file name
    galleries: set[str] = field(default_factory=set)
    kept: bool = False  # whether the cache holds it (the thumbnails are served)

    def sequence(self, track_id: int) -> AlignedSequence | None:
        return next((s for s in self.result.sequences if s.track_id == track_id), None)

    @property
    def nbytes(self) -> int:
        """About the memory it holds."""
        arrays = sum(s.silhouettes.nbytes + (0 if s.depth is None else s.depth.nbytes) + s.boxes.nbytes
                     + s.frame_indices.nbytes for s in self.result.sequences)
        return arrays + sum(e.nbytes for e in self.result.embeddings.values()) + sum(map(len, self.thumbnails.values()))


def processed_clip(clip_id: str, result: ClipResult, source_name: str) -> ProcessedClip:
    """The kept form of a pipeline result: previews encoded as images (and dropped), quality measured."""
    thumbnails = {s.track_id: encode(strip_of(s)) for s in result.sequences}
    quality = {s.track_id: track_quality(s, result.fps) for s in result.sequences}
    slim = replace(result, sequences=[replace(s, preview=None) for s in result.sequences])
    return ProcessedClip(clip_id=clip_id, result=slim, thumbnails=thumbnails, quality=quality,
                         source_name=source_name)


@dataclass(frozen=True)
class ClipCacheStats:
    """What the cache did since it was made (counts) and holds now."""

    hits: dict[str, int]  # lookup (LOOKUPS) -> clips found
    misses: dict[str, int]  # lookup -> clips not found (never kept, expired, evicted, or another gallery's)
    evictions: int  # least recently used clips dropped to make room (max_bytes)
    expirations: int  # clips dropped ttl_s after they were processed or last uploaded again
    too_large: int  # processed clips larger than the whole cache, never kept (none counted with max_bytes 0)
    clips: int
    bytes_kept: int
    max_bytes: int


class _CountingTTLCache(TTLCache):
    """cachetools.TTLCache counting what it drops and why: `popitem` is its least-recently-used eviction
    (called while an insertion would pass maxsize), `expire` removes clips past their time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evictions = 0
        self.expirations = 0

    def expire(self, time=None):
        expired = super().expire(time)
        self.expirations += len(expired)
        return expired

    def popitem(self):
        item = super().popitem()
        self.evictions += 1
        return item


class ClipCache:
    """LRU + TTL store of ProcessedClips, bounded in bytes; thread-safe. max_bytes=0 keeps nothing."""

    def __init__(self, max_bytes: int, ttl_s: float, timer: Callable[[], float] = time.monotonic):
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self._clips: _CountingTTLCache = _CountingTTLCache(
            maxsize=max(1, self.max_bytes), ttl=self.ttl_s, timer=timer, getsizeof=lambda clip: clip.nbytes)
        self._lock = threading.Lock()
        self._hits = dict.fromkeys(LOOKUPS, 0)
        self._misses = dict.fromkeys(LOOKUPS, 0)
        self._too_large = 0

    def __len__(self) -> int:
        with self._lock:
            self._clips.expire()
            return len(self._clips)

    @property
    def bytes_kept(self) -> int:
        with self._lock:
            self._clips.expire()
            return int(self._clips.currsize)

    def stats(self) -> ClipCacheStats:
        """The counts so far and what is held now (clips past their time are dropped, and counted, first)."""
        with self._lock:
            self._clips.expire()
            return ClipCacheStats(hits=dict(self._hits), misses=dict(self._misses), evictions=self._clips.evictions,
                                  expirations=self._clips.expirations, too_large=self._too_large,
                                  clips=len(self._clips), bytes_kept=int(self._clips.currsize),
                                  max_bytes=self.max_bytes)

    def put(self, processed: ProcessedClip, gallery: str) -> ProcessedClip:
        """Keep `processed` for `gallery`'s callers (a clip larger than the whole cache is not kept)."""
        processed.galleries.add(gallery)
        if self.max_bytes <= 0:
            return processed
        if processed.nbytes > self.max_bytes:
            with self._lock:
                self._too_large += 1
            return processed
        with self._lock:
            self._clips[processed.clip_id] = processed
            processed.kept = True
        return processed

    def get(self, clip_id: str, gallery: str) -> ProcessedClip | None:
        """The clip if `gallery`'s callers uploaded it and it is still kept (marks it recently used)."""
        with self._lock:
            processed = self._clips.get(clip_id)
            found = processed if processed is not None and gallery in processed.galleries else None
            self._count("clip_id", found is not None)
            return found

    def uploaded_again(self, clip_id: str, gallery: str) -> ProcessedClip | None:
        """A repeat upload of the same bytes (any gallery: the caller holds them): the kept clip, now
        also `gallery`'s and kept for another `ttl_s`, or None."""
        with self._lock:
            processed = self._clips.get(clip_id)
            self._count("upload", processed is not None)
            if processed is None:
                return None
            processed.galleries.add(gallery)
            self._clips[clip_id] = processed
            return processed

    def _count(self, lookup: str, hit: bool) -> None:  # under the lock
        (self._hits if hit else self._misses)[lookup] += 1

    def require(self, clip_id: str, gallery: str) -> ProcessedClip:
        processed = self.get(clip_id, gallery)
        if processed is None:
            raise ClipExpiredError(clip_id, self.ttl_s)
        return processed

    def thumbnail(self, clip_id: str, track_id: int, gallery: str) -> bytes | None:
        processed = self.get(clip_id, gallery)
        return None if processed is None else processed.thumbnails.get(track_id)

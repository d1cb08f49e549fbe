"""service.clip_cache: clip ids (bytes + overrides), the byte bound (least recently used go first), the time
bound, galleries, what a kept clip holds (encoded thumbnails and quality, no preview arrays), and what it counts."""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.clip_cache import ClipCache, ClipExpiredError, clip_id_of, processed_clip
from service.pipeline.pipeline import ClipResult
from service.pipeline.types import AlignedSequence, ClipOverrides


def result(tracks: int = 1, frames: int = 30, preview: bool = True) -> ClipResult:
    sequences = [AlignedSequence(
        track_id=t, silhouettes=np.full((frames, 64, 44), 255, np.uint8), depth=None,
        frame_indices=np.arange(frames, dtype=np.int64), boxes=np.tile([[0, 0, 40, 120]], (frames, 1)).astype(np.float32),
        preview=np.full((96, 300, 3), 80, np.uint8) if preview else None) for t in range(1, tracks + 1)]
    return ClipResult(sequences=sequences, embeddings={t: np.ones((8, 4), np.float32) for t in range(1, tracks + 1)},
                      timings={}, frame_count=frames, fps=25.0, size=(320, 240), source_size=(320, 240), rotation=0)


def test_clip_id_is_the_content_and_the_overrides():
    video = io.BytesIO(b"some video bytes" * 1000)
    plain = clip_id_of(video)
    assert len(plain) == 32 and video.tell() == 0
    assert clip_id_of(io.BytesIO(b"some video bytes" * 1000), ClipOverrides()) == plain
    assert clip_id_of(io.BytesIO(b"other bytes")) != plain
    turned = clip_id_of(video, ClipOverrides(rotation=90))
    assert turned != plain and turned != clip_id_of(video, ClipOverrides(rotation=180))


def test_a_kept_clip_holds_png_thumbnails_and_quality_not_previews():
    processed = processed_clip("a" * 32, result(tracks=2), "walk.mp4")
    assert set(processed.thumbnails) == {1, 2} and all(p[8:12] == b"WEBP" for p in processed.thumbnails.values())
    assert all(s.preview is None for s in processed.result.sequences)
    assert processed.quality[1].frames_used == 30 and processed.quality[1].walk_seconds == pytest.approx(1.2)
    assert processed.nbytes >= 2 * 30 * 64 * 44


def test_least_recently_used_clips_go_first_past_the_byte_bound():
    one = processed_clip("1" * 32, result(), "a").nbytes
    cache = ClipCache(max_bytes=int(2.5 * one), ttl_s=60)
    clips = [processed_clip(str(i) * 32, result(), "v") for i in range(3)]
    cache.put(clips[0], "g")
    cache.put(clips[1], "g")
    assert cache.get(clips[0].clip_id, "g") is clips[0]  # now the most recently used
    cache.put(clips[2], "g")
    assert len(cache) == 2 and cache.bytes_kept <= cache.max_bytes
    assert cache.get(clips[1].clip_id, "g") is None and cache.get(clips[0].clip_id, "g") is clips[0]
    too_big = processed_clip("9" * 32, result(tracks=3), "v")
    assert cache.put(too_big, "g").kept is False and cache.get(too_big.clip_id, "g") is None


def test_clips_expire_and_a_repeat_upload_keeps_them_longer():
    now = [0.0]
    cache = ClipCache(max_bytes=2**24, ttl_s=10, timer=lambda: now[0])
    kept = cache.put(processed_clip("c" * 32, result(), "v"), "g")
    now[0] = 8.0
    assert cache.uploaded_again(kept.clip_id, "other") is kept  # holding the bytes: shared with "other"
    now[0] = 15.0
    assert cache.require(kept.clip_id, "other") is kept and cache.thumbnail(kept.clip_id, 1, "g")
    now[0] = 18.5
    with pytest.raises(ClipExpiredError) as expired:
        cache.require(kept.clip_id, "g")
    assert expired.value.code == "clip_expired" and "10 s" in expired.value.message
    assert len(cache) == 0 and cache.bytes_kept == 0


def test_a_clip_is_only_seen_by_its_galleries_and_zero_bytes_keeps_nothing():
    cache = ClipCache(max_bytes=2**24, ttl_s=60)
    kept = cache.put(processed_clip("d" * 32, result(), "v"), "acme")
    assert cache.get(kept.clip_id, "globex") is None and cache.thumbnail(kept.clip_id, 1, "globex") is None
    off = ClipCache(max_bytes=0, ttl_s=60)
    assert off.put(processed_clip("e" * 32, result(), "v"), "g").kept is False and len(off) == 0


def test_stats_count_hits_misses_evictions_expirations_and_bytes():
    now = [0.0]
    one = processed_clip("1" * 32, result(), "a").nbytes
    cache = ClipCache(max_bytes=int(2.5 * one), ttl_s=10, timer=lambda: now[0])
    clips = [processed_clip(str(i) * 32, result(), "v") for i in range(3)]
    assert cache.uploaded_again(clips[0].clip_id, "g") is None  # a first upload: a miss
    cache.put(clips[0], "g")
    assert cache.uploaded_again(clips[0].clip_id, "g") is clips[0]  # the same bytes again: a hit
    assert cache.get(clips[0].clip_id, "g") is clips[0] and cache.get(clips[0].clip_id, "other") is None
    cache.put(clips[1], "g")
    cache.put(clips[2], "g")  # past the byte bound: clips[0], the least recently used, is evicted
    cache.put(processed_clip("9" * 32, result(tracks=3), "v"), "g")  # larger than the whole cache
    stats = cache.stats()
    assert stats.hits == {"upload": 1, "clip_id": 1} and stats.misses == {"upload": 1, "clip_id": 1}
    assert (stats.evictions, stats.expirations, stats.too_large, stats.clips) == (1, 0, 1, 2)
    assert stats.bytes_kept == 2 * one and stats.max_bytes == int(2.5 * one)
    now[0] = 11.0
    assert cache.thumbnail(clips[1].clip_id, 1, "g") is None  # expired: a miss by clip id
    stats = cache.stats()
    assert (stats.evictions, stats.expirations, stats.clips, stats.bytes_kept) == (1, 2, 0, 0)
    assert stats.misses["clip_id"] == 2
    off = ClipCache(max_bytes=0, ttl_s=60)
    assert off.put(processed_clip("8" * 32, result(), "v"), "g").kept is False
    assert off.stats().too_large == 0  # a cache that is off keeps nothing, and nothing is "too large" for it

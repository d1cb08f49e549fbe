"""service.pipeline.thumbnails (the strip of a person's crops, silhouette outlined) and
service.pipeline.quality (numbers and plain-language warnings about a track)."""

from __future__ import annotations

import numpy as np
import pytest

from service.pipeline.quality import MIN_PERSON_HEIGHT_PX, mask_coverage, track_quality
from service.pipeline.thumbnails import OUTLINE_RGB, TILE_HEIGHT, silhouette_strip, strip_of, track_strip
from service.pipeline.types import AlignedSequence, Clip, Mask, Masks, Track


def clip_with_a_person(frames: int = 12, pixel_scale: float = 1.0) -> tuple[Clip, Track]:
    """A grey 320x240 scene (frames at `pixel_scale` of it) with a red 30x100 person moving right."""
    width, height = 320, 240
    pixel_w, pixel_h = round(width * pixel_scale), round(height * pixel_scale)
    pictures = np.full((frames, pixel_h, pixel_w, 3), 100, np.uint8)
    boxes, masks = [], []
    for t in range(frames):
        x0, y0 = 40 + 10 * t, 60
        box = (x0, y0, x0 + 30, y0 + 100)
        pictures[t, int(y0 * pixel_scale):int((y0 + 100) * pixel_scale),
                 int(x0 * pixel_scale):int((x0 + 30) * pixel_scale)] = (220, 30, 30)
        dense = np.zeros((height, width), bool)
        dense[y0:y0 + 100, x0:x0 + 30] = True
        masks.append(Mask.from_frame(dense))
        boxes.append(box)
    clip = Clip(frames=pictures, frame_indices=np.arange(frames, dtype=np.int64), fps=25.0,
                source_size=(width, height), coordinate_size=(width, height))
    track = Track(1, np.arange(frames), np.arange(frames, dtype=np.int64), np.array(boxes, np.float32),
                  Masks(masks, (width, height)))
    return clip, track


@pytest.mark.parametrize("pixel_scale", [1.0, 0.5])
def test_strip_shows_the_persons_crops_with_the_silhouette_outlined(pixel_scale):
    clip, track = clip_with_a_person(pixel_scale=pixel_scale)
    strip = track_strip(clip, track)
    assert strip.dtype == np.uint8 and strip.shape[0] == TILE_HEIGHT and strip.shape[2] == 3
    # 8 tiles of a 30x100 box padded by 8 px each side: 46x116 scaled to 96 high -> 38 wide each.
    assert strip.shape[1] == 8 * round(TILE_HEIGHT * 46 / 116)
    outline = np.all(strip == OUTLINE_RGB, axis=2)
    assert 0.05 < outline.mean() < 0.3, "an outline, not a fill"
    reds = np.all(np.abs(strip.astype(int) - (220, 30, 30)) < 40, axis=2)
    greys = np.all(np.abs(strip.astype(int) - 100) < 20, axis=2)
    assert reds.mean() > 0.2 and greys.mean() > 0.1  # the person inside, the scene around
    # Every tile has an outline around its person: the middle row crosses it twice.
    tile = strip[:, :38]
    middle = np.all(tile[TILE_HEIGHT // 2] == OUTLINE_RGB, axis=1)
    assert 2 <= middle.sum() <= 6


def test_a_sequence_without_preview_shows_its_aligned_silhouettes():
    silhouettes = np.zeros((20, 64, 44), np.uint8)
    silhouettes[:, 10:60, 15:30] = 255
    sequence = AlignedSequence(1, silhouettes, None, np.arange(20), np.zeros((20, 4), np.float32))
    strip = strip_of(sequence)
    assert strip.shape == (64, 8 * 44, 3) and np.array_equal(strip, silhouette_strip(sequence))
    preview = np.full((96, 100, 3), 7, np.uint8)
    assert strip_of(AlignedSequence(1, silhouettes, None, np.arange(20), np.zeros((20, 4)), preview=preview)) is preview


def sequence(frames: int, height: float, fps_step: int = 1, cut: int = 0, fill: float = 1.0) -> AlignedSequence:
    silhouettes = np.zeros((frames, 64, 44), np.uint8)
    silhouettes[:, :, 10:34] = 255  # a 64x24 box, filled
    if fill < 1.0:  # the same box, its inside emptied: only `fill` of it stays on
        silhouettes[:, :, 11 + round(22 * fill):33] = 0
    boxes = np.tile(np.array([[0, 0, height / 3, height]], np.float32), (frames, 1))
    return AlignedSequence(1, silhouettes, None, np.arange(0, frames * fps_step, fps_step), boxes,
                           frames_cut_at_border=cut)


def test_a_good_walk_has_no_warnings():
    quality = track_quality(sequence(60, 180.0), fps=25.0)
    assert quality.warnings == () and quality.frames_used == 60 and quality.person_height_px == 180.0
    assert quality.walk_seconds == pytest.approx(2.4) and quality.mask_coverage == 1.0


def test_each_doubt_has_its_plain_language_warning():
    short = track_quality(sequence(20, 180.0), fps=25.0).warnings
    assert len(short) == 1 and short[0].startswith("Short walk: 20 frames over 0.8 s")
    small = track_quality(sequence(60, 70.0), fps=25.0).warnings
    expected = (f"The person is small in the picture (70 px tall; {MIN_PERSON_HEIGHT_PX} px or more is reliable). "
                "Film closer or at a higher resolution.")
    assert small == (expected,)
    cut = track_quality(sequence(60, 180.0, cut=40), fps=25.0).warnings
    assert len(cut) == 1 and "cut off at the picture's edge (40 of 100 frames" in cut[0]
    assert track_quality(sequence(60, 180.0, cut=10), fps=25.0).warnings == ()
    patchy = track_quality(sequence(60, 180.0, fill=0.2), fps=25.0)
    assert patchy.mask_coverage < 0.3 and len(patchy.warnings) == 1 and "patchy" in patchy.warnings[0]


def test_mask_coverage_is_the_share_of_the_box_filled():
    silhouettes = np.zeros((2, 64, 44), np.uint8)
    silhouettes[0, 0:10, 0:10] = 255  # fills its box
    silhouettes[1, 0:10, 0:10] = 255
    silhouettes[1, 19, 19] = 255  # box 20x20, 101 pixels on
    assert mask_coverage(silhouettes) == pytest.approx((1.0 + 101 / 400) / 2)
    assert mask_coverage(np.zeros((3, 64, 44), np.uint8)) == 0.0

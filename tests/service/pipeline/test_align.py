"""Silhouette alignment (paper §3.2 / OpenGait): geometry, depth registration, odd inputs, CASIA-B."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.dataset import load_sequence
from service.pipeline.align import align_sequence, align_to_64x64
from service.pipeline.types import Mask, Masks

# Sequences from different conditions and views (front, side, back, oblique).
CASIA_SEQUENCES = ["002/nm-01/090", "010/bg-01/018", "050/cl-02/162", "074/nm-06/000"]


def shifted(image: np.ndarray, dx: int) -> np.ndarray:
    """Horizontal shift with zero fill (np.roll would wrap pixels round)."""
    out = np.zeros_like(image)
    if dx > 0:
        out[:, dx:] = image[:, :-dx]
    elif dx < 0:
        out[:, :dx] = image[:, -dx:]
    else:
        out[:] = image
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero((a > 0) | (b > 0))
    return np.count_nonzero((a > 0) & (b > 0)) / max(union, 1)


def rectangle_masks(t: int, h: int, w: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    masks = np.zeros((t, h, w), bool)
    masks[:, top:bottom, left:right] = True
    return masks


def walker(h: int = 240, w: int = 320, x: int = 100, y: int = 40, height: int = 150) -> np.ndarray:
    """A crude person: head disc, torso, two legs apart; asymmetric so centring is exercised."""
    mask = np.zeros((h, w), np.uint8)
    s = height / 150
    cv2.circle(mask, (x, int(y + 12 * s)), int(12 * s), 1, -1)
    cv2.rectangle(mask, (int(x - 15 * s), int(y + 24 * s)), (int(x + 15 * s), int(y + 85 * s)), 1, -1)
    cv2.line(mask, (x, int(y + 85 * s)), (int(x - 25 * s), int(y + 150 * s)), 1, max(1, int(9 * s)))
    cv2.line(mask, (x, int(y + 85 * s)), (int(x + 10 * s), int(y + 150 * s)), 1, max(1, int(9 * s)))
    cv2.line(mask, (int(x + 15 * s), int(y + 30 * s)), (int(x + 40 * s), int(y + 70 * s)), 1, max(1, int(6 * s)))
    return mask.astype(bool)


# --- CASIA-B: the reference alignment --------------------------------------------------------------


@pytest.mark.data
def test_realigning_casia_silhouettes_gives_them_back(casia_root):
    """CASIA-B pkl frames are already aligned; aligning them again must be (almost) the identity.

    Measured on 60 random sequences (4,983 frames): 95.8% identical, 99.98% identical up to a
    one-column shift (the pkl centre was found on the anti-aliased image before binarisation, ours
    on the binary one, so a half-mass column on a boundary can round either way).
    """
    frames = exact = within_one_column = 0
    ious = []
    for key in CASIA_SEQUENCES:
        reference = load_sequence(casia_root / key)
        sils, depth, kept = align_to_64x64(reference > 0)
        assert depth is None
        np.testing.assert_array_equal(kept, np.arange(len(reference)))  # no frame is empty
        assert sils.shape == reference.shape and sils.dtype == np.uint8
        for ours, theirs in zip(sils, reference):
            frames += 1
            exact += np.array_equal(ours, theirs)
            within_one_column += any(np.array_equal(shifted(ours, dx), theirs) for dx in (-1, 0, 1))
            ious.append(iou(ours, theirs))
    assert exact / frames >= 0.9
    assert within_one_column / frames >= 0.99
    assert np.mean(ious) >= 0.98


@pytest.mark.data
@pytest.mark.parametrize("scale", [2.0, 3.0])
def test_scaled_and_moved_casia_silhouettes_align_back(casia_root, scale):
    """A CASIA-B silhouette enlarged and dropped anywhere in a big frame aligns back to itself:
    alignment removes position and size. Measured mean IoU 0.982-0.997 over the four sequences."""
    rng = np.random.default_rng(0)
    for key in CASIA_SEQUENCES:
        reference = load_sequence(casia_root / key)
        frames = np.zeros((len(reference), 400, 500), bool)
        for t, sil in enumerate(reference):
            big = cv2.resize(sil, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) >= 128
            h, w = big.shape
            y, x = rng.integers(0, 400 - h), rng.integers(0, 500 - w)
            frames[t, y:y + h, x:x + w] = big
        sils, _, kept = align_to_64x64(frames)
        assert len(kept) == len(reference)
        assert np.mean([iou(a, b) for a, b in zip(sils, reference[kept])]) >= 0.97, key


# --- geometry ---------------------------------------------------------------------------------


def test_rectangle_is_scaled_to_height_64_and_centred():
    masks = rectangle_masks(1, 240, 320, top=40, bottom=200, left=100, right=150)  # 160 x 50
    sils, _, kept = align_to_64x64(masks)
    assert kept.tolist() == [0]
    columns = np.flatnonzero(sils[0].any(axis=0))
    assert sils[0][:, columns].all()  # full height, solid
    assert len(columns) == 20  # 50 * 64 / 160
    assert columns[0] == 22 and columns[-1] == 41  # the half-mass column lands on column 32


def test_centre_follows_silhouette_mass_not_box():
    """A heavy body with a thin arm sticking out: the window centres on the body, not the box."""
    mask = np.zeros((1, 200, 300), bool)
    mask[0, 20:180, 100:140] = True  # body
    mask[0, 60:66, 140:220] = True  # long thin arm to the right
    sils, _, _ = align_to_64x64(mask)
    body_columns = np.flatnonzero(sils[0][50])  # source row ~145, below the arm: body only
    assert abs(body_columns.mean() - 31.5) <= 2.0


def test_network_input_is_the_64x64_alignment_trimmed_10px_each_side():
    masks = np.stack([walker(x=60 + 10 * t) for t in range(5)])
    depth = masks * np.float32(0.5)
    full, full_depth, kept_full = align_to_64x64(masks, depth)
    sils, net_depth, kept = align_sequence(masks, depth)
    assert sils.shape == (5, 64, 44) and net_depth.shape == (5, 64, 44)
    np.testing.assert_array_equal(kept, kept_full)
    np.testing.assert_array_equal(sils, full[:, :, 10:54])
    np.testing.assert_array_equal(net_depth, full_depth[:, :, 10:54])


def test_vertical_position_and_size_do_not_matter():
    near = walker(x=200, y=20, height=200)[None]
    far = walker(x=60, y=150, height=60)[None]
    a, _, _ = align_to_64x64(near)
    b, _, _ = align_to_64x64(far)
    assert iou(a[0], b[0]) >= 0.85  # the same drawing at 200 px and 60 px tall


# --- depth stays registered with the silhouette -----------------------------------------------


def test_depth_constant_on_the_mask_comes_out_constant_exactly_on_the_silhouette():
    masks = np.stack([walker(x=80 + 20 * t, height=120 + 10 * t) for t in range(6)])
    depth = np.where(masks, np.float32(0.7), np.float32(0.0))
    sils, aligned_depth, _ = align_sequence(masks, depth)
    assert aligned_depth.dtype == np.float32
    np.testing.assert_allclose(aligned_depth[sils > 0], 0.7, atol=1e-5)
    assert not aligned_depth[sils == 0].any()


def test_depth_pattern_follows_the_same_geometry_as_the_silhouette():
    """Depth = a function of the mask: 1.0 on the upper half of the person, 0.25 on the lower half.
    After alignment the boundary must sit at the middle row of the 64-px silhouette."""
    masks = np.stack([walker(x=90 + 15 * t, y=10 + 5 * t, height=100 + 20 * t) for t in range(5)])
    depth = np.zeros(masks.shape, np.float32)
    for t, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        middle = (rows[0] + rows[-1] + 1) / 2
        upper = np.arange(mask.shape[0])[:, None] < middle
        depth[t] = np.where(mask, np.where(upper, 1.0, 0.25), 0.0)
    sils, aligned_depth, _ = align_to_64x64(masks, depth)
    on = sils > 0
    assert np.allclose(aligned_depth[:, :31][on[:, :31]], 1.0, atol=1e-5)
    assert np.allclose(aligned_depth[:, 33:][on[:, 33:]], 0.25, atol=1e-5)
    # ... and a horizontal split lands where the silhouette's columns say it should.
    for t, mask in enumerate(masks):
        cols = np.flatnonzero(mask.any(axis=0))
        depth[t] = np.where(mask, np.where(np.arange(mask.shape[1]) < cols.mean(), 1.0, 0.5)[None, :], 0.0)
    sils, aligned_depth, _ = align_to_64x64(masks, depth)
    for sil, d in zip(sils, aligned_depth):
        left_half = (d == 1.0).any(axis=0)
        right_half = (d == 0.5).any(axis=0)
        assert np.flatnonzero(left_half).max() <= np.flatnonzero(right_half).min() + 1


def test_depth_shape_must_match_masks():
    with pytest.raises(ValueError):
        align_sequence(np.ones((2, 10, 10), bool), np.ones((2, 10, 11), np.float32))


# --- odd inputs -------------------------------------------------------------------------------


def test_empty_frames_are_dropped_and_reported():
    masks = np.stack([walker(x=100), np.zeros((240, 320), bool), walker(x=140), np.zeros((240, 320), bool)])
    sils, depth, kept = align_sequence(masks, np.zeros(masks.shape, np.float32))
    assert kept.tolist() == [0, 2]
    assert sils.shape == (2, 64, 44) and depth.shape == (2, 64, 44)


def test_all_empty_gives_empty_arrays():
    sils, depth, kept = align_sequence(np.zeros((3, 50, 40), bool), np.zeros((3, 50, 40), np.float32))
    assert sils.shape == (0, 64, 44) and depth.shape == (0, 64, 44) and kept.shape == (0,)


def test_min_pixels_drops_specks():
    masks = np.zeros((2, 100, 100), bool)
    masks[0, 10:12, 10:12] = True  # 4 pixels
    masks[1, 10:90, 40:60] = True
    _, _, kept = align_sequence(masks, min_pixels=20)
    assert kept.tolist() == [1]


@pytest.mark.parametrize(
    "region",
    [
        (slice(None), slice(None)),  # the whole frame
        (slice(0, 120), slice(0, 30)),  # top-left corner
        (slice(100, 240), slice(300, 320)),  # bottom-right, touching two borders
        (slice(0, 240), slice(319, 320)),  # last column only, full height
        (slice(5, 6), slice(7, 8)),  # one pixel
        (slice(50, 51), slice(0, 320)),  # one row: far wider than tall
    ],
)
def test_border_touching_and_degenerate_masks_do_not_crash(region):
    masks = np.zeros((1, 240, 320), bool)
    masks[(0, *region)] = True
    depth = masks.astype(np.float32)
    sils, aligned_depth, kept = align_sequence(masks, depth)
    assert sils.shape[1:] == (64, 44) and aligned_depth.shape == sils.shape
    assert len(kept) == len(sils) <= 1
    if len(sils):
        assert sils.any()
        assert not aligned_depth[sils == 0].any()


def test_one_pixel_mask_becomes_a_full_height_block():
    masks = np.zeros((1, 30, 30), bool)
    masks[0, 12, 17] = True
    sils, _, kept = align_to_64x64(masks)
    assert kept.tolist() == [0]
    assert sils[0].all()  # 1x1 scaled to 64x64 fills the window: odd but well defined


@pytest.mark.parametrize("encoding", ["bool", "uint8_01", "uint8_255"])
def test_mask_encodings_are_equivalent(encoding):
    masks = np.stack([walker(x=90 + 30 * t) for t in range(3)])
    expected, _, _ = align_sequence(masks)
    encoded = {
        "bool": masks,
        "uint8_01": masks.astype(np.uint8),
        "uint8_255": masks.astype(np.uint8) * 255,
    }[encoding]
    got, _, _ = align_sequence(encoded)
    np.testing.assert_array_equal(got, expected)


def test_soft_silhouettes_keep_grey_levels_when_not_binarised():
    masks = np.stack([walker(height=200)])
    soft, _, _ = align_to_64x64(masks, binarize=False)
    hard, _, _ = align_to_64x64(masks)
    assert set(np.unique(hard)) <= {0, 255}
    assert len(np.unique(soft)) > 2  # anti-aliased edges from the shrink
    np.testing.assert_array_equal(hard > 0, soft >= 128)


def test_rejects_non_sequence_input():
    with pytest.raises(ValueError):
        align_sequence(np.ones((10, 10), bool))


# --- masks kept at a working resolution (service.pipeline.types.Mask) --------------------------------


def reference_align(masks, depth=None, binarize=True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Alignment as it was first written (64x64): each mask's crop brought to frame resolution with
    cv2.warpAffine, then resized as float32. The fast paths must give exactly this at frame
    resolution, and (almost) this from a working resolution."""
    sils, depths, kept = [], [], []
    for t, mask in enumerate(Masks.of(masks)):
        if mask.at_frame_resolution:
            crop, top, left = mask.pixels, mask.top, mask.left
        else:
            box = mask.box()
            if box is None:
                continue
            x0, y0, x1, y1 = (int(v) for v in box)
            warp = np.array([[mask.scale_x, 0.0, (x0 + 0.5) * mask.scale_x - 0.5 - mask.left],
                             [0.0, mask.scale_y, (y0 + 0.5) * mask.scale_y - 0.5 - mask.top]])
            crop = cv2.warpAffine(mask.pixels.view(np.uint8) * np.uint8(255), warp, (x1 - x0, y1 - y0),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) > 127
            top, left = y0, x0
        if not crop.any():
            continue
        rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
        crop = crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) * 255
        top, left = top + rows[0], left + cols[0]
        h, w = crop.shape
        new_w = max(1, round(w * 64 / h))
        inter = cv2.INTER_AREA if h >= 64 else cv2.INTER_LINEAR
        mass = cv2.resize(crop, (new_w, 64), interpolation=inter).reshape(64, new_w)
        column_mass = np.cumsum(mass.sum(axis=0))
        first = min(int(np.searchsorted(column_mass, column_mass[-1] / 2.0, side="right")), new_w - 1) - 32
        src = slice(max(0, first), min(new_w, first + 64))
        dst = slice(src.start - first, src.stop - first)
        sil = np.clip(np.rint(mass), 0, 255).astype(np.uint8)
        if binarize:
            sil = np.where(sil >= 128, 255, 0).astype(np.uint8)
        out = np.zeros((64, 64), np.uint8)
        out[:, dst] = sil[:, src]
        if not out.any():
            continue
        if depth is not None:
            inside = crop > 0
            d = np.where(inside, depth[t, top:top + h, left:left + w], 0).astype(np.float32)
            weighted = cv2.resize(d, (new_w, 64), interpolation=inter).reshape(64, new_w)
            coverage = cv2.resize(inside.astype(np.float32), (new_w, 64), interpolation=inter).reshape(64, new_w)
            mean = np.divide(weighted, coverage, out=np.zeros_like(weighted), where=coverage > 1e-6)
            out_depth = np.zeros((64, 64), np.float32)
            out_depth[:, dst] = mean[:, src]
            out_depth[out == 0] = 0.0
            depths.append(np.clip(out_depth, 0.0, 1.0))
        sils.append(out)
        kept.append(t)
    return np.stack(sils), (np.stack(depths) if depth is not None else None), np.asarray(kept, np.int64)


def at_working_resolution(frame_mask: np.ndarray, scale: float) -> Mask:
    """A frame-sized mask as a segmenter working at `scale` would keep it (area-downscaled, > half)."""
    h, w = frame_mask.shape
    grid_w, grid_h = round(w * scale), round(h * scale)
    grid = cv2.resize(frame_mask.astype(np.float32), (grid_w, grid_h), interpolation=cv2.INTER_AREA) > 0.5
    rows, cols = np.flatnonzero(grid.any(axis=1)), np.flatnonzero(grid.any(axis=0))
    pixels = grid[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return Mask(pixels, int(rows[0]), int(cols[0]), (w, h), grid_w / w, grid_h / h)


def walk_720p(frames: int = 8) -> np.ndarray:
    """A walker crossing a 1280x720 frame, growing from 60 to ~400 px tall (small ones are enlarged)."""
    return np.stack([walker(720, 1280, x=150 + 120 * t, y=60 + 20 * t, height=60 + 50 * t) for t in range(frames)])


@pytest.mark.parametrize("binarize", [True, False])
def test_frame_resolution_alignment_is_bit_identical_to_the_reference(binarize):
    """Plain arrays and `Masks` at frame resolution keep today's float32 INTER_AREA path, bit for bit
    (the benchmark's exact mode relies on it), depth included."""
    frames = walk_720p()
    frames[3, :, :] = False  # an empty frame
    depth = np.where(frames, np.linspace(0.1, 0.9, 1280, dtype=np.float32)[None, None, :], 0).astype(np.float32)
    expected = reference_align(frames, depth, binarize)
    for masks in (frames, Masks.from_frames(frames)):
        got = align_to_64x64(masks, depth, binarize=binarize)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scale", [0.375, 0.25, 0.75])
def test_working_resolution_alignment_matches_the_reference(scale):
    """From a working resolution, alignment reads the area average off the crop's integral image
    instead of resizing it: the same frames, and the same silhouettes but for exact half-covered
    pixels that cv2's float32 rounding sends either way (9 clips: 726 of 739 frames identical, mean
    IoU 0.9999). Tolerance: mean IoU >= 0.995, every frame >= 0.97, 3/4 of the frames identical."""
    frames = walk_720p()
    masks = Masks([at_working_resolution(f, scale) for f in frames], (1280, 720))
    expected, _, expected_kept = reference_align(masks)
    sils, _, kept = align_to_64x64(masks)
    np.testing.assert_array_equal(kept, expected_kept)
    ious = [iou(a, b) for a, b in zip(sils, expected)]
    assert np.mean(ious) >= 0.995 and min(ious) >= 0.97, ious
    assert sum(np.array_equal(a, b) for a, b in zip(sils, expected)) >= 0.75 * len(sils)  # measured 7-8 of 8


@pytest.mark.parametrize("scale, tolerance", [(0.375, 0.94), (0.75, 0.96)])
def test_working_resolution_alignment_stays_close_to_frame_resolution(scale, tolerance):
    """The same masks given at frame resolution and at a working resolution align alike: what is lost
    is only what the working resolution loses (thin limbs' edges). Measured mean IoU 0.955 at 0.375
    and 0.979 at 0.75, the same as before the integral-image path."""
    frames = np.stack([walker(720, 1280, x=200 + 60 * t, y=80 + 7 * t, height=300 + 40 * t) for t in range(8)])
    full, _, full_kept = align_sequence(Masks.from_frames(frames))
    work, _, work_kept = align_sequence(Masks([at_working_resolution(f, scale) for f in frames], (1280, 720)))
    np.testing.assert_array_equal(work_kept, full_kept)
    assert np.mean([iou(a, b) for a, b in zip(work, full)]) >= tolerance


def test_working_resolution_depth_stays_registered_and_silhouettes_do_not_depend_on_it():
    frames = walk_720p()
    masks = Masks([at_working_resolution(f, 0.375) for f in frames], (1280, 720))
    dense = np.asarray(masks)
    depth = np.where(dense, np.float32(0.6), np.float32(0.0))
    sils, aligned_depth, kept = align_sequence(masks, depth)
    alone, _, alone_kept = align_sequence(masks)
    np.testing.assert_array_equal(sils, alone)
    np.testing.assert_array_equal(kept, alone_kept)
    np.testing.assert_allclose(aligned_depth[sils > 0], 0.6, atol=1e-5)
    assert not aligned_depth[sils == 0].any()
    full, full_depth, _ = align_to_64x64(masks, depth)
    np.testing.assert_array_equal(sils, full[:, :, 10:54])
    np.testing.assert_array_equal(aligned_depth, full_depth[:, :, 10:54])


@pytest.mark.parametrize("scale", [3 / 8, 1 / 4, 3 / 4, 5 / 16, 1 / 2, 0.3])
def test_frame_crop_by_resize_equals_warp_affine(scale):
    """`Mask.frame_crop` upscales with cv2.resize where the scale allows (p/q, p odd, q <= 16): the same
    pixels as the warpAffine it replaced; other scales (0.3) still use warpAffine."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        pixels = cv2.GaussianBlur(rng.random((rng.integers(8, 60), rng.integers(8, 40))), (0, 0), 2) > 0.5
        if not pixels.any():
            continue
        mask = Mask(pixels, int(rng.integers(0, 30)), int(rng.integers(0, 30)), (400, 300), scale, scale)
        crop, top, left = mask.frame_crop()
        x0, y0, x1, y1 = (int(v) for v in mask.box())
        warp = np.array([[scale, 0.0, (x0 + 0.5) * scale - 0.5 - mask.left],
                         [0.0, scale, (y0 + 0.5) * scale - 0.5 - mask.top]])
        expected = cv2.warpAffine(pixels.view(np.uint8) * np.uint8(255), warp, (x1 - x0, y1 - y0),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) > 127
        assert (top, left) == (y0, x0)
        np.testing.assert_array_equal(crop, expected)

"""Silhouette alignment (paper §3.2 / OpenGait): geometry, depth registration, odd inputs, CASIA-B."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.dataset import load_sequence
from service.pipeline.align import align_sequence, align_to_64x64

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

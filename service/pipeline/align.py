"""Silhouette alignment (paper §3.2, the OpenGait preprocessing), applied identically to depth.

Per frame:
1. crop to the rows (and columns) that hold silhouette pixels;
2. resize to height 64 keeping the aspect ratio;
3. find the x-centre: the first column where the cumulative silhouette mass passes half the total;
4. cut a 64-wide window centred there, zero-padded where the person is narrower/near a side;
5. for the network, trim 10 px each side -> 64x44 (`align_sequence`); datasets keep 64x64
   (`align_to_64x64`: the CASIA-B pkl files are 64x64 and training trims at load time).

Depth goes through exactly the same crop, resize and window, so the two stay pixel-aligned. Depth is
resized as a mask-weighted average (resize(depth*mask) / resize(mask)): a boundary pixel gets the
mean depth of the person pixels it covers instead of being diluted by the zeros around the person.

Silhouettes come out binary 0/255 by default (threshold 128 after the anti-aliasing resize), the
same as the CASIA-B silhouettes the shipped model was trained on.

Masks come as frame-sized (T, H, W) arrays or as a track's `Masks` (kept around the person, maybe at a
working resolution): then only each frame's crop is brought to frame resolution (`Mask.frame_crop`),
never the whole frame. At frame resolution step 2 is cv2's float32 INTER_AREA resize, bit for bit as
it always was; a crop brought up from a working resolution is binary, and its area average is read off
its integral image instead (`_area_mass`: the same silhouettes but for exactly half-covered pixels,
about half the cost).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from gaitid.contract import ALIGNED_HEIGHT, ALIGNED_WIDTH
from service.pipeline.types import Masks

ALIGNED_FULL_WIDTH = 64  # before the network trim
SIDE_TRIM = (ALIGNED_FULL_WIDTH - ALIGNED_WIDTH) // 2  # 10 px each side
_BINARY_THRESHOLD = 128


def align_sequence(
    masks: np.ndarray | Masks,
    depth: np.ndarray | None = None,
    *,
    min_pixels: int = 1,
    binarize: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Network layout: (sils (T',64,44) uint8, depth (T',64,44) float32 | None, kept (T',) int64).

    masks: (T, H, W) bool, or uint8 0/1 or 0..255 (soft masks are used as silhouette mass), or `Masks`.
    depth: (T, H, W) float in [0, 1] on the frame grid, or None.
    kept: positions (into the T input frames) of the frames that produced an output; frames with
    fewer than `min_pixels` mask pixels, or nothing left after binarisation, are dropped.
    """
    return _align(masks, depth, min_pixels, binarize, SIDE_TRIM, ALIGNED_FULL_WIDTH - 2 * SIDE_TRIM)


def align_to_64x64(
    masks: np.ndarray | Masks,
    depth: np.ndarray | None = None,
    *,
    min_pixels: int = 1,
    binarize: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Dataset layout: (sils (T',64,64) uint8, depth (T',64,64) float32 | None, kept (T',) int64)."""
    return _align(masks, depth, min_pixels, binarize, 0, ALIGNED_FULL_WIDTH)


def _align(
    masks: np.ndarray | Masks, depth: np.ndarray | None, min_pixels: int, binarize: bool, first: int, width: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Columns [first, first + width) of the 64-wide alignment (the trim is written straight out)."""
    shape = masks.shape if isinstance(masks, Masks) else np.shape(masks)
    if len(shape) != 3:
        raise ValueError(f"masks must be (T, H, W), got shape {shape}")
    if depth is not None and depth.shape != tuple(shape):
        raise ValueError(f"depth {depth.shape} and masks {tuple(shape)} must have the same (T, H, W) shape")
    crops = _mask_crops(masks) if isinstance(masks, Masks) else _array_crops(masks)
    sils = np.zeros((shape[0], ALIGNED_HEIGHT, width), np.uint8)
    depths = None if depth is None else np.zeros((shape[0], ALIGNED_HEIGHT, width), np.float32)
    kept = []
    for t, crop, top, left, by_area in crops:
        if by_area:  # 0/1 cells brought up from a working resolution: their integral image does steps 1-2
            integral = cv2.integral(crop)  # (h + 1, w + 1) int32
            if integral[-1, -1] < max(1, min_pixels):
                continue
            if not _is_tight(integral):  # rare: frame_crop's edge rows/columns are nearly always set
                col, row, crop_w, crop_h = cv2.boundingRect(crop)
                crop = crop[row:row + crop_h, col:col + crop_w]
                top, left = top + row, left + col
                integral = cv2.integral(crop)
            crop_h, crop_w = crop.shape
            if crop_h >= ALIGNED_HEIGHT:
                mass = _area_mass(integral, crop_h, crop_w)
            else:  # enlarging: bilinear, as for frame-resolution crops
                mass = _resized_mass(crop * np.uint8(255))
        else:
            if cv2.countNonZero(crop) < max(1, min_pixels):
                continue
            col, row, crop_w, crop_h = cv2.boundingRect(crop)  # rows and columns that hold silhouette pixels
            crop = crop[row:row + crop_h, col:col + crop_w]
            top, left = top + row, left + col
            mass = _resized_mass(crop)
        source, target = _window(_mass_centre(mass), mass.shape[1], first, width)
        if binarize:
            sil = mass[:, source] >= _BINARY_THRESHOLD - 0.5  # == rint(mass) >= 128
        else:
            sil = np.clip(np.rint(mass[:, source]), 0, 255).astype(np.uint8)
        if not sil.any() and not _any_in_window(mass, binarize):
            continue  # e.g. a one-pixel-wide sliver that binarisation erased
        n = len(kept)
        sils[n][:, target] = sil
        if depths is not None:
            depth_crop = depth[t, top:top + crop_h, left:left + crop_w]
            _place_depth(depths[n], crop, depth_crop, source, target)
            depths[n][sils[n] == 0] = 0.0  # depth exists exactly where the silhouette does
        kept.append(t)
    n = len(kept)
    sils = sils[:n]
    if binarize:
        sils *= np.uint8(255)  # 0/1 -> 0/255, once for the whole sequence
    if depths is not None:
        depths = np.clip(depths[:n], 0.0, 1.0)
    return sils, depths, np.asarray(kept, np.int64)


def _array_crops(masks: np.ndarray) -> Iterator[tuple[int, np.ndarray, int, int, bool]]:
    """(t, mass crop uint8 0..255, top, left, False) of each frame of a frame-sized mask array that has pixels."""
    mass = _as_mass(masks)
    rows_any = mass.any(axis=2)  # (T, H): vectorised over the whole sequence
    cols_any = mass.any(axis=1)  # (T, W)
    for t in np.flatnonzero(rows_any.any(axis=1)):
        top, bottom = _first_last(rows_any[t])
        left, right = _first_last(cols_any[t])
        yield int(t), mass[t, top:bottom + 1, left:right + 1], top, left, False


def _mask_crops(masks: Masks) -> Iterator[tuple[int, np.ndarray, int, int, bool]]:
    """The same from a track's masks: each one's crop at frame resolution. At frame resolution as mass
    0/255 (what `_array_crops` gives, so the result is the same bit for bit); from a working
    resolution as 0/1 cells for `_area_mass`."""
    for t, mask in enumerate(masks):
        crop, top, left = mask.frame_crop()
        if crop.size:
            if mask.at_frame_resolution:
                yield t, crop.view(np.uint8) * np.uint8(255), top, left, False
            else:
                yield t, crop.view(np.uint8), top, left, True


def _as_mass(masks: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 silhouette mass 0..255 from bool, 0/1 or 0..255 masks."""
    masks = np.asarray(masks)
    if masks.dtype == bool:
        return masks.view(np.uint8) * np.uint8(255)
    if masks.dtype != np.uint8:
        masks = np.clip(masks, 0, 255).astype(np.uint8)
    if masks.size and masks.max() == 1:
        return masks * np.uint8(255)
    return masks


def _first_last(flags: np.ndarray) -> tuple[int, int]:
    hits = np.flatnonzero(flags)
    return int(hits[0]), int(hits[-1])


def _resized_width(crop_h: int, crop_w: int) -> int:
    return max(1, round(crop_w * ALIGNED_HEIGHT / crop_h))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    # INTER_AREA anti-aliases when shrinking (thin limbs do not flicker); it is nearest-like when
    # enlarging, so small far-away people are enlarged bilinearly instead.
    shrinking = image.shape[0] >= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized.reshape(height, width)  # cv2 drops the width axis when it is 1


def _resized_mass(crop: np.ndarray) -> np.ndarray:
    """Step 2: the crop (mass 0..255) resized to height 64, as float32 mass 0..255."""
    return _resize(crop.astype(np.float32), _resized_width(*crop.shape), ALIGNED_HEIGHT)


def _is_tight(integral: np.ndarray) -> bool:
    """Whether the first and last rows and columns of the image hold pixels, from its integral
    (whose last row and column are the running column and row totals)."""
    total = integral[-1, -1]
    return bool(integral[1, -1] and integral[-2, -1] < total and integral[-1, 1] and integral[-1, -2] < total)


def _area_mass(integral: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Step 2 for a binary crop of at least 64 rows, from its integral image: INTER_AREA's area
    average without resizing the crop as float32. The integral of a piecewise-constant image is
    bilinear inside each pixel, so interpolating the integral image at the output pixels' corners
    (i * h / 64, j * w / new_w) gives their exact area sums; in integers (x 64 x new_w), so a pixel
    exactly half covered is exactly 127.5 and binarises as rint does. Equal to `_resized_mass` but
    for cv2's float32 rounding of such ties."""
    new_w = _resized_width(crop_h, crop_w)
    row, row_frac = np.divmod(_CORNERS * crop_h, ALIGNED_HEIGHT)
    row[-1], row_frac[-1] = crop_h - 1, ALIGNED_HEIGHT  # the far edge, from the pixel before it
    col, col_frac = np.divmod(np.arange(new_w + 1) * crop_w, new_w)
    col[-1], col_frac[-1] = crop_w - 1, new_w
    stride = crop_w + 1
    at = (row * stride)[:, None] + col
    at = np.concatenate((at, at + stride))  # the 2 x 2 integral values around each corner
    near = integral.take(np.concatenate((at, at + 1), axis=1))
    rows = near[:ALIGNED_HEIGHT + 1] * (ALIGNED_HEIGHT - row_frac)[:, None] + near[ALIGNED_HEIGHT + 1:] * row_frac[:, None]
    corners = rows[:, :new_w + 1] * (new_w - col_frac) + rows[:, new_w + 1:] * col_frac
    per_row = corners[1:] - corners[:-1]
    sums = per_row[:, 1:] - per_row[:, :-1]  # area x 64 x new_w of each output pixel
    return sums * 255.0 / (crop_h * crop_w)


_CORNERS = np.arange(ALIGNED_HEIGHT + 1)


def _mass_centre(mass: np.ndarray) -> int:
    """Step 3: the first column where the cumulative silhouette mass passes half the total."""
    column_mass = np.cumsum(mass.sum(axis=0))
    centre = int(np.searchsorted(column_mass, column_mass[-1] / 2.0, side="right"))
    return min(centre, mass.shape[1] - 1)


def _window(centre: int, resized_width: int, first: int = 0, width: int = ALIGNED_FULL_WIDTH) -> tuple[slice, slice]:
    """Step 4: source columns of the resized crop and destination columns of output columns
    [first, first + width) of the 64-wide window centred on `centre`."""
    start = centre - ALIGNED_FULL_WIDTH // 2 + first  # resized-crop column that lands on the first output column
    src_start, src_stop = max(0, start), min(resized_width, start + width)
    if src_stop <= src_start:
        return slice(0, 0), slice(0, 0)
    return slice(src_start, src_stop), slice(src_start - start, src_stop - start)


def _any_in_window(mass: np.ndarray, binarize: bool) -> bool:
    """Whether the whole 64-wide window keeps any silhouette (a frame is kept on that, trimmed or not)."""
    source, _ = _window(_mass_centre(mass), mass.shape[1])
    part = mass[:, source]
    return bool((part >= _BINARY_THRESHOLD - 0.5).any() if binarize else (np.rint(part) >= 1).any())


def _place_depth(out: np.ndarray, crop: np.ndarray, depth_crop: np.ndarray, source: slice, target: slice) -> None:
    """Depth through the same resize and window as the silhouette, as a mask-weighted average."""
    inside = crop > 0
    new_w = _resized_width(*crop.shape)
    weighted = _resize(np.where(inside, depth_crop, 0).astype(np.float32), new_w, ALIGNED_HEIGHT)
    coverage = _resize(inside.astype(np.float32), new_w, ALIGNED_HEIGHT)
    mean_depth = np.divide(weighted, coverage, out=np.zeros_like(weighted), where=coverage > 1e-6)
    out[:, target] = mean_depth[:, source]

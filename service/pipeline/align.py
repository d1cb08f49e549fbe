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
never the whole frame.
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
    sils, aligned_depth, kept = align_to_64x64(masks, depth, min_pixels=min_pixels, binarize=binarize)
    trim = slice(SIDE_TRIM, ALIGNED_FULL_WIDTH - SIDE_TRIM)
    sils = np.ascontiguousarray(sils[:, :, trim])
    if aligned_depth is not None:
        aligned_depth = np.ascontiguousarray(aligned_depth[:, :, trim])
    return sils, aligned_depth, kept


def align_to_64x64(
    masks: np.ndarray | Masks,
    depth: np.ndarray | None = None,
    *,
    min_pixels: int = 1,
    binarize: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Dataset layout: (sils (T',64,64) uint8, depth (T',64,64) float32 | None, kept (T',) int64)."""
    shape = masks.shape if isinstance(masks, Masks) else np.shape(masks)
    if len(shape) != 3:
        raise ValueError(f"masks must be (T, H, W), got shape {shape}")
    if depth is not None and depth.shape != tuple(shape):
        raise ValueError(f"depth {depth.shape} and masks {tuple(shape)} must have the same (T, H, W) shape")
    crops = _mask_crops(masks) if isinstance(masks, Masks) else _array_crops(masks)
    sils, depths, kept = [], [], []
    for t, crop, top, left in crops:
        if np.count_nonzero(crop) < max(1, min_pixels):
            continue
        rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
        bottom, right = rows[-1] + 1, cols[-1] + 1
        crop = crop[rows[0]:bottom, cols[0]:right]
        top, left = top + rows[0], left + cols[0]
        depth_crop = None if depth is None else depth[t, top:top + crop.shape[0], left:left + crop.shape[1]]
        sil, aligned_depth = _align_crop(crop, depth_crop, binarize)
        if not sil.any():
            continue  # e.g. a one-pixel-wide sliver that binarisation erased
        sils.append(sil)
        depths.append(aligned_depth)
        kept.append(t)
    height, width = ALIGNED_HEIGHT, ALIGNED_FULL_WIDTH
    out_sils = np.stack(sils) if sils else np.zeros((0, height, width), np.uint8)
    out_depth = None
    if depth is not None:
        out_depth = np.stack(depths) if depths else np.zeros((0, height, width), np.float32)
    return out_sils, out_depth, np.asarray(kept, np.int64)


def _array_crops(masks: np.ndarray) -> Iterator[tuple[int, np.ndarray, int, int]]:
    """(t, mass crop uint8 0..255, top, left) of each frame of a frame-sized mask array that has pixels."""
    mass = _as_mass(masks)
    rows_any = mass.any(axis=2)  # (T, H): vectorised over the whole sequence
    cols_any = mass.any(axis=1)  # (T, W)
    for t in np.flatnonzero(rows_any.any(axis=1)):
        top, bottom = _first_last(rows_any[t])
        left, right = _first_last(cols_any[t])
        yield int(t), mass[t, top:bottom + 1, left:right + 1], top, left


def _mask_crops(masks: Masks) -> Iterator[tuple[int, np.ndarray, int, int]]:
    """The same from a track's masks: each one's crop at frame resolution, as mass 0/255."""
    for t, mask in enumerate(masks):
        crop, top, left = mask.frame_crop()
        if crop.size:
            yield t, crop.view(np.uint8) * np.uint8(255), top, left


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


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    # INTER_AREA anti-aliases when shrinking (thin limbs do not flicker); it is nearest-like when
    # enlarging, so small far-away people are enlarged bilinearly instead.
    shrinking = image.shape[0] >= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _align_crop(
    crop: np.ndarray, depth_crop: np.ndarray | None, binarize: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    crop_h, crop_w = crop.shape
    new_w = max(1, round(crop_w * ALIGNED_HEIGHT / crop_h))
    mass = _resize(crop.astype(np.float32), new_w, ALIGNED_HEIGHT)  # silhouette mass 0..255
    mass = mass.reshape(ALIGNED_HEIGHT, new_w)  # cv2 drops the width axis when it is 1

    column_mass = np.cumsum(mass.sum(axis=0))
    centre = int(np.searchsorted(column_mass, column_mass[-1] / 2.0, side="right"))
    centre = min(centre, new_w - 1)
    window = _window(centre, new_w)

    silhouette = np.clip(np.rint(mass), 0, 255).astype(np.uint8)
    if binarize:
        silhouette = np.where(silhouette >= _BINARY_THRESHOLD, 255, 0).astype(np.uint8)
    sil = _place(silhouette, window, np.uint8)

    aligned_depth = None
    if depth_crop is not None:
        inside = crop > 0
        weighted = _resize(np.where(inside, depth_crop, 0).astype(np.float32), new_w, ALIGNED_HEIGHT)
        coverage = _resize(inside.astype(np.float32), new_w, ALIGNED_HEIGHT)
        weighted = weighted.reshape(ALIGNED_HEIGHT, new_w)
        coverage = coverage.reshape(ALIGNED_HEIGHT, new_w)
        mean_depth = np.divide(weighted, coverage, out=np.zeros_like(weighted), where=coverage > 1e-6)
        aligned_depth = _place(mean_depth, window, np.float32)
        aligned_depth[sil == 0] = 0.0  # depth exists exactly where the silhouette does
        np.clip(aligned_depth, 0.0, 1.0, out=aligned_depth)
    return sil, aligned_depth


def _window(centre: int, resized_width: int) -> tuple[slice, slice]:
    """Source columns of the resized crop and destination columns in the 64-wide output."""
    half = ALIGNED_FULL_WIDTH // 2
    first = centre - half  # resized-crop column that lands on output column 0
    src_start, src_stop = max(0, first), min(resized_width, first + ALIGNED_FULL_WIDTH)
    return slice(src_start, src_stop), slice(src_start - first, src_stop - first)


def _place(image: np.ndarray, window: tuple[slice, slice], dtype) -> np.ndarray:
    source, target = window
    out = np.zeros((ALIGNED_HEIGHT, ALIGNED_FULL_WIDTH), dtype)
    out[:, target] = image[:, source]
    return out

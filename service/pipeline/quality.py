"""How far a person track can be trusted, in numbers and in plain words: frames used, how well the
silhouette fills the person's box, frames lost at the picture's edge, the person's height, and a
warning for each of these that is worse than a walk the model recognises reliably.

The limits below are where the shipped model's answers get unreliable on CASIA-B-like footage: one
gait cycle (about a second) is the least a gait signature can be measured from, silhouettes under
~100 px tall lose the legs' shape, and a silhouette filling little of its box is torn by the
segmenter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.pipeline.types import AlignedSequence

MIN_WALK_SECONDS = 1.2  # about one gait cycle (two steps)
MIN_FRAMES = 25
MIN_PERSON_HEIGHT_PX = 100
MAX_CUT_SHARE = 0.3  # share of the track's frames dropped at the picture's edge
MIN_MASK_COVERAGE = 0.3


@dataclass(frozen=True)
class TrackQuality:
    frames_used: int  # aligned frames the embedding was made from
    mask_coverage: float  # mean share (0..1) of the person's box the silhouette fills
    frames_cut_at_border: int  # the track's frames dropped because the person touched the edge
    person_height_px: float  # median box height, in the pixels of the upright video
    walk_seconds: float  # time from the first used frame to the last
    warnings: tuple[str, ...]  # plain-language reasons to doubt the answer; empty when none


def mask_coverage(silhouettes: np.ndarray) -> float:
    """Mean over frames of the share of the silhouette's bounding box that it fills (0 for none)."""
    shares = []
    for silhouette in silhouettes:
        on = silhouette > 0
        rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
        if not len(rows):
            shares.append(0.0)
            continue
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        shares.append(float(on.sum()) / float(box))
    return float(np.mean(shares)) if shares else 0.0


def track_quality(sequence: AlignedSequence, fps: float) -> TrackQuality:
    frames = len(sequence.frame_indices)
    indices = np.asarray(sequence.frame_indices)
    walk = float(indices.max() - indices.min() + 1) / fps if frames and fps > 0 else 0.0
    boxes = np.asarray(sequence.boxes, np.float64)
    height = float(np.median(boxes[:, 3] - boxes[:, 1])) if len(boxes) else 0.0
    coverage = mask_coverage(sequence.silhouettes)
    cut = int(sequence.frames_cut_at_border)
    warnings = []
    if frames < MIN_FRAMES or walk < MIN_WALK_SECONDS:
        warnings.append(
            f"Short walk: {frames} frames over {walk:.1f} s were usable; at least {MIN_FRAMES} frames over "
            f"{MIN_WALK_SECONDS:g} s (one full stride) make a trustworthy match. Film a longer walk across the view.")
    if height < MIN_PERSON_HEIGHT_PX:
        warnings.append(
            f"The person is small in the picture ({height:.0f} px tall; {MIN_PERSON_HEIGHT_PX} px or more is "
            "reliable). Film closer or at a higher resolution.")
    if cut and cut / (cut + frames) > MAX_CUT_SHARE:
        warnings.append(
            f"Much of the walk was cut off at the picture's edge ({cut} of {cut + frames} frames were dropped). "
            "Keep the whole person in view.")
    if frames and coverage < MIN_MASK_COVERAGE:
        warnings.append(
            f"The silhouette is patchy (it fills {coverage:.0%} of the person's box): the person blends into the "
            "background or the light changes. Use a plainer background or a background clip for the camera.")
    return TrackQuality(frames_used=frames, mask_coverage=round(coverage, 3), frames_cut_at_border=cut,
                        person_height_px=round(height, 1), walk_seconds=round(walk, 2), warnings=tuple(warnings))

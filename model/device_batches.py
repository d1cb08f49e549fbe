"""Training batches drawn on the device: the whole training set as one uint8 tensor, PxK sampling,
ordered windows and per-sequence augmentation, all as torch ops, so a GPU step never waits for the host.

The same batches as `model.training_data.PKBatches` (P random subjects, K random sequences of each,
one ordered window of `frames` frames per sequence, short sequences looped, OpenGait's CASIA-B
augmentations with one transform per sequence shared by every frame and both modalities). No op
waits for the host (no .item(), no host tensors, no data-dependent shapes); the differences:
  - randomness comes from one `torch.Generator` on the device (its state is checkpointed, so a
    resumed run continues the exact stream);
  - a subject with fewer than K sequences cycles through a random order of them instead of drawing
    with replacement (CASIA-B subjects have ~110 sequences, so only tiny test sets ever see this);
  - warps are bilinear `grid_sample` in float, cv2's are fixed-point: pixels on silhouette edges
    differ by a few grey levels; every sequence goes through the warp (the untransformed ones are
    then taken back unchanged), since picking only the transformed ones would need their count.

CASIA-B 007-074 is ~1.7 GB this way, which any training GPU holds with room to spare. On one CPU core
the host path samples faster (65k vs 46k frames/s at 8x4x20, 63k vs 22k at 8x16x30), both far above
what a CPU step consumes (~600 frames/s): this class is for GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from model.config import AugmentConfig, DataConfig


class SequenceArrays(Protocol):
    """What DeviceBatches reads from a loaded training set (model.training_data.SequenceBank has it)."""

    sils: Sequence[np.ndarray]  # each (T, H, W) uint8
    depths: Sequence[np.ndarray] | None  # parallel to sils, or None
    labels: np.ndarray  # (n,) class index per sequence, 0..classes-1


def _concatenated(arrays: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """All sequences' frames end to end, (F, H, W) uint8 on `device`."""
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"every sequence must have the same frame size, got {sorted(shapes)}")
    return torch.from_numpy(np.concatenate(arrays)).to(device)


def window_indices(lengths: torch.Tensor, frames: int, uniform: torch.Tensor) -> torch.Tensor:
    """(N, frames) frame indices inside each sequence: an ordered window starting at
    floor(uniform * (length - frames + 1)); a sequence shorter than `frames` is looped and sorted,
    the very indices `model.training_data.sample_window` gives (np.sort(np.resize(arange(L), T)))."""
    t = torch.arange(frames, device=lengths.device)[None, :]
    length = lengths[:, None]
    start = torch.floor(uniform[:, None] * (length - frames + 1).clamp(min=1)).long()
    long_window = start + t
    # Looping L frames into T slots and sorting: the first r = T mod L values appear q + 1 times,
    # the others q times (q = T div L).
    q = (frames // length).clamp(min=1)
    r = frames % length
    head = r * (q + 1)
    looped = torch.where(t < head, t // (q + 1), r + (t - head) // q)
    return torch.where(length >= frames, long_window, looped)


def _matrices(*entries: torch.Tensor) -> torch.Tensor:
    """Nine (N,) tensors, row-major -> (N, 3, 3). Built by stacking: writing Python numbers into a
    device tensor would make host tensors first."""
    return torch.stack(entries, -1).reshape(-1, 3, 3)


def flip_matrices(n: int, width: int, device: torch.device, dtype=torch.float64) -> torch.Tensor:
    """x -> (width - 1) - x, as model.training_data's flip."""
    one = torch.ones(n, dtype=dtype, device=device)
    zero = torch.zeros_like(one)
    return _matrices(-one, zero, one * (width - 1), zero, one, zero, zero, zero, one)


def rotation_matrices(degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1) as (N, 3, 3): counter-clockwise on screen."""
    a = torch.deg2rad(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = width / 2, height / 2
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return _matrices(cos, sin, (1 - cos) * cx - sin * cy,
                     -sin, cos, sin * cx + (1 - cos) * cy,
                     zero, zero, one)


def tilt_matrices(dx: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The homography moving the top corners inwards by dx pixels (outwards when negative), bottom
    corners fixed: model.training_data's perspective (cv2.getPerspectiveTransform of the same points),
    solved per sequence as the usual 8x8 system with h33 = 1."""
    n = len(dx)
    w1, h1 = width - 1.0, height - 1.0
    zero = torch.zeros_like(dx)  # corners built from device tensors: a host tensor would be a copy + sync
    x = torch.stack([zero, zero + w1, zero + w1, zero], 1)  # source corners, clockwise from top-left
    y = torch.stack([zero, zero, zero + h1, zero + h1], 1)
    u = torch.stack([dx, w1 - dx, zero + w1, zero], 1)  # where they go
    v = y
    one, nil = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, nil, nil, nil, -u * x, -u * y], -1)
    rows_v = torch.stack([nil, nil, nil, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # (N, 8, 8)
    b = torch.cat([u, v], 1)  # (N, 8)
    h = torch.linalg.solve_ex(a, b)[0]  # _ex: no error check, so no device-to-host sync
    return torch.cat([h, torch.ones_like(dx)[:, None]], 1).reshape(n, 3, 3)


def warp_frames(frames: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Warp (N, C, H, W) uint8 frames, one 3x3 homography per item (forward map, pixel coordinates, as
    cv2.warpPerspective takes it), bilinear, zeros outside; the C channels share the transform."""
    n, _, h, w = frames.shape
    inverse = torch.linalg.inv_ex(matrices)[0].float()  # destination pixel -> source pixel
    ys, xs = torch.meshgrid(torch.arange(h, device=frames.device, dtype=torch.float32),
                            torch.arange(w, device=frames.device, dtype=torch.float32), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, h * w, 3)
    source = pixels @ inverse.transpose(1, 2)  # (N, H*W, 3)
    sx, sy = source[..., 0] / source[..., 2], source[..., 1] / source[..., 2]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels, cv2's convention.
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], -1).reshape(n, h, w, 2)
    warped = F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped.round_().clamp_(0, 255).to(torch.uint8)


class DeviceBatches:
    """Endless PxK training batches built on `device` from a loaded training set.

        batches = DeviceBatches(bank, cfg.data, device, seed=cfg.trainer.seed)
        batch = next(batches)  # {"sils": uint8 (P*K, frames, H, W), "depths": ... (two-modality
                               #  banks only), "labels": int64 (P*K,)}, all on `device`
        state = batches.state_dict()   # goes into the checkpoint; load_state_dict(state) resumes

    Labels come in P runs of K equal values (subject-major). `train=False` draws the same windows
    without augmentation.
    """

    def __init__(self, bank: SequenceArrays, cfg: DataConfig, device: str | torch.device, seed: int = 0,
                 train: bool = True):
        self.device = torch.device(device)
        self.subjects_per_batch, self.per_subject, self.frames = cfg.batch_subjects, cfg.batch_per_subject, cfg.frames
        self.augment: AugmentConfig | None = cfg.augment if train else None

        lengths = np.array([len(s) for s in bank.sils], dtype=np.int64)
        if (lengths < 1).any():
            raise ValueError("every sequence needs at least one frame")
        self.sils = _concatenated(bank.sils, self.device)
        self.depths = None
        if bank.depths is not None:
            if [len(d) for d in bank.depths] != lengths.tolist():
                raise ValueError("silhouette and depth sequences differ in length")
            self.depths = _concatenated(bank.depths, self.device)
        self.height, self.width = self.sils.shape[1:]
        self.lengths = torch.from_numpy(lengths).to(self.device)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])).to(self.device)
        labels = np.asarray(bank.labels, dtype=np.int64)
        self.labels = torch.from_numpy(labels).to(self.device)

        # Subject -> its sequences, as a padded table (rows of different lengths cannot live in one tensor).
        classes = int(labels.max()) + 1 if len(labels) else 0
        by_subject = [np.flatnonzero(labels == c) for c in range(classes)]
        if any(len(s) == 0 for s in by_subject):
            raise ValueError("labels must be 0..classes-1 with at least one sequence each")
        if classes < self.subjects_per_batch:
            raise ValueError(f"only {classes} subjects, but batch_subjects={self.subjects_per_batch}")
        widest = max(len(s) for s in by_subject)
        table = np.zeros((classes, widest), dtype=np.int64)
        for c, seqs in enumerate(by_subject):
            table[c, : len(seqs)] = seqs
        self.subject_sequences = torch.from_numpy(table).to(self.device)
        self.subject_counts = torch.tensor([len(s) for s in by_subject], dtype=torch.int64, device=self.device)

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    # -- what a training loop uses ----------------------------------------------------------------

    @property
    def frames_per_batch(self) -> int:
        return self.subjects_per_batch * self.per_subject * self.frames

    @property
    def nbytes(self) -> int:
        """Device memory the frames take (uint8, every modality)."""
        return self.sils.numel() + (self.depths.numel() if self.depths is not None else 0)

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.batch()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    # -- one batch ----------------------------------------------------------------------------------

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device, dtype=torch.float64)

    def choose_sequences(self) -> torch.Tensor:
        """(P*K,) sequence indices: P distinct random subjects, K of each one's sequences (distinct
        when it has at least K)."""
        classes, widest = self.subject_sequences.shape
        subjects = self._uniform(classes).argsort()[: self.subjects_per_batch]
        counts = self.subject_counts[subjects]
        keys = self._uniform(self.subjects_per_batch, widest)
        keys = torch.where(torch.arange(widest, device=self.device)[None] < counts[:, None], keys, 2.0)
        order = keys.argsort(dim=1)  # a random order of each subject's sequences, padding last
        columns = torch.arange(self.per_subject, device=self.device)[None] % counts[:, None]
        picked = order.gather(1, columns)
        return self.subject_sequences[subjects].gather(1, picked).reshape(-1)

    def batch(self) -> dict[str, torch.Tensor]:
        sequences = self.choose_sequences()
        windows = window_indices(self.lengths[sequences], self.frames, self._uniform(len(sequences)))
        rows = (self.offsets[sequences, None] + windows).reshape(-1)
        shape = (len(sequences), self.frames, self.height, self.width)
        sils = self.sils[rows].reshape(shape)
        depths = self.depths[rows].reshape(shape) if self.depths is not None else None
        if self.augment is not None:
            sils, depths = self._augment(sils, depths)
        out = {"sils": sils, "labels": self.labels[sequences]}
        if depths is not None:
            out["depths"] = depths
        return out

    def _augment(self, sils: torch.Tensor, depths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One homography per sequence (flip, then rotation, then tilt, each with its probability),
        warping silhouettes and depths alike; then random erasing of silhouettes."""
        aug, n, h, w = self.augment, len(sils), self.height, self.width
        draws = self._uniform(n, 6)  # flip?, rotate?, angle, tilt?, tilt amount, erase?
        eye = torch.eye(3, dtype=torch.float64, device=self.device).expand(n, 3, 3)
        flip = draws[:, 0] < aug.horizontal_flip
        rotate = draws[:, 1] < aug.rotate
        tilt = draws[:, 3] < aug.perspective
        angles = (2 * draws[:, 2] - 1) * aug.max_rotate_deg
        m = torch.where(flip[:, None, None], flip_matrices(n, w, self.device), eye)
        m = torch.where(rotate[:, None, None], rotation_matrices(angles, h, w), eye) @ m
        m = torch.where(tilt[:, None, None], tilt_matrices((0.2 * draws[:, 4] - 0.1) * w, h, w), eye) @ m
        moved = (flip | rotate | tilt)[:, None, None, None]

        stacked = sils if depths is None else torch.cat([sils, depths], 1)  # channels share the warp
        stacked = torch.where(moved, warp_frames(stacked, m), stacked)
        sils, depths = (stacked, None) if depths is None else stacked.split(self.frames, 1)

        if aug.erase > 0:
            sils = self._erase(sils, self.augment.erase)
        return sils, depths

    def _erase(self, sils: torch.Tensor, probability: float) -> torch.Tensor:
        """model.training_data's random erasing: a zeroed box of 10-30% height and 20-50% width, per sequence."""
        n, h, w = len(sils), self.height, self.width
        draws = self._uniform(n, 5)  # erase?, height, width, top, left
        eh = torch.floor(h * (0.1 + 0.2 * draws[:, 1])).long()
        ew = torch.floor(w * (0.2 + 0.3 * draws[:, 2])).long()
        top = torch.floor(draws[:, 3] * (h - eh)).long()
        left = torch.floor(draws[:, 4] * (w - ew)).long()
        rows = torch.arange(h, device=self.device)[None]
        cols = torch.arange(w, device=self.device)[None]
        inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
        inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
        box = inside_rows[:, :, None] & inside_cols[:, None, :] & (draws[:, 0] < probability)[:, None, None]
        return sils.masked_fill(box[:, None], 0)


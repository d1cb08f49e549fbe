"""Training batches: sequences in memory, a PxK batch sampler, fixed-length windows, augmentations.

Sequences are loaded once into RAM as 64x44 uint8 (CASIA-B 007-074 is ~1.8 GB that way): gait batches
draw 30-frame windows from thousands of sequences at random, which a disk-backed loader would turn
into random reads. Batches stay uint8 0..255 (the contract's inputs, a quarter of float32's size): the
network scales them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gaitid.progress import progress_bar
from model.config import AugmentConfig, DataConfig
from model.dataset import (
    SequenceInfo,
    list_sequences,
    load_sequence,
    parse_subject_range,
    trim_to_network_width,
)


@dataclass
class SequenceBank:
    infos: list[SequenceInfo]
    sils: list[np.ndarray]  # each (T, 64, 44) uint8
    depths: list[np.ndarray] | None  # parallel to sils, or None
    labels: np.ndarray  # (n,) int64 class index per sequence
    subjects: list[str]  # class index -> subject id

    @classmethod
    def load(cls, cfg: DataConfig, subjects_spec: str, need_depth: bool, need_sils: bool = True) -> SequenceBank:
        subjects = parse_subject_range(subjects_spec)
        infos = list_sequences(cfg.silhouette_root, subjects)
        if not infos:
            raise FileNotFoundError(f"no sequences for subjects {subjects_spec} under {cfg.silhouette_root}")
        if need_depth and cfg.depth_root is None:
            raise ValueError("this variant needs depth: set data.depth_root")
        kept, sils, depths = [], [], []
        for info in progress_bar(infos, desc="loading sequences", unit="seq", leave=False):
            sil = trim_to_network_width(load_sequence(info.path))
            if len(sil) < cfg.min_frames:
                continue
            if need_depth:
                depth = trim_to_network_width(load_sequence(cfg.depth_root / info.subject / info.condition / info.view))
                if len(depth) != len(sil):
                    raise ValueError(f"{info.key}: {len(sil)} silhouette frames but {len(depth)} depth frames")
                depths.append(depth)
            kept.append(info)
            sils.append(sil)
        names = sorted({i.subject for i in kept})
        index = {s: k for k, s in enumerate(names)}
        labels = np.array([index[i.subject] for i in kept], dtype=np.int64)
        return cls(kept, sils, depths if need_depth else None, labels, names)


def _sequence_transform(aug: AugmentConfig, rng: np.random.Generator, h: int, w: int) -> np.ndarray | None:
    """One 3x3 homography for a whole sequence (flip, rotation, perspective), or None for identity."""
    m = np.eye(3)
    if rng.random() < aug.horizontal_flip:
        m = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], float) @ m
    if rng.random() < aug.rotate:
        angle = rng.uniform(-aug.max_rotate_deg, aug.max_rotate_deg)
        m = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]]) @ m
    if rng.random() < aug.perspective:
        # Move the top corners inwards/outwards a little: a camera tilted up or down.
        dx = rng.uniform(-0.1, 0.1) * w
        src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
        dst = np.float32([[dx, 0], [w - 1 - dx, 0], [w - 1, h - 1], [0, h - 1]])
        m = cv2.getPerspectiveTransform(src, dst) @ m
    return None if np.allclose(m, np.eye(3)) else m


def _warp(frames: np.ndarray, m: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:]
    return np.stack([cv2.warpPerspective(f, m, (w, h), flags=cv2.INTER_LINEAR) for f in frames])


def _random_erase(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = frames.shape[1:]
    eh, ew = int(h * rng.uniform(0.1, 0.3)), int(w * rng.uniform(0.2, 0.5))
    y, x = rng.integers(0, h - eh), rng.integers(0, w - ew)
    out = frames.copy()
    out[:, y: y + eh, x: x + ew] = 0
    return out


def sample_window(length: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of an ordered window of `frames` frames (P3D models motion, so order matters).
    Short sequences are looped."""
    if length >= frames:
        start = rng.integers(0, length - frames + 1)
        return np.arange(start, start + frames)
    return np.sort(np.resize(np.arange(length), frames))


class PKBatches(IterableDataset):
    """Endless PxK batches: P random subjects, K random sequences of each, one random window each."""

    def __init__(self, bank: SequenceBank, cfg: DataConfig, seed: int, train: bool = True):
        self.bank, self.cfg, self.seed, self.train = bank, cfg, seed, train
        self.by_subject = [np.flatnonzero(bank.labels == c) for c in range(len(bank.subjects))]
        if len(self.by_subject) < cfg.batch_subjects:
            raise ValueError(f"only {len(self.by_subject)} subjects, but batch_subjects={cfg.batch_subjects}")

    def batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg, bank = self.cfg, self.bank
        chosen = rng.choice(len(self.by_subject), cfg.batch_subjects, replace=False)
        seqs = np.concatenate([
            rng.choice(self.by_subject[c], cfg.batch_per_subject, replace=len(self.by_subject[c]) < cfg.batch_per_subject)
            for c in chosen
        ])
        sils, depths = [], []
        for i in seqs:
            idx = sample_window(len(bank.sils[i]), cfg.frames, rng)
            sil = bank.sils[i][idx]
            depth = bank.depths[i][idx] if bank.depths is not None else None
            if self.train:
                m = _sequence_transform(cfg.augment, rng, *sil.shape[1:])
                if m is not None:
                    sil = _warp(sil, m)
                    depth = _warp(depth, m) if depth is not None else None
                if rng.random() < cfg.augment.erase:
                    sil = _random_erase(sil, rng)
            sils.append(sil)
            if depth is not None:
                depths.append(depth)
        out = {
            "sils": torch.from_numpy(np.stack(sils)),
            "labels": torch.from_numpy(bank.labels[seqs]),
        }
        if depths:
            out["depths"] = torch.from_numpy(np.stack(depths))
        return out

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info else 0
        rng = np.random.default_rng([self.seed, worker])
        while True:
            yield self.batch(rng)


def frames_per_batch(cfg: DataConfig) -> int:
    return cfg.batch_subjects * cfg.batch_per_subject * cfg.frames

"""DeviceBatches: PxK batches sampled with torch ops, the same windows and augmentations as the host
data path (model.training_data), deterministic under a seed."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from model.config import AugmentConfig, DataConfig
from model.device_batches import (
    DeviceBatches,
    rotation_matrices,
    tilt_matrices,
    warp_frames,
    window_indices,
)
from model.training_data import sample_window

H, W = 64, 44
NO_AUGMENT = AugmentConfig(horizontal_flip=0, perspective=0, rotate=0, erase=0)


@dataclass
class Bank:
    sils: list[np.ndarray]
    depths: list[np.ndarray] | None
    labels: np.ndarray


def numbered_bank(subjects: int = 5, per_subject: int = 4, depths: bool = False, seed: int = 0) -> Bank:
    """Sequences of 6..40 frames whose pixel (0, 0) and (0, 1) encode (sequence, frame): every frame of
    the bank can be recognised in a batch. The rest is a random silhouette-like mask."""
    rng = np.random.default_rng(seed)
    sils, deps, labels = [], [], []
    for s in range(subjects):
        for _ in range(per_subject):
            length = int(rng.integers(6, 41))
            frames = (rng.random((length, H, W)) > 0.5).astype(np.uint8) * 255
            frames[:, 0, 0] = len(sils)
            frames[:, 0, 1] = np.arange(length)
            sils.append(frames)
            deps.append(255 - frames)
            labels.append(s)
    return Bank(sils, deps if depths else None, np.array(labels, dtype=np.int64))


def data_config(p=3, k=2, frames=12, augment: AugmentConfig = NO_AUGMENT) -> DataConfig:
    return DataConfig(batch_subjects=p, batch_per_subject=k, frames=frames, augment=augment)


def test_shapes_dtypes_and_pk_labels():
    bank = numbered_bank(depths=True)
    batches = DeviceBatches(bank, data_config(), "cpu", seed=1)
    batch = next(batches)
    assert batch["sils"].shape == batch["depths"].shape == (6, 12, H, W)
    assert batch["sils"].dtype == batch["depths"].dtype == torch.uint8
    assert batch["labels"].dtype == torch.int64
    runs = batch["labels"].reshape(3, 2)
    assert (runs == runs[:, :1]).all(), "labels come in P runs of K equal values"
    assert len(set(runs[:, 0].tolist())) == 3, "the P subjects are distinct"
    assert batches.frames_per_batch == 3 * 2 * 12
    assert batches.nbytes == 2 * sum(s.size for s in bank.sils)


def test_without_augmentation_windows_are_exact_ordered_frames_of_one_sequence():
    bank = numbered_bank(depths=True)
    batches = DeviceBatches(bank, data_config(p=4, k=3, frames=12), "cpu", seed=2)
    for _ in range(5):
        batch = next(batches)
        for sil, depth, label in zip(batch["sils"].numpy(), batch["depths"].numpy(), batch["labels"].tolist()):
            seq = int(sil[0, 0, 0])
            assert (sil[:, 0, 0] == seq).all(), "a window never crosses into another sequence"
            assert bank.labels[seq] == label
            idx = sil[:, 0, 1].astype(int)
            assert (np.diff(idx) >= 0).all(), "frames stay in order"
            np.testing.assert_array_equal(sil, bank.sils[seq][idx])
            np.testing.assert_array_equal(depth, bank.depths[seq][idx])
            if len(bank.sils[seq]) >= 12:
                assert (np.diff(idx) == 1).all(), "a long enough sequence gives a contiguous window"


def test_distinct_sequences_per_subject_when_it_has_enough():
    bank = numbered_bank(subjects=4, per_subject=5)
    batches = DeviceBatches(bank, data_config(p=4, k=5), "cpu", seed=3)
    sequences = next(batches)["sils"][:, 0, 0, 0].reshape(4, 5)
    for row in sequences.tolist():
        assert len(set(row)) == 5


def test_window_indices_match_the_host_sampler():
    lengths = torch.arange(1, 61)
    uniform = torch.rand(60, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = window_indices(lengths, 30, uniform).numpy()
    rng = np.random.default_rng(0)
    for length, row in zip(lengths.tolist(), got):
        if length < 30:  # looped: deterministic, must equal the host path's indices exactly
            np.testing.assert_array_equal(row, sample_window(length, 30, rng))
        else:
            assert 0 <= row[0] <= length - 30 and (np.diff(row) == 1).all()
    starts = window_indices(torch.full((2000,), 40), 30, torch.rand(2000, dtype=torch.float64))[:, 0]
    assert set(starts.tolist()) == set(range(11)), "every start position of a long sequence is drawn"


def test_flip_is_a_horizontal_flip_of_every_frame_and_modality():
    bank = numbered_bank(depths=True)
    plain = DeviceBatches(bank, data_config(), "cpu", seed=4)
    flipped = DeviceBatches(bank, data_config(augment=AugmentConfig(horizontal_flip=1.0, perspective=0, rotate=0)),
                            "cpu", seed=4)
    a, b = next(plain), next(flipped)
    # Same generator stream up to the augmentation draws, so the same windows.
    torch.testing.assert_close(b["sils"], a["sils"].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(b["depths"], a["depths"].flip(-1), rtol=0, atol=0)


def test_matrices_match_opencv():
    angles = torch.tensor([-10.0, -3.5, 0.0, 7.25], dtype=torch.float64)
    for angle, got in zip(angles.tolist(), rotation_matrices(angles, H, W)):
        expected = cv2.getRotationMatrix2D((W / 2, H / 2), angle, 1.0)
        np.testing.assert_allclose(got[:2].numpy(), expected, atol=1e-9)
    shifts = torch.tensor([-4.4, 0.0, 2.5], dtype=torch.float64)
    for dx, got in zip(shifts.tolist(), tilt_matrices(shifts, H, W)):
        src = np.float32([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]])
        dst = np.float32([[dx, 0], [W - 1 - dx, 0], [W - 1, H - 1], [0, H - 1]])
        np.testing.assert_allclose(got.numpy(), cv2.getPerspectiveTransform(src, dst), atol=1e-4)


def test_warp_matches_cv2_warp_perspective():
    rng = np.random.default_rng(5)
    frames = np.zeros((3, H, W), np.uint8)
    frames[:, 10:55, 14:30] = 255  # a body-like block: hard edges, where the two interpolations differ most
    frames[:, 5:12, 18:26] = rng.integers(0, 256, (3, 7, 8))
    angle = torch.tensor([8.0], dtype=torch.float64)
    m = tilt_matrices(torch.tensor([3.0], dtype=torch.float64), H, W) @ rotation_matrices(angle, H, W)
    got = warp_frames(torch.from_numpy(frames)[None], m)[0].numpy().astype(int)
    expected = np.stack([cv2.warpPerspective(f, m[0].numpy(), (W, H), flags=cv2.INTER_LINEAR) for f in frames])
    diff = np.abs(got - expected.astype(int))
    assert diff.max() <= 3, "bilinear float vs cv2's fixed-point bilinear: a few grey levels at most"
    assert diff.mean() < 0.1
    assert (got != frames).any(), "the warp moved something"


def test_augmentation_keeps_modalities_aligned_and_frames_consistent():
    bank = numbered_bank(depths=True)
    bank.depths = [s.copy() for s in bank.sils]  # identical modalities must stay identical after the warp
    for s, d in zip(bank.sils, bank.depths):
        s[:, 0, :2] = d[:, 0, :2] = 0
    augment = AugmentConfig(horizontal_flip=0.5, perspective=0.5, rotate=0.5)
    batch = next(DeviceBatches(bank, data_config(p=5, k=4), "cpu", seed=6))
    torch.testing.assert_close(batch["sils"], batch["depths"], rtol=0, atol=0)
    batch = next(DeviceBatches(bank, data_config(p=5, k=4, augment=augment), "cpu", seed=6))
    torch.testing.assert_close(batch["sils"], batch["depths"], rtol=0, atol=0)
    # One static frame repeated: every frame of a sequence gets the same transform.
    static = numbered_bank(subjects=3, per_subject=2)
    for s in static.sils:
        s[:] = s[:1]
    batch = next(DeviceBatches(static, data_config(p=3, k=2, augment=augment), "cpu", seed=7))
    sils = batch["sils"]
    assert (sils == sils[:, :1]).all()
    plain = next(DeviceBatches(static, data_config(p=3, k=2), "cpu", seed=7))["sils"]
    assert (sils != plain).any(), "with probability 0.5 each, some of the 6 sequences were transformed"


def test_random_erasing_zeroes_one_box_of_silhouettes_only():
    bank = numbered_bank(depths=True)
    for s, d in zip(bank.sils, bank.depths):
        s[:] = 255
        d[:] = 255
    augment = AugmentConfig(horizontal_flip=0, perspective=0, rotate=0, erase=1.0)
    batch = next(DeviceBatches(bank, data_config(augment=augment), "cpu", seed=8))
    assert (batch["depths"] == 255).all()
    for seq in batch["sils"]:
        zero = seq == 0
        assert (zero == zero[:1]).all(), "the same box in every frame"
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        assert 0.1 * H - 1 <= len(rows) <= 0.3 * H and 0.2 * W - 1 <= len(cols) <= 0.5 * W
        assert zero[0].sum() == len(rows) * len(cols), "one rectangle"


def test_deterministic_under_a_seed_and_resumable_from_state():
    bank = numbered_bank(depths=True)
    augment = AugmentConfig(horizontal_flip=0.5, perspective=0.5, rotate=0.5, erase=0.5)
    a = DeviceBatches(bank, data_config(augment=augment), "cpu", seed=9)
    b = DeviceBatches(bank, data_config(augment=augment), "cpu", seed=9)
    c = DeviceBatches(bank, data_config(augment=augment), "cpu", seed=10)
    first, second = next(a), next(b)
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert not torch.equal(first["sils"], next(c)["sils"])
    state = a.state_dict()
    expected = next(a)
    b.load_state_dict(state)
    torch.testing.assert_close(next(b)["sils"], expected["sils"], rtol=0, atol=0)


def test_rejects_too_few_subjects_and_odd_labels():
    with pytest.raises(ValueError, match="batch_subjects"):
        DeviceBatches(numbered_bank(subjects=2), data_config(p=3), "cpu")
    bank = numbered_bank(subjects=3)
    bank.labels = bank.labels * 2  # class 1 and 3 have no sequence
    with pytest.raises(ValueError, match="labels"):
        DeviceBatches(bank, data_config(p=2), "cpu")


def test_sil_only_bank_has_no_depths():
    batch = next(DeviceBatches(numbered_bank(), data_config(), "cpu"))
    assert set(batch) == {"sils", "labels"}


class _HostRoundTrips(TorchDispatchMode):
    """Records the ops that make a CUDA stream wait for the host or the host for the device:
    .item()/float() (_local_scalar_dense), tensors from host data (lift_fresh: torch.tensor(list)),
    data-dependent shapes (nonzero, masked_select, boolean indexing)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        boolean_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []))
        if name in ("_local_scalar_dense", "lift_fresh", "nonzero", "masked_select") or boolean_index:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


def test_a_batch_makes_no_host_round_trip():
    """On CPU the ops are recorded that would sync on a GPU (the GPU script also checks with CUDA's
    sync debug mode)."""
    augment = AugmentConfig(horizontal_flip=0.5, perspective=0.5, rotate=0.5, erase=0.5)
    batches = DeviceBatches(numbered_bank(depths=True), data_config(augment=augment), "cpu", seed=11)
    with _HostRoundTrips() as probe:
        batches.batch()
    assert probe.found == []
    with _HostRoundTrips() as probe:  # the probe itself sees them
        x = torch.rand(4)
        x[x > 0.5].sum().item()
        torch.tensor([1.0])
    assert set(probe.found) == {"index", "_local_scalar_dense", "lift_fresh"}

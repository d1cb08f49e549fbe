"""Reading gait datasets in OpenGait's pkl layout: ROOT/SSS/CC-NN/VVV/*.pkl.

Each pkl holds a uint8 array (T, H, W). A two-modality dataset is two parallel trees (silhouettes
and depth) with the same layout and frame counts. Nothing here imports torch: the evaluator uses it
to embed with ONNX Runtime too.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SequenceInfo:
    subject: str  # "001"
    condition: str  # "nm-01" (CASIA-B), or whatever the second level is called in other datasets
    view: str  # "090"
    path: Path  # the folder holding the pkl file(s)

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.condition}/{self.view}"


def parse_subject_range(spec: str | None) -> set[str] | None:
    """'007-074' or '001,003,010-012' -> set of zero-padded ids (width taken from the spec)."""
    if not spec:
        return None
    subjects: set[str] = set()
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            width = len(lo)
            subjects.update(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
        elif part:
            subjects.add(part)
    return subjects


def list_sequences(root: str | Path, subjects: set[str] | None = None, min_frames: int = 0) -> list[SequenceInfo]:
    """All sequences under root, sorted; optionally only some subjects and long-enough sequences.

    Missing or unreadable sequences are skipped (CASIA-B has a few); `min_frames` needs each pkl
    to be opened, so leave it 0 when listing is all you need.
    """
    root = Path(root)
    found = []
    for pkl in sorted(root.glob("*/*/*/*.pkl")):
        seq_dir = pkl.parent
        view, condition, subject = seq_dir.name, seq_dir.parent.name, seq_dir.parent.parent.name
        if subjects is not None and subject not in subjects:
            continue
        info = SequenceInfo(subject, condition, view, seq_dir)
        if found and found[-1] == info:
            continue  # several pkls in one folder (several modalities): one sequence
        if min_frames and len(load_sequence(seq_dir)) < min_frames:
            continue
        found.append(info)
    return found


def load_sequence(seq_dir: str | Path) -> np.ndarray:
    """The (T, H, W) uint8 array of one sequence folder (the first pkl, sorted by name)."""
    pkls = sorted(Path(seq_dir).glob("*.pkl"))
    if not pkls:
        raise FileNotFoundError(f"no .pkl in {seq_dir}")
    with open(pkls[0], "rb") as fh:
        array = pickle.load(fh)
    return np.asarray(array)


def save_sequence(root: str | Path, subject: str, condition: str, view: str, array: np.ndarray) -> Path:
    """Write one sequence in the layout `list_sequences` reads (atomically: temp file + rename)."""
    seq_dir = Path(root) / subject / condition / view
    seq_dir.mkdir(parents=True, exist_ok=True)
    target = seq_dir / f"{view}.pkl"
    tmp = target.with_suffix(".pkl.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(np.ascontiguousarray(array), fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(target)
    return target


def trim_to_network_width(silhouettes: np.ndarray) -> np.ndarray:
    """OpenGait's BaseSilCuttingTransform: drop 10 px each side of a 64x64 frame -> 64x44."""
    width = silhouettes.shape[-1]
    cut = width // 64 * 10
    return silhouettes[..., cut: width - cut] if cut else silhouettes


CASIA_B_NAME = re.compile(r"(?P<subject>\d{3})-(?P<condition>(nm|bg|cl)-\d{2})-(?P<view>\d{3})")

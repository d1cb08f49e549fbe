"""The in-memory view of one namespace: its index, who each vector belongs to, and the search answer.

A search is answered from this view alone (no SQL): the index gives sequence hits, `subject_of`
turns them into subjects. A subject with many enrolled sequences counts once, scored by its best
sequence (max over its sequences), so enrolling more walks of one person improves recall without
crowding others out of the top-k.

The view's `lock` (many readers or one writer, writers first so enrollments are not starved) is
held for reading by searches and for writing by every change to the view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from readerwriterlock.rwlock import RWLockWrite

from gallery.backends import SearchIndex
from gallery.types import Candidate, Identification

NOT_LOADED = -1


@dataclass
class NamespaceState:
    name: str
    lock: RWLockWrite = field(default_factory=RWLockWrite)
    generation: int = NOT_LOADED  # database generation the index reflects; NOT_LOADED = must (re)load
    generation_token: str = ""  # random token of that generation (see gallery.store)
    saved_generation: int = NOT_LOADED  # generation of the index file on disk
    model_id: str | None = None
    shape: tuple[int, int] | None = None
    index: SearchIndex | None = None
    subject_of: dict[int, str] = field(default_factory=dict)  # sequence id -> subject id
    sequence_counts: Counter = field(default_factory=Counter)  # subject id -> enrolled sequences
    display_names: dict[str, str] = field(default_factory=dict)
    loaded_from: str = "empty"
    rebuild_reason: str | None = None
    _max_per_subject: int | None = None

    @property
    def loaded(self) -> bool:
        return self.generation != NOT_LOADED

    def invalidate(self) -> None:
        """Make the next access reload the view from the database."""
        self.generation = NOT_LOADED

    def max_per_subject(self) -> int:
        if self._max_per_subject is None:
            self._max_per_subject = max(self.sequence_counts.values(), default=1)
        return self._max_per_subject

    def set_subjects(self, sequence_ids: Sequence[int], subjects: Sequence[str], display_names: dict[str, str]) -> None:
        self.subject_of = dict(zip((int(i) for i in sequence_ids), subjects))
        self.sequence_counts = Counter(subjects)
        self.display_names = display_names
        self._max_per_subject = None

    def track_added(self, subject_id: str, sequence_ids: Sequence[int]) -> None:
        for sequence_id in sequence_ids:
            self.subject_of[int(sequence_id)] = subject_id
        self.sequence_counts[subject_id] += len(sequence_ids)
        self._max_per_subject = max(self.max_per_subject(), self.sequence_counts[subject_id])

    def track_removed(self, sequence_ids: Sequence[int]) -> None:
        for sequence_id in sequence_ids:
            subject_id = self.subject_of.pop(int(sequence_id), None)
            if subject_id is not None:
                self.sequence_counts[subject_id] -= 1
                if self.sequence_counts[subject_id] <= 0:
                    del self.sequence_counts[subject_id]
        self._max_per_subject = None

    def apply_enrollment(self, subject_id: str, new_ids: Sequence[int], vectors: np.ndarray,
                         replaced_ids: Sequence[int], display_name: str | None, created: bool) -> None:
        """Mirror a committed enrollment (the caller then records the new generation)."""
        assert self.index is not None
        self.index.remove(np.array(replaced_ids, np.int64))
        self.track_removed(replaced_ids)
        self.index.add(np.array(new_ids, np.int64), vectors)
        self.track_added(subject_id, new_ids)
        if display_name is not None or created:
            self.display_names[subject_id] = display_name if display_name is not None else subject_id

    def apply_deletion(self, subject_id: str, sequence_ids: Sequence[int]) -> None:
        """Mirror a committed deletion (the caller then records the new generation)."""
        assert self.index is not None
        self.index.remove(np.array(sequence_ids, np.int64))
        self.track_removed(sequence_ids)
        self.display_names.pop(subject_id, None)

    def identify(self, vectors: np.ndarray, top_k: int, threshold: float) -> list[Identification]:
        """Search vectors (N, D) of this namespace's model -> N answers of up to top_k subjects."""
        if self.index is None or self.index.ntotal == 0:
            return [Identification((), threshold) for _ in range(len(vectors))]
        # Asking for top_k x (most sequences of one subject) sequence hits guarantees the exact
        # top_k subjects: the j-th best subject's best sequence has at most (j-1) x max better ones.
        k_sequences = min(self.index.ntotal, top_k * self.max_per_subject())
        scores, ids = self.index.search(vectors, k_sequences)
        return [self._rank_subjects(s, i, top_k, threshold) for s, i in zip(scores, ids)]

    def _rank_subjects(self, scores: np.ndarray, ids: np.ndarray, top_k: int, threshold: float) -> Identification:
        """Sequence hits (best first) -> subjects, each once at its best sequence's score."""
        seen: set[str] = set()
        candidates: list[Candidate] = []
        for score, sequence_id in zip(scores.tolist(), ids.tolist()):
            subject_id = self.subject_of.get(sequence_id) if sequence_id >= 0 else None
            if subject_id is None or subject_id in seen:
                continue
            seen.add(subject_id)
            candidates.append(Candidate(subject_id, self.display_names.get(subject_id, subject_id),
                                        float(score), int(sequence_id)))
            if len(candidates) == top_k:
                break
        return Identification(tuple(candidates), threshold)

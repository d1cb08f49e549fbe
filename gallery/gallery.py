"""The gallery: enrolled subjects, searchable by gait embedding, one namespace per tenant.

Layout under `root`:
    gallery.db              SQLite (WAL): the source of truth, every namespace (see gallery.store)
    index/<namespace>.faiss one FAISS index file per namespace (see gallery.index)

Namespaces. Each API key sees its own gallery: every row carries its namespace and each namespace
has its own index, active model and generation counter, so two tenants can enroll the same
subject id without seeing each other. Names are 1-64 chars of [a-z0-9_.-] starting with a letter
or digit; derive them from a key's hash, never store the key itself.

Metric. Similarity is the mean per-part cosine of (C, P) embeddings (gallery.metric), computed
exactly by the index as an inner product. A search ranks *subjects*: a subject with many enrolled
sequences counts once, scored by its best sequence (max over its sequences), so enrolling more
walks of one person improves recall without crowding others out of the top-k. The answer is
"unknown" when the best subject's score is below the threshold (`Gallery.threshold`, or the
`threshold` argument; calibrate it with gallery.calibration).

Models. Embeddings of different models are never compared. Each namespace has an active model;
enrolling or searching with another model raises ModelMismatchError (status().needs_reembed()
says so beforehand) until `reembed` has re-computed every stored sequence with the new model.

Crash safety. An enrollment or deletion is one SQLite transaction that also bumps the
namespace's generation; the in-memory index is updated only after COMMIT, under the namespace's
write lock. A crash before COMMIT leaves the gallery as before, after COMMIT as after: on start the
index file is used only if its recorded database id, generation, model, kind and ids match the
database, else it is rebuilt from the database. Index files are written atomically on `flush()` /
`close()` (and after a rebuild at load); a deletion removes the namespace's file at once, since it
still holds the deleted person's vectors.

Concurrency. Safe for many threads: searches of a namespace run concurrently (read lock);
enrollments, deletions and re-embedding take the write lock only around their transaction and the
index update. Several processes may share one root: each checks the database generation before a
search and reloads its index when another process changed it (correct, but every foreign write
costs a reload: prefer one process per root).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from gallery.errors import (
    GalleryClosedError,
    InvalidInputError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from gallery.index import Device, IndexFileError, ReplicaFactory, VectorIndex
from gallery.metric import as_embedding_batch, normalize_embeddings
from gallery.store import NamespaceRow, NewSequence, Store, encode_array, fault_point
from gallery.types import (
    DEFAULT_NAMESPACE,
    Candidate,
    EnrollResult,
    GalleryStatus,
    Identification,
    IfExists,
    IndexInfo,
    IndexKind,
    ReembedReport,
    SequenceInput,
    StoredSequence,
    SubjectRecord,
    SubjectSummary,
)
from service.pipeline.types import ALIGNED_HEIGHT, ALIGNED_WIDTH

log = logging.getLogger("gaitid.gallery")

DB_FILENAME = "gallery.db"
INDEX_DIRNAME = "index"
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_ID_CHARS = 128
MAX_DISPLAY_NAME_CHARS = 256
MAX_METADATA_BYTES = 64 * 1024

# (silhouettes (T, 64, 44) uint8, depth (T, 64, 44) float32 or None) -> (C, P) embedding
EmbedFunction = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


class ReadWriteLock:
    """Many readers or one writer; waiting writers go first so enrollments are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_NOT_LOADED = -1


@dataclass
class _NamespaceState:
    """In-memory view of one namespace: its index and what a search needs to answer without SQL."""

    name: str
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    generation: int = _NOT_LOADED  # database generation the index reflects; -1 = must (re)load
    generation_token: str = ""  # random token of that generation (see gallery.store)
    saved_generation: int = _NOT_LOADED  # generation of the index file on disk
    model_id: str | None = None
    shape: tuple[int, int] | None = None
    index: VectorIndex | None = None
    subject_of: dict[int, str] = field(default_factory=dict)  # sequence id -> subject id
    sequence_counts: Counter = field(default_factory=Counter)  # subject id -> enrolled sequences
    display_names: dict[str, str] = field(default_factory=dict)
    loaded_from: str = "empty"
    rebuild_reason: str | None = None
    _max_per_subject: int | None = None

    def max_per_subject(self) -> int:
        if self._max_per_subject is None:
            self._max_per_subject = max(self.sequence_counts.values(), default=1)
        return self._max_per_subject

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


class Gallery:
    """Enrolled subjects + FAISS search. Open once per process and share it between threads.

    threshold: default open-set decision threshold (mean per-part cosine in [-1, 1]).
    index_kind: "flat" (exact float32, default) or "fp16" (half the memory, scores within ~1e-3).
    device: where searches run: "auto" (GPU when faiss has one), "cpu" or "gpu".
    """

    def __init__(self, root: str | Path, *, threshold: float = 0.5, index_kind: IndexKind = "flat",
                 device: Device = "auto", replica_factory: ReplicaFactory | None = None):
        if index_kind not in ("flat", "fp16"):
            raise InvalidInputError(f"index_kind must be 'flat' or 'fp16', got {index_kind!r}")
        self.root = Path(root)
        self.threshold = _check_threshold(threshold)
        self.index_kind: IndexKind = index_kind
        self._device: Device = device
        self._replica_factory = replica_factory
        self._closed = False
        self._states: dict[str, _NamespaceState] = {}
        self._states_lock = threading.Lock()
        self.store = Store(self.root / DB_FILENAME)
        # Load (or rebuild) every namespace's index now, so the first request is not the slow one.
        for namespace in self.store.namespaces():
            self._state(namespace)

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Persist stale index files and close the database. Idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self.store.close()

    def flush(self, namespace: str | None = None) -> None:
        """Write the index file of each loaded namespace (or of `namespace`) whose file is stale."""
        self._check_open()
        with self._states_lock:
            states = [s for n, s in self._states.items() if namespace is None or n == namespace]
        for state in states:
            with state.lock.read():  # saving only reads the index: searches go on meanwhile
                self._persist(state)

    def index_path(self, namespace: str) -> Path:
        return self.root / INDEX_DIRNAME / f"{_check_namespace(namespace)}.faiss"

    # -- queries ----------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        self._check_open()
        return self.store.namespaces()

    def status(self, namespace: str = DEFAULT_NAMESPACE) -> GalleryStatus:
        self._check_open()
        state = self._fresh_state(_check_namespace(namespace))
        with state.lock.read():
            with self.store.read() as conn:
                subjects, sequences = self.store.counts(conn, state.name)
            return GalleryStatus(namespace=state.name, model_id=state.model_id, embedding_shape=state.shape,
                                 subjects=subjects, sequences=sequences, generation=max(state.generation, 0),
                                 index=self._index_info(state))

    def list_subjects(self, *, namespace: str = DEFAULT_NAMESPACE, offset: int = 0,
                      limit: int | None = 100) -> list[SubjectSummary]:
        """Subjects ordered by id, `limit` at a time (None = all)."""
        self._check_open()
        namespace = _check_namespace(namespace)
        if offset < 0 or (limit is not None and limit < 0):
            raise InvalidInputError("offset and limit must be >= 0")
        with self.store.read() as conn:
            return self.store.subject_summaries(conn, namespace, offset, limit)

    def get_subject(self, subject_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> SubjectRecord:
        self._check_open()
        namespace = _check_namespace(namespace)
        subject_id = _check_identifier(subject_id, "subject_id")
        with self.store.read() as conn:
            found = self.store.subject_summaries(conn, namespace, 0, 1, subject_id=subject_id)
            if not found:
                raise SubjectNotFoundError(subject_id, namespace)
            sequences = self.store.sequence_records(conn, namespace, subject_id=subject_id)
        return SubjectRecord(**vars(found[0]), sequences=tuple(sequences))

    def get_sequence(self, sequence_id: int, *, namespace: str = DEFAULT_NAMESPACE) -> StoredSequence:
        """A stored sequence with its silhouettes (and depth) decompressed."""
        self._check_open()
        namespace = _check_namespace(namespace)
        with self.store.read() as conn:
            records = self.store.sequence_records(conn, namespace, sequence_id=int(sequence_id))
            if not records:
                raise SequenceNotFoundError(int(sequence_id), namespace)
            silhouettes, depth = self.store.sequence_arrays(conn, int(sequence_id))
        return StoredSequence(record=records[0], silhouettes=silhouettes, depth=depth)

    def export_embeddings(self, *, namespace: str = DEFAULT_NAMESPACE) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(sequence ids (N,), subject ids, raw embeddings (N, C, P)) of the active model, e.g. to
        calibrate the threshold on the enrolled data (gallery.calibration)."""
        self._check_open()
        namespace = _check_namespace(namespace)
        with self.store.read() as conn:
            row = self.store.namespace(conn, namespace)
            if row is None or row.model_id is None or row.embedding_shape is None:
                return np.zeros(0, np.int64), [], np.zeros((0, 0, 0), np.float32)
            ids, subjects = self.store.active_sequence_map(conn, namespace, row.model_id)
            chunks = [e for _, e in self.store.iter_embeddings(conn, namespace, row.model_id)]
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, *row.embedding_shape), np.float32)
        return ids, subjects, embeddings

    def search(self, embeddings: np.ndarray, *, model_id: str, namespace: str = DEFAULT_NAMESPACE,
               top_k: int = 5, threshold: float | None = None) -> list[Identification]:
        """Identify each query: (C, P) or (N, C, P) embeddings made by `model_id` -> N answers.

        Each answer lists up to `top_k` subjects (each once, by its best sequence), best first;
        `answer.subject_id` is None ("unknown") when the best score is below the threshold. An
        empty namespace answers unknown; a namespace of another model raises ModelMismatchError.
        """
        self._check_open()
        namespace = _check_namespace(namespace)
        model_id = _check_identifier(model_id, "model_id")
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        queries = as_embedding_batch(embeddings)
        state = self._fresh_state(namespace)
        with state.lock.read():
            index = state.index
            if index is None or index.ntotal == 0:
                return [Identification((), threshold) for _ in range(len(queries))]
            if state.model_id != model_id:
                raise ModelMismatchError(namespace, str(state.model_id), model_id)
            if tuple(queries.shape[1:]) != state.shape:
                raise InvalidInputError(f"query embeddings are {tuple(queries.shape[1:])}, the gallery's "
                                        f"model makes {state.shape}")
            # Asking for top_k x (most sequences of one subject) sequence hits guarantees the exact
            # top_k subjects: the j-th best subject's best sequence has at most (j-1) x max better ones.
            k_sequences = min(index.ntotal, int(top_k) * state.max_per_subject())
            scores, ids = index.search(normalize_embeddings(queries), k_sequences)
            return [self._aggregate(state, s, i, int(top_k), threshold) for s, i in zip(scores, ids)]

    # -- mutations --------------------------------------------------------------------------
    def enroll(self, subject_id: str, sequences: Sequence[SequenceInput], *, model_id: str,
               display_name: str | None = None, metadata: Mapping[str, Any] | None = None,
               namespace: str = DEFAULT_NAMESPACE, if_exists: IfExists = "append") -> EnrollResult:
        """Enroll one subject with one or more sequences (+ their embeddings by `model_id`), atomically.

        if_exists: "append" adds the sequences to an existing subject (display_name / metadata
        replace the stored ones when given), "replace" drops its previous sequences first,
        "error" raises SubjectExistsError. The first enrollment of an empty namespace sets its
        model; later ones must use it (ModelMismatchError otherwise).
        """
        self._check_open()
        namespace = _check_namespace(namespace)
        subject_id = _check_identifier(subject_id, "subject_id")
        model_id = _check_identifier(model_id, "model_id")
        if if_exists not in ("append", "replace", "error"):
            raise InvalidInputError(f"if_exists must be append | replace | error, got {if_exists!r}")
        if display_name is not None:
            display_name = _check_display_name(display_name)
        metadata_json = None if metadata is None else _json_object(metadata, "metadata")
        prepared = _prepare_sequences(sequences)
        shape = (int(prepared[0].embedding.shape[0]), int(prepared[0].embedding.shape[1]))
        vectors = normalize_embeddings(np.stack([p.embedding for p in prepared]))

        state = self._state(namespace)
        with state.lock.write():
            with self.store.write() as conn:
                row = self.store.ensure_namespace(conn, namespace)
                _, stored_sequences = self.store.counts(conn, namespace)
                if stored_sequences and row.model_id not in (None, model_id):
                    raise ModelMismatchError(namespace, str(row.model_id), model_id)
                if stored_sequences and row.embedding_shape != shape:
                    raise InvalidInputError(f"model {model_id!r} made {row.embedding_shape} embeddings before, "
                                            f"these are {shape}")
                model_changed = (row.model_id, row.embedding_shape) != (model_id, shape)
                if model_changed:
                    self.store.set_active_model(conn, namespace, model_id, shape)
                exists = self.store.subject_exists(conn, namespace, subject_id)
                if exists and if_exists == "error":
                    raise SubjectExistsError(subject_id, namespace)
                replaced: list[int] = []
                if exists and if_exists == "replace":
                    replaced = self.store.sequence_ids_of(conn, namespace, subject_id)
                    self.store.delete_sequences_of(conn, namespace, subject_id)
                created = self.store.upsert_subject(conn, namespace, subject_id, display_name, metadata_json)
                new_ids = self.store.insert_sequences(conn, namespace, subject_id, model_id, prepared)
                foreign_change = row.generation != state.generation
                bumped = self.store.bump_generation(conn, namespace)
                fault_point("enroll:written")
            fault_point("enroll:committed")
            if replaced:
                self._forget_index_file(state)
            try:
                if foreign_change or model_changed or state.index is None:
                    self._load(state, persist=False)
                else:
                    state.index.remove(np.array(replaced, np.int64))
                    state.track_removed(replaced)
                    state.index.add(np.array(new_ids, np.int64), vectors)
                    state.track_added(subject_id, new_ids)
                    if display_name is not None or created:
                        state.display_names[subject_id] = display_name if display_name is not None else subject_id
                    state.generation, state.generation_token = bumped.generation, bumped.generation_token
            except Exception:  # committed already: the database is right, the index reloads lazily
                log.exception("index update after enrollment failed; namespace %s will reload", namespace)
                state.generation = _NOT_LOADED
        return EnrollResult(namespace=namespace, subject_id=subject_id, sequence_ids=tuple(new_ids),
                            replaced_sequence_ids=tuple(replaced), created=created, generation=bumped.generation)

    def delete_subject(self, subject_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Remove a subject with its sequences and embeddings from the database and the index;
        returns how many sequences went. Raises SubjectNotFoundError."""
        self._check_open()
        namespace = _check_namespace(namespace)
        subject_id = _check_identifier(subject_id, "subject_id")
        state = self._state(namespace)
        with state.lock.write():
            with self.store.write() as conn:
                if not self.store.subject_exists(conn, namespace, subject_id):
                    raise SubjectNotFoundError(subject_id, namespace)
                row = self.store.namespace(conn, namespace)
                sequence_ids = self.store.sequence_ids_of(conn, namespace, subject_id)
                self.store.delete_subject(conn, namespace, subject_id)
                foreign_change = row is None or row.generation != state.generation
                bumped = self.store.bump_generation(conn, namespace)
                fault_point("delete:written")
            self._forget_index_file(state)
            try:
                if foreign_change or state.index is None:
                    self._load(state, persist=False)
                else:
                    state.index.remove(np.array(sequence_ids, np.int64))
                    state.track_removed(sequence_ids)
                    state.display_names.pop(subject_id, None)
                    state.generation, state.generation_token = bumped.generation, bumped.generation_token
            except Exception:
                log.exception("index update after deletion failed; namespace %s will reload", namespace)
                state.generation = _NOT_LOADED
        # Fold the WAL (whose old frames may still hold the deleted data) into the database file,
        # where secure_delete has zeroed the freed pages. Best effort: busy readers can defer it.
        self.store.checkpoint()
        return len(sequence_ids)

    def reembed(self, embed: EmbedFunction, *, model_id: str, namespace: str = DEFAULT_NAMESPACE,
                batch_size: int = 16, progress: Callable[[int, int], None] | None = None) -> ReembedReport:
        """Re-compute every stored sequence's embedding with a new model, then make it active.

        `embed(silhouettes, depth)` returns the (C, P) embedding of one sequence. New embeddings
        are committed in batches next to the old ones (searches keep using the old model meanwhile;
        an interrupted run resumes where it stopped); the switch to the new model, which drops the
        old embeddings and rebuilds the index, is one transaction. Enrollments made with the old
        model while this runs are picked up before the switch. progress(done, total) is called
        after each batch.
        """
        self._check_open()
        namespace = _check_namespace(namespace)
        model_id = _check_identifier(model_id, "model_id")
        if batch_size < 1:
            raise InvalidInputError("batch_size must be >= 1")
        started = time.perf_counter()
        state = self._state(namespace)
        with self.store.read() as conn:
            row = self.store.namespace(conn, namespace)
            total = self.store.count_missing(conn, namespace, model_id)
        old_model = row.model_id if row else None
        if row is None or old_model == model_id:
            return ReembedReport(namespace, old_model, model_id, 0, self.status(namespace).sequences,
                                 time.perf_counter() - started)
        embedded = 0
        while True:
            with self.store.read() as conn:
                missing = self.store.sequences_missing(conn, namespace, model_id, batch_size)
                arrays = [self.store.sequence_arrays(conn, i) for i in missing]
            if not missing:
                sequences = self._activate_model(state, model_id)
                if sequences is not None:
                    return ReembedReport(namespace, old_model, model_id, embedded, sequences,
                                         time.perf_counter() - started)
                continue  # enrolled meanwhile with the old model: embed those too
            new = [as_embedding_batch(embed(sils, depth))[0] for sils, depth in arrays]
            if len({e.shape for e in new}) != 1:
                raise InvalidInputError(f"the embed function returned differing shapes {sorted({e.shape for e in new})}")
            with self.store.write() as conn:
                for sequence_id, embedding in zip(missing, new):
                    if self.store.sequence_exists(conn, sequence_id):  # not deleted meanwhile
                        self.store.insert_embedding(conn, sequence_id, model_id, embedding)
            embedded += len(missing)
            if progress is not None:
                progress(embedded, max(total, embedded))

    def _activate_model(self, state: _NamespaceState, model_id: str) -> int | None:
        """Switch the namespace to `model_id` if every sequence has its embedding; returns the number
        of sequences, or None when some are still missing."""
        with state.lock.write():
            with self.store.write() as conn:
                if self.store.sequences_missing(conn, state.name, model_id, 1):
                    return None
                shapes = self.store.embedding_shapes(conn, state.name, model_id)
                if len(shapes) > 1:
                    raise InvalidInputError(f"model {model_id!r} has embeddings of several shapes {shapes}")
                if shapes:
                    self.store.set_active_model(conn, state.name, model_id, shapes[0])
                else:  # no sequences: just record the model
                    conn.execute("UPDATE namespaces SET model_id = ?, channels = NULL, parts = NULL WHERE name = ?",
                                 (model_id, state.name))
                self.store.drop_other_embeddings(conn, state.name, model_id)
                self.store.bump_generation(conn, state.name)
                _, sequences = self.store.counts(conn, state.name)
                fault_point("reembed:activating")
            self._forget_index_file(state)
            self._load(state, persist=True)
        return sequences

    # -- internals --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise GalleryClosedError()

    def _state(self, namespace: str) -> _NamespaceState:
        with self._states_lock:
            state = self._states.get(namespace)
            if state is None:
                state = self._states[namespace] = _NamespaceState(namespace)
        if state.generation == _NOT_LOADED:
            with state.lock.write():
                if state.generation == _NOT_LOADED:
                    self._load(state, persist=True)
        return state

    def _fresh_state(self, namespace: str) -> _NamespaceState:
        """The namespace's state, reloaded first if the database moved on without it (another
        process wrote, or an index update failed)."""
        state = self._state(namespace)
        if self.store.generation(namespace) != state.generation:
            with state.lock.write():
                if self.store.generation(namespace) != state.generation:
                    self._load(state, persist=False)
        return state

    def _load(self, state: _NamespaceState, persist: bool) -> None:
        """(Re)load the namespace from the database, from its index file when that file provably
        matches the database, else by rebuilding. Caller holds the write lock."""
        with self.store.read() as conn:  # one snapshot: generation, ids and vectors agree
            row = self.store.namespace(conn, state.name)
            if row is None or row.model_id is None or row.embedding_shape is None:
                self._set_empty(state, row)
                return
            ids, subjects = self.store.active_sequence_map(conn, state.name, row.model_id)
            names = self.store.display_names(conn, state.name)
            index, reason = self._index_from_file(row, ids)
            if index is None:
                index = self._new_index(row.embedding_shape)
                for chunk_ids, embeddings in self.store.iter_embeddings(conn, state.name, row.model_id):
                    index.add(chunk_ids, normalize_embeddings(embeddings))
        state.index = index
        state.model_id, state.shape = row.model_id, row.embedding_shape
        state.generation, state.generation_token = row.generation, row.generation_token
        state.subject_of = dict(zip(ids.tolist(), subjects))
        state.sequence_counts = Counter(subjects)
        state._max_per_subject = None
        state.display_names = names
        state.rebuild_reason = reason
        if reason is None:
            state.loaded_from, state.saved_generation = "file", row.generation
        else:
            state.loaded_from = "rebuilt"
            log.info("rebuilt index of namespace %s (%d vectors): %s", state.name, index.ntotal, reason)
            if persist:
                self._persist(state)

    def _set_empty(self, state: _NamespaceState, row: NamespaceRow | None) -> None:
        state.index = None
        state.model_id = row.model_id if row else None
        state.shape = row.embedding_shape if row else None
        state.generation = row.generation if row else 0
        state.generation_token = row.generation_token if row else ""
        state.subject_of, state.sequence_counts, state.display_names = {}, Counter(), {}
        state._max_per_subject = None
        state.loaded_from, state.rebuild_reason = "empty", None
        self._forget_index_file(state)

    def _index_from_file(self, row: NamespaceRow, ids: np.ndarray) -> tuple[VectorIndex | None, str | None]:
        """The namespace's index file if it reflects exactly this database state; else (None, why)."""
        path = self.index_path(row.name)
        if not path.exists():
            return None, "missing"
        assert row.embedding_shape is not None
        expected = {"db_instance": self.store.instance_id, "namespace": row.name, "generation": row.generation,
                    "generation_token": row.generation_token, "model_id": row.model_id, "kind": self.index_kind,
                    "dim": row.embedding_shape[0] * row.embedding_shape[1], "ntotal": len(ids)}
        try:
            header = VectorIndex.read_header(path)
            differing = [k for k, v in expected.items() if header.get(k) != v]
            if differing:
                return None, "stale: " + ", ".join(f"{k} {header.get(k)!r} != {expected[k]!r}" for k in differing)
            index, _ = VectorIndex.load(path, device=self._device, replica_factory=self._replica_factory)
        except IndexFileError as exc:
            return None, f"corrupt: {exc}"
        if not np.array_equal(np.sort(index.ids()), ids):
            return None, "stale: ids differ from the database"
        return index, None

    def _new_index(self, shape: tuple[int, int]) -> VectorIndex:
        return VectorIndex(shape[0] * shape[1], self.index_kind, device=self._device,
                           replica_factory=self._replica_factory)

    def _persist(self, state: _NamespaceState) -> None:
        if state.index is None or state.generation < 0 or state.saved_generation == state.generation:
            return
        if self.store.generation(state.name) != state.generation:
            return  # another process moved the database on: this index would be stale on arrival
        generation = state.generation
        state.index.save(self.index_path(state.name), {
            "db_instance": self.store.instance_id, "namespace": state.name,
            "generation": generation, "generation_token": state.generation_token, "model_id": state.model_id,
        })
        state.saved_generation = generation

    def _forget_index_file(self, state: _NamespaceState) -> None:
        self.index_path(state.name).unlink(missing_ok=True)
        state.saved_generation = _NOT_LOADED

    def _index_info(self, state: _NamespaceState) -> IndexInfo | None:
        if state.index is None:
            return None
        return IndexInfo(kind=state.index.kind, device=state.index.device, vectors=state.index.ntotal,
                         generation=state.generation, loaded_from=state.loaded_from,  # type: ignore[arg-type]
                         path=str(self.index_path(state.name)), rebuild_reason=state.rebuild_reason)

    @staticmethod
    def _aggregate(state: _NamespaceState, scores: np.ndarray, ids: np.ndarray, top_k: int,
                   threshold: float) -> Identification:
        """Sequence hits (best first) -> subjects, each once at its best sequence's score."""
        seen: set[str] = set()
        candidates: list[Candidate] = []
        for score, sequence_id in zip(scores.tolist(), ids.tolist()):
            subject_id = state.subject_of.get(sequence_id) if sequence_id >= 0 else None
            if subject_id is None or subject_id in seen:
                continue
            seen.add(subject_id)
            candidates.append(Candidate(subject_id, state.display_names.get(subject_id, subject_id),
                                        float(score), int(sequence_id)))
            if len(candidates) == top_k:
                break
        return Identification(tuple(candidates), threshold)


def namespace_for_api_key(api_key: str) -> str:
    """The namespace of an API key: "key-" + 16 hex chars of its SHA-256, so neither the database
    nor the file names ever hold the key itself."""
    if not isinstance(api_key, str) or not api_key:
        raise InvalidInputError("api_key must be a non-empty string")
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


# -- validation -------------------------------------------------------------------------------
def _check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
        raise InvalidInputError(f"namespace must be 1-64 chars of [a-z0-9_.-] starting with a letter or digit, "
                                f"got {namespace!r}")
    return namespace


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{what} must be a non-empty string of at most {MAX_ID_CHARS} chars, got {value!r}")
    if value != value.strip() or any(unicodedata.category(c).startswith("C") for c in value):
        raise InvalidInputError(f"{what} must not contain control characters or surrounding spaces: {value!r}")
    return value


def _check_display_name(value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_DISPLAY_NAME_CHARS:
        raise InvalidInputError(f"display_name must be a string of at most {MAX_DISPLAY_NAME_CHARS} chars")
    return value


def _check_threshold(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value):
        raise InvalidInputError(f"threshold must be a finite number, got {value!r}")
    return float(value)


def _json_object(value: Mapping[str, Any], what: str) -> str:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object (mapping), got {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"{what} is larger than {MAX_METADATA_BYTES} bytes as JSON")
    return text


def _prepare_sequences(sequences: Sequence[SequenceInput]) -> list[NewSequence]:
    if isinstance(sequences, SequenceInput):
        sequences = [sequences]
    if not sequences:
        raise InvalidInputError("enroll needs at least one sequence")
    prepared = [_prepare_sequence(i, s) for i, s in enumerate(sequences)]
    shapes = {p.embedding.shape for p in prepared}
    if len(shapes) != 1:
        raise InvalidInputError(f"sequences have embeddings of different shapes: {sorted(shapes)}")
    return prepared


def _prepare_sequence(position: int, sequence: SequenceInput) -> NewSequence:
    where = f"sequences[{position}]"
    if not isinstance(sequence, SequenceInput):
        raise InvalidInputError(f"{where} must be a SequenceInput, got {type(sequence).__name__}")
    sils = sequence.silhouettes
    expected = (ALIGNED_HEIGHT, ALIGNED_WIDTH)
    if not isinstance(sils, np.ndarray) or sils.dtype != np.uint8 or sils.ndim != 3 \
            or sils.shape[0] < 1 or sils.shape[1:] != expected:
        raise InvalidInputError(f"{where}.silhouettes must be (T, {expected[0]}, {expected[1]}) uint8 with T >= 1, "
                                f"got {getattr(sils, 'shape', None)} {getattr(sils, 'dtype', type(sils).__name__)}")
    depth_blob = None
    if sequence.depth is not None:
        depth = sequence.depth
        if not isinstance(depth, np.ndarray) or not np.issubdtype(depth.dtype, np.floating) \
                or depth.shape != sils.shape:
            raise InvalidInputError(f"{where}.depth must be float {sils.shape} like the silhouettes, "
                                    f"got {getattr(depth, 'shape', None)} {getattr(depth, 'dtype', None)}")
        if not np.isfinite(depth).all():
            raise InvalidInputError(f"{where}.depth contains NaN or infinite values")
        depth_blob = encode_array(depth.astype(np.float32, copy=False))
    if np.ndim(sequence.embedding) != 2:
        raise InvalidInputError(f"{where}.embedding must be one (C, P) embedding, got {np.shape(sequence.embedding)}")
    embedding = as_embedding_batch(sequence.embedding)[0]
    return NewSequence(frames=int(sils.shape[0]), silhouettes_blob=encode_array(sils), depth_blob=depth_blob,
                       metadata_json=_json_object(sequence.metadata, f"{where}.metadata"), embedding=embedding)

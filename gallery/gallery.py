"""The gallery: enrolled subjects, searchable by gait embedding, one namespace per tenant.

Layout under `root`:
    gallery.db              SQLite (WAL): the source of truth, every namespace (gallery.store)
    index/<namespace>.faiss one FAISS index file per namespace, a cache of the database
                            (gallery.index for the format, gallery.namespace_indexes for its use)
    milvus.db               with backend="milvus" and no milvus_uri: a milvus-lite folder holding one
                            collection per namespace instead (gallery.backends.milvus)

Namespaces. Every row carries its namespace and each namespace has its own index, active model
and generation counter, so two tenants can enroll the same subject id without seeing each other.
Names are 1-64 chars of [a-z0-9_.-] starting with a letter or digit (gallery.validation); which
caller gets which namespace is the service's business.

Similarity. The one the model declares (`gaitid.contract`, "part-cosine" today), computed exactly by
the index as an inner product of the contract's search vectors. A search ranks *subjects*, each
once at its best sequence (gallery.namespace_state). The answer is "unknown" when the best
subject's score is below the threshold (`Gallery.threshold`, or the `threshold` argument;
calibrate it with gallery.calibration, CLI `gaitid calibrate`).

Models. Embeddings of different models are never compared. Each namespace has an active model;
enrolling or searching with another model raises ModelMismatchError (status().needs_reembed()
says so beforehand) until `reembed` has re-computed every stored sequence with the new model
(gallery.reembedding).

Crash safety. An enrollment or deletion is one SQLite transaction that also bumps the
namespace's generation; the in-memory index is updated only after COMMIT, under the namespace's
write lock. A crash before COMMIT leaves the gallery as before, after COMMIT as after: on start an
index file is used only if it provably matches the database, else the index is rebuilt. Index
files are written atomically on `flush()` / `close()` (and after a rebuild at load); a deletion
removes the namespace's file at once, since it still holds the deleted person's vectors.

Audit. Every enrollment, deletion and re-embedding, and every change of an API key, appends an
entry to the namespace's audit log (gallery.audit) in the transaction that makes the change; pass
`audit=AuditContext(actor, request_id)` to say who asked (default: actor "local"). A deletion
erases the subject's sequences (aligned silhouettes and depth), their embeddings and their index
vectors; its audit entry lists the erased sequence ids. The gallery stores no thumbnails or footage.
`append_audit` lets a caller log changes it keeps elsewhere (the service's cameras) beside them.

Subject ids. New ones follow gallery.subject_ids (NFC, a documented alphabet); look-ups match any
stored id exactly, then by NFC form. `subject_id_problems()` lists stored ids an older version
accepted that break today's rule.

API keys. The gallery stores the service's keys (gallery.api_keys: name, namespace, role, sha256 of
the secret) so that key changes are audited like data changes; it does not authenticate anyone.

Concurrency. Safe for many threads: searches of a namespace run concurrently (read lock);
enrollments, deletions and re-embedding take the write lock only around their transaction and the
index update. Several processes may share one root: each checks the database generation before a
search and reloads its index when another process changed it (correct, but every foreign write
costs a reload: prefer one process per root).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from gaitid.contract import SequenceEmbedder, Similarity
from gallery import api_keys, audit, consistency
from gallery.api_keys import ApiKeyRecord
from gallery.audit import AuditContext, AuditEntry
from gallery.backends import BACKENDS, Backend, open_index_store
from gallery.errors import (
    GalleryClosedError,
    InvalidInputError,
    ModelMismatchError,
    SequenceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from gallery.index import Device, ReplicaFactory
from gallery.namespace_indexes import NamespaceIndexes
from gallery.reembedding import Progress, reembed
from gallery.store import Store, fault_point
from gallery.subject_ids import check_new_subject_id, lookup_candidates, subject_id_problem
from gallery.types import (
    DEFAULT_NAMESPACE,
    EnrollResult,
    GalleryStatus,
    Identification,
    IfExists,
    IndexKind,
    ReembedReport,
    SequenceInput,
    StoredSequence,
    SubjectIdProblem,
    SubjectRecord,
    SubjectSummary,
)
from gallery.validation import (
    IF_EXISTS,
    INDEX_KINDS,
    check_choice,
    check_display_name,
    check_identifier,
    check_namespace,
    check_page,
    check_similarity,
    check_threshold,
    check_top_k,
    embedding_batch,
    json_object,
    prepare_sequences,
)

log = logging.getLogger("gaitid.gallery")

DB_FILENAME = "gallery.db"


class Gallery:
    """Enrolled subjects + FAISS search. Open once per process and share it between threads.

    threshold: default open-set decision threshold (a similarity score, in [-1, 1] for part-cosine).
    similarity: how embeddings are compared: the one the model declares (its metadata's `similarity`).
    index_kind: "flat" (exact float32, default) or "fp16" (half the memory, scores within ~1e-3).
    device: where searches run: "auto" (GPU when faiss has one), "cpu" or "gpu".
    backend: where the search vectors live (gallery.backends): "faiss" (in this process, saved under
    index/) or "milvus" (a Milvus collection per namespace at `milvus_uri`: a server such as
    http://milvus:19530, or a milvus-lite file, default <root>/milvus.db). SQLite stays the source of truth.
    """

    def __init__(self, root: str | Path, *, threshold: float = 0.5, similarity: Similarity = "part-cosine",
                 index_kind: IndexKind = "flat", device: Device = "auto",
                 replica_factory: ReplicaFactory | None = None, backend: Backend = "faiss",
                 milvus_uri: str | None = None):
        self.root = Path(root)
        self.threshold = check_threshold(threshold)
        self.similarity: Similarity = check_similarity(similarity)
        self.index_kind: IndexKind = check_choice(index_kind, INDEX_KINDS, "index_kind")
        self.backend: Backend = check_choice(backend, BACKENDS, "backend")
        self._closed = False
        self.store = Store(self.root / DB_FILENAME)
        try:
            index_store = open_index_store(self.backend, self.root, database_id=self.store.instance_id,
                                           kind=self.index_kind, device=device, replica_factory=replica_factory,
                                           milvus_uri=milvus_uri)
        except BaseException:
            self.store.close()
            raise
        self._indexes = NamespaceIndexes(self.store, index_store, kind=self.index_kind, similarity=self.similarity)
        # Load (or rebuild) every namespace's index now, so the first request is not the slow one.
        try:
            for namespace in self.store.namespaces():
                self._indexes.get(namespace)
        except BaseException:  # e.g. the Milvus server is unreachable: release what was opened
            self._indexes.close()  # the vector files of the namespaces already loaded, then the index store
            self.store.close()
            raise

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
        self._indexes.close()  # vector files, then the index store
        self.store.close()

    def flush(self, namespace: str | None = None) -> None:
        """Write the index file of each loaded namespace (or of `namespace`) whose file is stale."""
        self._check_open()
        for state in self._indexes.loaded(namespace):
            with state.lock.gen_rlock():  # saving only reads the index: searches go on meanwhile
                self._indexes.persist(state)

    def index_path(self, namespace: str) -> Path | str:
        """Where the namespace's index is kept: its FAISS file, or "<milvus uri>#<collection alias>"."""
        location = self._indexes.location(check_namespace(namespace))
        return Path(location) if self.backend == "faiss" else location

    # -- queries ----------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        self._check_open()
        return self.store.namespaces()

    def status(self, namespace: str = DEFAULT_NAMESPACE) -> GalleryStatus:
        self._check_open()
        state = self._indexes.fresh(check_namespace(namespace))
        with state.lock.gen_rlock():
            with self.store.read() as conn:
                subjects, sequences = self.store.counts(conn, state.name)
            return GalleryStatus(namespace=state.name, model_id=state.model_id, embedding_shape=state.shape,
                                 subjects=subjects, sequences=sequences, generation=max(state.generation, 0),
                                 index=self._indexes.info(state))

    def list_subjects(self, *, namespace: str = DEFAULT_NAMESPACE, offset: int = 0,
                      limit: int | None = 100) -> list[SubjectSummary]:
        """Subjects ordered by id, `limit` at a time (None = all)."""
        self._check_open()
        namespace = check_namespace(namespace)
        offset, limit = check_page(offset, limit)
        with self.store.read() as conn:
            return self.store.subject_summaries(conn, namespace, offset, limit)

    def get_subject(self, subject_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> SubjectRecord:
        """The subject stored under `subject_id` exactly, else under its NFC form."""
        self._check_open()
        namespace = check_namespace(namespace)
        with self.store.read() as conn:
            stored_id = self._stored_subject_id(conn, namespace, subject_id)
            found = self.store.subject_summaries(conn, namespace, 0, 1, subject_id=stored_id)
            sequences = self.store.sequence_records(conn, namespace, subject_id=stored_id)
        return SubjectRecord(**vars(found[0]), sequences=tuple(sequences))

    def has_subject(self, subject_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Whether the subject is enrolled (a cheap check, e.g. before running a pipeline for nothing)."""
        self._check_open()
        namespace = check_namespace(namespace)
        with self.store.read() as conn:
            return any(self.store.subject_exists(conn, namespace, c) for c in lookup_candidates(subject_id))

    def subject_id_problems(self, namespace: str | None = None) -> list[SubjectIdProblem]:
        """Stored subject ids that break the subject-id rule (written by older versions), with why.
        They stay readable and deletable; new enrollments under them are refused."""
        self._check_open()
        sql, params = "SELECT namespace, subject_id FROM subjects", ()
        if namespace is not None:
            sql, params = sql + " WHERE namespace = ?", (check_namespace(namespace),)
        rows = self.store.connection().execute(sql + " ORDER BY namespace, subject_id", params).fetchall()
        return [SubjectIdProblem(ns, sid, problem) for ns, sid in rows
                if (problem := subject_id_problem(sid)) is not None]

    def _stored_subject_id(self, conn, namespace: str, subject_id: str) -> str:
        for candidate in lookup_candidates(subject_id):
            if self.store.subject_exists(conn, namespace, candidate):
                return candidate
        raise SubjectNotFoundError(subject_id, namespace)

    def get_sequence(self, sequence_id: int, *, namespace: str = DEFAULT_NAMESPACE) -> StoredSequence:
        """A stored sequence with its silhouettes (and depth) decompressed, as model inputs (uint8)."""
        self._check_open()
        namespace = check_namespace(namespace)
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
        namespace = check_namespace(namespace)
        with self.store.read() as conn:
            row = self.store.namespace(conn, namespace)
            if row is None or row.model_id is None or row.embedding_shape is None:
                return np.zeros(0, np.int64), [], np.zeros((0, 0, 0), np.float32)
            ids, subjects = self.store.active_sequence_map(conn, namespace, row.model_id)
            chunks = [e for _, e in self.store.iter_embeddings(conn, namespace, row.model_id)]
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, *row.embedding_shape), np.float32)
        return ids, subjects, embeddings

    def subject_embeddings(self, subject_id: str, *,
                           namespace: str = DEFAULT_NAMESPACE) -> tuple[np.ndarray, np.ndarray]:
        """(sequence ids (K,) ascending, raw embeddings (K, C, P)) of the active model for the subject
        stored under `subject_id` exactly (a SubjectRecord's subject_id): its rows of
        export_embeddings, without reading the namespace's other embeddings. Its sequences without
        an embedding of the active model are left out; an unknown subject, or a namespace without an
        active model, has none."""
        self._check_open()
        namespace = check_namespace(namespace)
        with self.store.read() as conn:
            row = self.store.namespace(conn, namespace)
            if row is None or row.model_id is None or row.embedding_shape is None:
                return np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float32)
            sequence_ids = np.array(self.store.sequence_ids_of(conn, namespace, subject_id), np.int64)
            ids, embeddings = self.store.embeddings_by_id(conn, row.model_id, sequence_ids)
        if not len(ids):
            embeddings = np.zeros((0, *row.embedding_shape), np.float32)
        return ids, embeddings

    def search(self, embeddings: np.ndarray, *, model_id: str, namespace: str = DEFAULT_NAMESPACE,
               top_k: int = 5, threshold: float | None = None) -> list[Identification]:
        """Identify each query: (C, P) or (N, C, P) embeddings made by `model_id` -> N answers.

        Each answer lists up to `top_k` subjects (each once, by its best sequence), best first;
        `answer.subject_id` is None ("unknown") when the best score is below the threshold. An
        empty namespace answers unknown; a namespace of another model raises ModelMismatchError.
        """
        self._check_open()
        namespace = check_namespace(namespace)
        model_id = check_identifier(model_id, "model_id")
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        top_k = check_top_k(top_k)
        queries = embedding_batch(embeddings)
        state = self._indexes.fresh(namespace)
        with state.lock.gen_rlock():
            if state.index is not None and state.index.ntotal > 0:
                if state.model_id != model_id:
                    raise ModelMismatchError(namespace, str(state.model_id), model_id)
                if tuple(queries.shape[1:]) != state.shape:
                    raise InvalidInputError(f"query embeddings are {tuple(queries.shape[1:])}, the gallery's "
                                            f"model makes {state.shape}")
            return state.identify(self._indexes.vectors(queries), top_k, threshold)

    # -- mutations --------------------------------------------------------------------------
    def enroll(self, subject_id: str, sequences: Sequence[SequenceInput], *, model_id: str,
               display_name: str | None = None, metadata: Mapping[str, Any] | None = None,
               namespace: str = DEFAULT_NAMESPACE, if_exists: IfExists = "append",
               audit_context: AuditContext | None = None) -> EnrollResult:
        """Enroll one subject with one or more sequences (+ their embeddings by `model_id`), atomically.

        if_exists: "append" adds the sequences to an existing subject (display_name / metadata
        replace the stored ones when given), "replace" drops its previous sequences first,
        "error" raises SubjectExistsError. The first enrollment of an empty namespace sets its
        model; later ones must use it (ModelMismatchError otherwise). `subject_id` must follow
        gallery.subject_ids (it is stored NFC-normalised); the audit log records the enrollment.
        """
        self._check_open()
        namespace = check_namespace(namespace)
        subject_id = check_new_subject_id(subject_id)
        model_id = check_identifier(model_id, "model_id")
        check_choice(if_exists, IF_EXISTS, "if_exists")
        if display_name is not None:
            display_name = check_display_name(display_name)
        metadata_json = None if metadata is None else json_object(metadata, "metadata")
        prepared = prepare_sequences(sequences)
        shape = (int(prepared[0].embedding.shape[0]), int(prepared[0].embedding.shape[1]))
        vectors = self._indexes.vectors(np.stack([p.embedding for p in prepared]))

        state = self._indexes.get(namespace)
        with state.lock.gen_wlock():
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
                audit.append(conn, namespace, audit_context, audit.ENROLLED, subject_id, created=created,
                             sequence_ids=new_ids, erased_sequence_ids=replaced, model_id=model_id,
                             if_exists=if_exists)
                fault_point("enroll:written")
            fault_point("enroll:committed")
            if replaced:
                self._indexes.forget_file(state)
            try:
                if foreign_change or model_changed or state.index is None:
                    self._indexes.reload(state, persist=False)
                else:
                    state.apply_enrollment(subject_id, new_ids, vectors, replaced, display_name, created)
                    state.generation, state.generation_token = bumped.generation, bumped.generation_token
                    self._indexes.changed(state)
            except Exception:  # committed already: the database is right, the index reloads lazily
                log.exception("index update after enrollment failed; namespace %s will reload", namespace)
                state.invalidate()
        return EnrollResult(namespace=namespace, subject_id=subject_id, sequence_ids=tuple(new_ids),
                            replaced_sequence_ids=tuple(replaced), created=created, generation=bumped.generation)

    def delete_subject(self, subject_id: str, *, namespace: str = DEFAULT_NAMESPACE,
                       audit_context: AuditContext | None = None,
                       audit_details: Mapping[str, Any] | None = None) -> int:
        """Erase a subject: its sequences (aligned silhouettes, depth), their embeddings and index
        vectors; returns how many sequences went. The audit entry lists the erased sequence ids, plus
        `audit_details` (what the caller erased elsewhere beforehand: counts, ids, never biometric data).
        `subject_id` is matched as get_subject matches it. Raises SubjectNotFoundError."""
        self._check_open()
        namespace = check_namespace(namespace)
        lookup_candidates(subject_id)  # a malformed id is invalid input, not "not found"
        state = self._indexes.get(namespace)
        with state.lock.gen_wlock():
            with self.store.write() as conn:
                subject_id = self._stored_subject_id(conn, namespace, subject_id)
                row = self.store.namespace(conn, namespace)
                sequence_ids = self.store.sequence_ids_of(conn, namespace, subject_id)
                self.store.delete_subject(conn, namespace, subject_id)
                foreign_change = row is None or row.generation != state.generation
                bumped = self.store.bump_generation(conn, namespace)
                audit.append(conn, namespace, audit_context, audit.DELETED, subject_id, **dict(audit_details or {}),
                             erased_sequence_ids=sequence_ids,
                             erased=["aligned sequences", "embeddings", "index vectors", "subject record"])
                fault_point("delete:written")
            self._indexes.forget_file(state)
            try:
                if foreign_change or state.index is None:
                    self._indexes.reload(state, persist=False)
                else:
                    state.apply_deletion(subject_id, sequence_ids)
                    state.generation, state.generation_token = bumped.generation, bumped.generation_token
                    self._indexes.changed(state)
            except Exception:
                log.exception("index update after deletion failed; namespace %s will reload", namespace)
                state.invalidate()
        # Fold the WAL (whose old frames may still hold the deleted data) into the database file,
        # where secure_delete has zeroed the freed pages. Best effort: busy readers can defer it.
        self.store.checkpoint()
        return len(sequence_ids)

    def reembed(self, embedder: SequenceEmbedder, *, namespace: str = DEFAULT_NAMESPACE, batch_size: int = 16,
                progress: Progress | None = None, audit_context: AuditContext | None = None) -> ReembedReport:
        """Re-compute every stored sequence's embedding with `embedder` (its `model_id`), then make
        that model the namespace's active one; see gallery.reembedding. `embedder.embed` gets up to
        `batch_size` sequences per call; progress(done, total) is called after each batch. The
        switch of models is audited."""
        self._check_open()
        return reembed(self._indexes, embedder, check_namespace(namespace), batch_size=batch_size,
                       progress=progress, audit_context=audit_context)

    def check(self, namespace: str | None = None) -> list[str]:
        """Problems found when checking that store, index and audit log agree (gallery.consistency),
        for `namespace` or every one; empty when all is well."""
        self._check_open()
        namespaces = self.namespaces() if namespace is None else [check_namespace(namespace)]
        return consistency.check(self.store, self._indexes, namespaces)

    # -- audit log ----------------------------------------------------------------------------
    def audit_log(self, *, namespace: str = DEFAULT_NAMESPACE, action: str | None = None,
                  subject_id: str | None = None, actor: str | None = None, request_id: str | None = None,
                  since: float | None = None, until: float | None = None, offset: int = 0,
                  limit: int | None = 100) -> tuple[list[AuditEntry], int]:
        """The namespace's audit entries matching every filter given (since/until: unix seconds),
        oldest first, `limit` at a time, and how many match in all."""
        self._check_open()
        namespace = check_namespace(namespace)
        offset, limit = check_page(offset, limit)
        with self.store.read() as conn:
            return audit.query(conn, namespace, action=action, subject_id=subject_id, actor=actor,
                               request_id=request_id, since=since, until=until, offset=offset, limit=limit)

    def append_audit(self, action: str, *, namespace: str = DEFAULT_NAMESPACE, subject_id: str | None = None,
                     details: Mapping[str, Any] | None = None, audit_context: AuditContext | None = None) -> int:
        """Append an entry of the caller's own `action` (e.g. "camera.updated") to the namespace's
        audit log, committed at once; its id. For changes the caller keeps outside the gallery: the
        gallery gives the entry no meaning and cannot make it atomic with that change. The gallery's own
        actions (gallery.audit.ACTIONS) are refused: they are written only with their change."""
        self._check_open()
        namespace = check_namespace(namespace)
        action = check_identifier(action, "action")
        if action in audit.ACTIONS:
            raise InvalidInputError(f"action {action!r} is the gallery's own: it is written only with its change")
        if subject_id is not None:
            subject_id = check_identifier(subject_id, "subject_id")
        details = dict(details or {})
        try:
            if not all(isinstance(key, str) for key in details):
                raise TypeError("keys must be strings")
            json.dumps(details)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"audit details must be a JSON object: {error}") from error
        with self.store.write() as conn:
            return audit.append(conn, namespace, audit_context, action, subject_id, **details)

    # -- API keys -----------------------------------------------------------------------------
    def api_keys(self, namespace: str | None = None) -> list[ApiKeyRecord]:
        """Every stored key (or those of `namespace`), by name; hashes only, never secrets."""
        self._check_open()
        with self.store.read() as conn:
            return api_keys.all_keys(conn, None if namespace is None else check_namespace(namespace))

    def api_keys_version(self) -> int:
        """A counter every key change bumps (cheap: servers poll it to reload their key ring)."""
        self._check_open()
        return api_keys.version(self.store.connection())

    def add_api_key(self, record: ApiKeyRecord, *, audit_context: AuditContext | None = None) -> ApiKeyRecord:
        """Store a key (audited); ApiKeyExistsError when its name or secret is taken."""
        self._check_open()
        with self.store.write() as conn:
            return api_keys.add(conn, record, audit_context)

    def remove_api_key(self, name: str, *, namespace: str, audit_context: AuditContext | None = None,
                       allowed_sources: tuple[str, ...] = ("api",)) -> ApiKeyRecord:
        """Remove the key `name` of `namespace` (audited); see gallery.api_keys.remove."""
        self._check_open()
        with self.store.write() as conn:
            return api_keys.remove(conn, name, check_namespace(namespace), audit_context, allowed_sources)

    def sync_configured_keys(self, records: Sequence[ApiKeyRecord], *,
                             audit_context: AuditContext | None = None) -> list[str]:
        """Make the operator's keys (file/env) exactly `records`, auditing each change; see
        gallery.api_keys.sync."""
        self._check_open()
        with self.store.write() as conn:
            return api_keys.sync(conn, records, audit_context)

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryClosedError()

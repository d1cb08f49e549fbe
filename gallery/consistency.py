"""Consistency check of a gallery: store, index and audit log agree (`Gallery.check`, `gaitid
check-gallery`, the kill -9 soak in bench/soak_kill.py). Returns the problems found, one line each.

- the database: SQLite's integrity and foreign-key checks;
- the store: no subject without sequences, every sequence embedded by its namespace's active model
  (a half-written enrollment or a half-switched re-embedding would break one of these);
- the index: it holds exactly the active model's sequences, each for its subject; an index file
  that was unreadable (rather than merely stale, which a crash legitimately leaves) is a problem;
- a compact index's vector file (gallery.vector_file): its rows hold exactly the active model's
  sequences, each the search vector of its stored embedding (bit for bit: re-ranked scores are then
  exhaustive search's); a vector file that was unreadable when loaded is a problem;
- the audit log: replaying its enrollments and erasures gives exactly the stored sequences, subject
  by subject (sequences stored before the audit log existed -- galleries upgraded from schema 1 --
  are left out: `meta.audited_from_sequence`).
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from gallery.audit import DELETED, ENROLLED
from gallery.compact_index import CompactIndex
from gallery.namespace_indexes import NamespaceIndexes
from gallery.store import Store
from gallery.vector_file import VectorFile


def check(store: Store, indexes: NamespaceIndexes, namespaces: list[str]) -> list[str]:
    problems = _database(store.connection())
    for namespace in namespaces:
        problems += [f"{namespace}: {p}" for p in _namespace(store, indexes, namespace)]
    return problems


def _database(conn: sqlite3.Connection) -> list[str]:
    problems = []
    integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        problems.append(f"database integrity: {'; '.join(integrity[:5])}")
    orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
    if orphans:
        problems.append(f"{len(orphans)} rows break foreign keys, e.g. {orphans[:3]}")
    return problems


def _namespace(store: Store, indexes: NamespaceIndexes, namespace: str) -> list[str]:
    problems = []
    with store.read() as conn:
        row = store.namespace(conn, namespace)
        stored = dict(conn.execute("SELECT id, subject_id FROM sequences WHERE namespace = ?", (namespace,)))
        empty = [r[0] for r in conn.execute(
            "SELECT s.subject_id FROM subjects s WHERE s.namespace = ? AND NOT EXISTS (SELECT 1 FROM sequences q "
            "WHERE q.namespace = s.namespace AND q.subject_id = s.subject_id)", (namespace,))]
        model_id = None if row is None else row.model_id
        embedded = {int(r[0]) for r in conn.execute(
            "SELECT e.sequence_id FROM embeddings e JOIN sequences q ON q.id = e.sequence_id "
            "WHERE q.namespace = ? AND e.model_id = ?", (namespace, model_id))}
        audit_rows = conn.execute("SELECT action, subject_id, details FROM audit_log WHERE namespace = ? ORDER BY id",
                                  (namespace,)).fetchall()
        first_audited = conn.execute("SELECT value FROM meta WHERE key = 'audited_from_sequence'").fetchone()
    if empty:
        problems.append(f"subjects without sequences: {empty[:5]}")
    unembedded = sorted(set(stored) - embedded)
    if unembedded:
        problems.append(f"sequences without an embedding of the active model {model_id!r}: {unembedded[:5]}")

    state = indexes.fresh(namespace)
    active = np.array(sorted(embedded), dtype=np.int64)
    with state.lock.gen_rlock():  # one view of the index and its vector file
        index_ids = np.sort(state.index.ids()) if state.index is not None else np.zeros(0, np.int64)
        index_subjects = dict(state.subject_of)
        reason = state.rebuild_reason
        vector_file_problems = _vector_file(store, indexes, state, active)
    if not np.array_equal(index_ids, active):
        problems.append(f"the index holds {len(index_ids)} vectors, the store {len(active)} active sequences")
    wrong = [i for i in active.tolist() if index_subjects.get(i) != stored.get(i)]
    if wrong:
        problems.append(f"the index gives sequences {wrong[:5]} to the wrong subjects")
    if reason is not None and reason.startswith("corrupt"):
        problems.append(f"the index file was unreadable: {reason}")
    problems += vector_file_problems

    audited_from = int(first_audited[0]) if first_audited else 0
    replayed = _replay(audit_rows)
    expected = {i: s for i, s in stored.items() if i >= audited_from}
    if replayed != expected:
        missing = sorted(set(expected) - set(replayed))[:5]
        extra = sorted(set(replayed) - set(expected))[:5]
        moved = sorted(i for i in set(expected) & set(replayed) if expected[i] != replayed[i])[:5]
        problems.append(f"the audit log disagrees with the store: stored but never audited {missing}, audited but "
                        f"not stored {extra}, other subject {moved}")
    return problems


def _vector_file(store: Store, indexes: NamespaceIndexes, state, active: np.ndarray) -> list[str]:
    """A compact index's vector file against the store (caller holds the namespace's read lock)."""
    index = state.index
    if not isinstance(index, CompactIndex):  # FAISS only: open_index_store refuses compact for Milvus
        return []
    rows = index.rows
    if not isinstance(rows, VectorFile):
        return ["the compact index has no vector file to re-rank with"]
    problems = []
    if rows.rebuild_reason is not None and rows.rebuild_reason.startswith("corrupt"):
        problems.append(f"the vector file was unreadable: {rows.rebuild_reason}")
    file_ids = rows.file_ids()
    if not np.array_equal(file_ids, active):
        problems.append(f"the vector file holds {len(file_ids)} vectors, the store {len(active)} active sequences")
    differing, missing = [], []
    with store.read() as conn:
        for chunk_ids, embeddings in store.iter_embeddings(conn, state.name, str(state.model_id)):
            found, vectors = rows.fetch(chunk_ids)
            missing += sorted(set(chunk_ids.tolist()) - set(found.tolist()))
            expected = indexes.vectors(embeddings)[np.isin(chunk_ids, found)]
            differing += found[~(vectors == expected).all(axis=1)].tolist()
    if missing:
        problems.append(f"the vector file lacks sequences {missing[:5]}")
    if differing:
        problems.append(f"the vector file's vectors of sequences {differing[:5]} differ from their stored embeddings")
    return problems


def _replay(rows: list[tuple[str, str | None, str]]) -> dict[int, str]:
    """Sequence id -> subject, as the audit log's enrollments and erasures leave them."""
    live: dict[int, str] = {}
    for action, subject_id, details_json in rows:
        if action not in (ENROLLED, DELETED):
            continue
        details = json.loads(details_json)
        for erased in details.get("erased_sequence_ids", []):
            live.pop(int(erased), None)
        for added in details.get("sequence_ids", []) if action == ENROLLED else []:
            live[int(added)] = str(subject_id)
    return live

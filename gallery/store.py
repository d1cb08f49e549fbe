"""SQLite metadata store: the gallery's source of truth.

One database file holds every namespace (each row carries its namespace). It keeps subjects,
their enrolled sequences (silhouettes and optional depth, compressed, so the gallery can be
re-embedded with a new model without the original footage), the raw (C, P) embeddings each
model made of them, timestamps, and per namespace the active model and a generation counter that
every change to the searchable vectors bumps inside the same transaction. The FAISS index records
the generation it reflects; a mismatch means "rebuild from here". Beside them: the audit log
(gallery.audit) and the API keys (gallery.api_keys), written in the same transactions as the changes
they record.

Schema versions: 1 (first release), 2 (+ audit_log, api_keys). A version-1 database is upgraded in
place when opened (the new tables are added; nothing else changes); code of version 1 refuses a
version-2 database, so an old binary can never change data without auditing it.

Durability: WAL journal, synchronous=FULL (a committed enrollment survives power loss), foreign
keys on, secure_delete on (a deleted subject's footage and embeddings are overwritten, not left in
free pages of the file).

Threads: each thread gets its own connection (sqlite3 connections are not shared across threads);
all transactions are explicit (`isolation_level=None` + BEGIN/COMMIT).
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gaitid.contract import quantise_depth
from gallery import api_keys, audit
from gallery.metadata import stored_metadata
from gallery.types import SequenceRecord, SubjectSummary

SCHEMA_VERSION = 2
UPGRADABLE_FROM = (1,)  # versions whose databases this code upgrades when it opens them

# Test seam for crash-safety tests: called with a point name ("enroll:written" inside the
# enrollment transaction before COMMIT, "enroll:committed" right after it, "delete:written",
# "reembed:activating"). Production code never sets it.
FAULT_HOOK: Callable[[str], None] | None = None


def fault_point(name: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(name)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    model_id TEXT,                       -- model whose embeddings are searched (active model)
    channels INTEGER,                    -- C of that model's embeddings
    parts INTEGER,                       -- P of that model's embeddings
    generation INTEGER NOT NULL DEFAULT 0,
    generation_token TEXT NOT NULL DEFAULT '',  -- random per bump: copies of one database that
                                                -- diverged never share (generation, token)
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (
    namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
    subject_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, subject_id)
);
CREATE TABLE IF NOT EXISTS sequences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused after deletes
    namespace TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    frames INTEGER NOT NULL,
    silhouettes BLOB NOT NULL,             -- zlib(np.save) of (T, 64, 44) uint8
    depth BLOB,                            -- zlib(np.save) of (T, 64, 44) uint8, or NULL (before
                                           -- contract v2: float32 in [0, 1], quantised when read)
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    FOREIGN KEY (namespace, subject_id) REFERENCES subjects(namespace, subject_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS sequences_by_subject ON sequences(namespace, subject_id);
CREATE TABLE IF NOT EXISTS embeddings (
    sequence_id INTEGER NOT NULL REFERENCES sequences(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    channels INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    vector BLOB NOT NULL,                  -- raw float32 (C, P), as the model produced it
    created_at REAL NOT NULL,
    UNIQUE (sequence_id, model_id)
);
CREATE INDEX IF NOT EXISTS embeddings_by_model ON embeddings(model_id, sequence_id);
""" + audit.SCHEMA + api_keys.SCHEMA


def encode_array(array: np.ndarray) -> bytes:
    """Lossless, self-describing (dtype + shape) compressed bytes. Binary silhouettes shrink ~20x."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 6)


def decode_array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)


def decode_depth(blob: bytes) -> np.ndarray:
    """A stored depth sequence as the contract's uint8. Galleries written before contract v2 hold
    float32 disparities in [0, 1]: they are quantised exactly as a v2 pipeline would have stored them."""
    depth = decode_array(blob)
    return quantise_depth(depth) if np.issubdtype(depth.dtype, np.floating) else depth


def _to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass(frozen=True)
class NamespaceRow:
    name: str
    model_id: str | None
    channels: int | None
    parts: int | None
    generation: int
    generation_token: str

    @property
    def embedding_shape(self) -> tuple[int, int] | None:
        return None if self.channels is None or self.parts is None else (self.channels, self.parts)


@dataclass(frozen=True)
class NewSequence:
    """A validated sequence ready to insert (arrays already compressed)."""

    frames: int
    silhouettes_blob: bytes
    depth_blob: bytes | None
    metadata_json: str
    embedding: np.ndarray  # float32 (C, P)


class Store:
    """Thread-safe access to the gallery database. Methods whose first argument is `conn` must run
    inside a transaction opened with `read()` or `write()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._create_schema()
        self.instance_id = self._instance_id()

    # -- connections and transactions -------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so a transaction
        never fails half-way for lack of it; any exception rolls everything back."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: all its SELECTs see the same snapshot (WAL)."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it. Best effort: a TRUNCATE checkpoint waits
        for readers, so it gets a short busy timeout instead of the usual 30 s."""
        conn = self.connection()
        conn.execute("PRAGMA busy_timeout = 1000")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute("PRAGMA busy_timeout = 30000")

    def _create_schema(self) -> None:
        conn = self.connection()
        conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS), runs in autocommit mode
        with self.write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("INSERT INTO meta VALUES ('instance_id', ?)", (uuid.uuid4().hex,))
            elif int(row[0]) in UPGRADABLE_FROM:  # the tables it lacked were just created
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                # Sequences stored so far have no audit entries (gallery.consistency leaves them out).
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('audited_from_sequence', "
                             "(SELECT COALESCE(MAX(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'sequences'))")
            elif int(row[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has gallery schema {row[0]}, this code reads {SCHEMA_VERSION}")

    def _instance_id(self) -> str:
        """Random id of this database, recorded in index files: an index made for another database
        (a restored backup, a copied folder) never passes for this one's."""
        row = self.connection().execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()
        return str(row[0])

    # -- namespaces ---------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        rows = self.connection().execute("SELECT name FROM namespaces ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def namespace(self, conn: sqlite3.Connection, name: str) -> NamespaceRow | None:
        row = conn.execute(
            "SELECT name, model_id, channels, parts, generation, generation_token FROM namespaces WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else NamespaceRow(*row)

    def generation(self, name: str) -> int:
        """Cheap freshness probe (autocommit read)."""
        row = self.connection().execute("SELECT generation FROM namespaces WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def ensure_namespace(self, conn: sqlite3.Connection, name: str) -> NamespaceRow:
        now = time.time()
        conn.execute(
            "INSERT OR IGNORE INTO namespaces(name, generation, created_at, updated_at) VALUES (?, 0, ?, ?)",
            (name, now, now),
        )
        row = self.namespace(conn, name)
        assert row is not None
        return row

    def set_active_model(self, conn: sqlite3.Connection, name: str, model_id: str,
                         shape: tuple[int, int] | None) -> None:
        """Make `model_id` the namespace's searched model; shape None while it has no embeddings."""
        channels, parts = shape if shape is not None else (None, None)
        conn.execute(
            "UPDATE namespaces SET model_id = ?, channels = ?, parts = ?, updated_at = ? WHERE name = ?",
            (model_id, channels, parts, time.time(), name),
        )

    def bump_generation(self, conn: sqlite3.Connection, name: str) -> NamespaceRow:
        """Mark a change of the namespace's searchable vectors; returns the updated row."""
        conn.execute(
            "UPDATE namespaces SET generation = generation + 1, generation_token = ?, updated_at = ? WHERE name = ?",
            (uuid.uuid4().hex, time.time(), name),
        )
        row = self.namespace(conn, name)
        assert row is not None
        return row

    def counts(self, conn: sqlite3.Connection, name: str) -> tuple[int, int]:
        subjects = conn.execute("SELECT COUNT(*) FROM subjects WHERE namespace = ?", (name,)).fetchone()[0]
        sequences = conn.execute("SELECT COUNT(*) FROM sequences WHERE namespace = ?", (name,)).fetchone()[0]
        return int(subjects), int(sequences)

    # -- subjects -----------------------------------------------------------------------------
    def subject_exists(self, conn: sqlite3.Connection, name: str, subject_id: str) -> bool:
        return conn.execute(
            "SELECT 1 FROM subjects WHERE namespace = ? AND subject_id = ?", (name, subject_id)
        ).fetchone() is not None

    def upsert_subject(self, conn: sqlite3.Connection, name: str, subject_id: str,
                       display_name: str | None, metadata_json: str | None) -> bool:
        """Create the subject or update the given fields; True when it was created."""
        now = time.time()
        if not self.subject_exists(conn, name, subject_id):
            conn.execute(
                "INSERT INTO subjects(namespace, subject_id, display_name, metadata, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, subject_id, display_name if display_name is not None else subject_id,
                 metadata_json if metadata_json is not None else "{}", now, now),
            )
            return True
        conn.execute(
            "UPDATE subjects SET display_name = COALESCE(?, display_name), metadata = COALESCE(?, metadata), "
            "updated_at = ? WHERE namespace = ? AND subject_id = ?",
            (display_name, metadata_json, now, name, subject_id),
        )
        return False

    def delete_subject(self, conn: sqlite3.Connection, name: str, subject_id: str) -> None:
        # Embeddings and sequences go with it (ON DELETE CASCADE).
        conn.execute("DELETE FROM subjects WHERE namespace = ? AND subject_id = ?", (name, subject_id))

    def subject_summaries(self, conn: sqlite3.Connection, name: str, offset: int, limit: int | None,
                          subject_id: str | None = None) -> list[SubjectSummary]:
        sql = (
            "SELECT s.namespace, s.subject_id, s.display_name, s.metadata, "
            "(SELECT COUNT(*) FROM sequences q WHERE q.namespace = s.namespace AND q.subject_id = s.subject_id), "
            "s.created_at, s.updated_at FROM subjects s WHERE s.namespace = ?"
        )
        params: list[Any] = [name]
        if subject_id is not None:
            sql += " AND s.subject_id = ?"
            params.append(subject_id)
        sql += " ORDER BY s.subject_id LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        return [
            SubjectSummary(namespace=r[0], subject_id=r[1], display_name=r[2], metadata=stored_metadata(r[3]),
                           sequence_count=int(r[4]), created_at=_to_datetime(r[5]), updated_at=_to_datetime(r[6]))
            for r in conn.execute(sql, params)
        ]

    def display_names(self, conn: sqlite3.Connection, name: str) -> dict[str, str]:
        return dict(conn.execute("SELECT subject_id, display_name FROM subjects WHERE namespace = ?", (name,)))

    # -- sequences and embeddings ------------------------------------------------------------
    def insert_sequences(self, conn: sqlite3.Connection, name: str, subject_id: str, model_id: str,
                         sequences: list[NewSequence]) -> list[int]:
        now = time.time()
        ids = []
        for seq in sequences:
            cursor = conn.execute(
                "INSERT INTO sequences(namespace, subject_id, frames, silhouettes, depth, metadata, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, subject_id, seq.frames, seq.silhouettes_blob, seq.depth_blob, seq.metadata_json, now),
            )
            sequence_id = int(cursor.lastrowid)
            self.insert_embedding(conn, sequence_id, model_id, seq.embedding, now)
            ids.append(sequence_id)
        return ids

    def insert_embedding(self, conn: sqlite3.Connection, sequence_id: int, model_id: str,
                         embedding: np.ndarray, now: float | None = None) -> None:
        vector = np.ascontiguousarray(embedding, dtype=np.float32)
        conn.execute(
            "INSERT OR REPLACE INTO embeddings(sequence_id, model_id, channels, parts, vector, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (sequence_id, model_id, vector.shape[0], vector.shape[1], vector.tobytes(),
             time.time() if now is None else now),
        )

    def sequence_ids_of(self, conn: sqlite3.Connection, name: str, subject_id: str) -> list[int]:
        rows = conn.execute(
            "SELECT id FROM sequences WHERE namespace = ? AND subject_id = ? ORDER BY id", (name, subject_id)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def sequence_records(self, conn: sqlite3.Connection, name: str, subject_id: str | None = None,
                         sequence_id: int | None = None) -> list[SequenceRecord]:
        sql = (
            "SELECT q.id, q.subject_id, q.frames, q.depth IS NOT NULL, q.metadata, q.created_at, "
            "(SELECT group_concat(e.model_id, char(31)) FROM embeddings e WHERE e.sequence_id = q.id) "
            "FROM sequences q WHERE q.namespace = ?"
        )
        params: list[Any] = [name]
        if subject_id is not None:
            sql += " AND q.subject_id = ?"
            params.append(subject_id)
        if sequence_id is not None:
            sql += " AND q.id = ?"
            params.append(sequence_id)
        sql += " ORDER BY q.id"
        return [
            SequenceRecord(sequence_id=int(r[0]), subject_id=r[1], frames=int(r[2]), has_depth=bool(r[3]),
                           model_ids=tuple(sorted(r[6].split("\x1f"))) if r[6] else (),
                           metadata=stored_metadata(r[4]), created_at=_to_datetime(r[5]))
            for r in conn.execute(sql, params)
        ]

    def sequence_arrays(self, conn: sqlite3.Connection, sequence_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        row = conn.execute("SELECT silhouettes, depth FROM sequences WHERE id = ?", (sequence_id,)).fetchone()
        if row is None:
            raise LookupError(sequence_id)
        return decode_array(row[0]), None if row[1] is None else decode_depth(row[1])

    def active_sequence_map(self, conn: sqlite3.Connection, name: str, model_id: str) -> tuple[np.ndarray, list[str]]:
        """Ids (ascending) of the namespace's sequences embedded by `model_id`, and their subjects."""
        rows = conn.execute(
            "SELECT q.id, q.subject_id FROM sequences q JOIN embeddings e "
            "ON e.sequence_id = q.id AND e.model_id = ? WHERE q.namespace = ? ORDER BY q.id",
            (model_id, name),
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def iter_embeddings(self, conn: sqlite3.Connection, name: str, model_id: str,
                        chunk: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids (n,), embeddings (n, C, P)) chunks of the namespace's embeddings by `model_id`."""
        cursor = conn.execute(
            "SELECT q.id, e.channels, e.parts, e.vector FROM sequences q JOIN embeddings e "
            "ON e.sequence_id = q.id AND e.model_id = ? WHERE q.namespace = ? ORDER BY q.id",
            (model_id, name),
        )
        while rows := cursor.fetchmany(chunk):
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.stack([np.frombuffer(r[3], dtype=np.float32).reshape(r[1], r[2]) for r in rows])
            yield ids, vectors

    def embeddings_by_id(self, conn: sqlite3.Connection, model_id: str,
                         ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found (ascending), embeddings (n, C, P)) of `model_id` for the sequence ids asked for
        (a compact index's shortlist, re-ranked with these); deleted ids are simply absent."""
        rows = conn.execute(
            "SELECT sequence_id, channels, parts, vector FROM embeddings WHERE model_id = ? AND sequence_id IN "
            "(SELECT value FROM json_each(?)) ORDER BY sequence_id",
            (model_id, json.dumps(np.asarray(ids, np.int64).tolist())),
        ).fetchall()
        found = np.array([r[0] for r in rows], dtype=np.int64)
        if not rows:
            return found, np.zeros((0, 0, 0), np.float32)
        return found, np.stack([np.frombuffer(r[3], dtype=np.float32).reshape(r[1], r[2]) for r in rows])

    def sequences_missing(self, conn: sqlite3.Connection, name: str, model_id: str, limit: int) -> list[int]:
        rows = conn.execute(
            "SELECT q.id FROM sequences q WHERE q.namespace = ? AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.sequence_id = q.id AND e.model_id = ?) ORDER BY q.id LIMIT ?",
            (name, model_id, limit),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def drop_other_embeddings(self, conn: sqlite3.Connection, name: str, keep_model_id: str) -> None:
        conn.execute(
            "DELETE FROM embeddings WHERE model_id != ? AND sequence_id IN "
            "(SELECT id FROM sequences WHERE namespace = ?)",
            (keep_model_id, name),
        )

    def sequence_exists(self, conn: sqlite3.Connection, sequence_id: int) -> bool:
        return conn.execute("SELECT 1 FROM sequences WHERE id = ?", (sequence_id,)).fetchone() is not None

    def delete_sequences_of(self, conn: sqlite3.Connection, name: str, subject_id: str) -> None:
        conn.execute("DELETE FROM sequences WHERE namespace = ? AND subject_id = ?", (name, subject_id))

    def count_missing(self, conn: sqlite3.Connection, name: str, model_id: str) -> int:
        return int(conn.execute(
            "SELECT COUNT(*) FROM sequences q WHERE q.namespace = ? AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.sequence_id = q.id AND e.model_id = ?)",
            (name, model_id),
        ).fetchone()[0])

    def embedding_shapes(self, conn: sqlite3.Connection, name: str, model_id: str) -> list[tuple[int, int]]:
        rows = conn.execute(
            "SELECT DISTINCT e.channels, e.parts FROM embeddings e JOIN sequences q ON q.id = e.sequence_id "
            "WHERE q.namespace = ? AND e.model_id = ?",
            (name, model_id),
        ).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows]

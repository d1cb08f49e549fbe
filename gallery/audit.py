"""The audit log: every change to a namespace's biometric data or to its API keys, appended to the
`audit_log` table of the gallery database inside the very transaction that makes the change, so the
log and the data can never disagree (a crash keeps both or neither).

Each entry says who (the API key's *name*, never the key; "local" or "cli:USER" outside the HTTP
service), what (`action`, the subject, details such as the sequence ids written or erased), when
(UTC) and under which HTTP request id. Entries are never updated or deleted by the gallery: they
outlive the subjects they describe (an erasure is itself recorded). They hold no biometric data:
ids and counts only.

Actions: ENROLLED, DELETED (the erasure of a subject: its sequences, embeddings and index vectors),
REEMBEDDED (a namespace switched models), KEY_ADDED, KEY_REMOVED, KEY_CHANGED. Those are the gallery's
own, written only with their change. A caller may append entries of its own actions for changes it
keeps outside the gallery (`Gallery.append_audit`: the service's camera settings, say): the gallery
records them as given and gives them no meaning; it cannot make them atomic with a change it does not
hold, so the caller says in which order it writes the two.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ENROLLED = "subject.enrolled"
DELETED = "subject.deleted"
REEMBEDDED = "gallery.reembedded"
KEY_ADDED = "key.added"
KEY_REMOVED = "key.removed"
KEY_CHANGED = "key.changed"
ACTIONS = (ENROLLED, DELETED, REEMBEDDED, KEY_ADDED, KEY_REMOVED, KEY_CHANGED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- append order; never reused
    namespace TEXT NOT NULL,               -- no foreign key: entries outlive what they describe
    at REAL NOT NULL,                      -- unix seconds
    actor TEXT NOT NULL,                   -- API key name, "local", "cli:USER", "operator"
    action TEXT NOT NULL,
    subject_id TEXT,
    request_id TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_by_namespace ON audit_log(namespace, id);
"""


@dataclass(frozen=True)
class AuditContext:
    """Who asks for a change, and the HTTP request that carries it (None outside HTTP)."""

    actor: str = "local"
    request_id: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    entry_id: int
    namespace: str
    at: datetime
    actor: str
    action: str
    subject_id: str | None
    request_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


def append(conn: sqlite3.Connection, namespace: str, context: AuditContext | None, action: str,
           subject_id: str | None = None, **details: Any) -> int:
    """Add one entry; the caller's write transaction commits it together with the change. Its id."""
    context = context or AuditContext()
    cursor = conn.execute(
        "INSERT INTO audit_log(namespace, at, actor, action, subject_id, request_id, details) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (namespace, time.time(), context.actor, action, subject_id, context.request_id,
         json.dumps(details, sort_keys=True)),
    )
    return int(cursor.lastrowid)


def query(conn: sqlite3.Connection, namespace: str, *, action: str | None = None, subject_id: str | None = None,
          actor: str | None = None, request_id: str | None = None, since: float | None = None,
          until: float | None = None, offset: int = 0, limit: int | None = 100) -> tuple[list[AuditEntry], int]:
    """Entries of `namespace` matching every filter given, oldest first, and how many match in all."""
    where, params = ["namespace = ?"], [namespace]
    for column, value in (("action", action), ("subject_id", subject_id), ("actor", actor),
                          ("request_id", request_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    if until is not None:
        where.append("at < ?")
        params.append(until)
    condition = " AND ".join(where)
    total = int(conn.execute(f"SELECT COUNT(*) FROM audit_log WHERE {condition}", params).fetchone()[0])
    rows = conn.execute(
        f"SELECT id, namespace, at, actor, action, subject_id, request_id, details FROM audit_log "
        f"WHERE {condition} ORDER BY id LIMIT ? OFFSET ?", [*params, -1 if limit is None else limit, offset],
    ).fetchall()
    entries = [AuditEntry(entry_id=int(r[0]), namespace=r[1], at=datetime.fromtimestamp(r[2], tz=UTC),
                          actor=r[3], action=r[4], subject_id=r[5], request_id=r[6], details=json.loads(r[7]))
               for r in rows]
    return entries, total

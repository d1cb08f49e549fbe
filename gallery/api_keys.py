"""API keys as the gallery database keeps them: a name, the namespace (gallery) the key opens, a role,
and the sha256 of the secret -- never the secret itself.

Roles, each including the ones before it: `read` (identify, list and read subjects), `enroll`
(+ enroll), `admin` (+ delete subjects, re-embed, manage keys, read the audit log).

Sources: `api` keys are created and removed over HTTP by an admin of their namespace; `file` and
`env` keys are the operator's (keys file, GAITID_API_KEYS), written into the table at each start-up
by `sync` so that every change of them is audited too. Every change bumps `meta.keys_version`, which
servers poll to reload their key ring.

The functions run inside the caller's write transaction (gallery.gallery) and append the audit entry
there.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gallery.audit import KEY_ADDED, KEY_CHANGED, KEY_REMOVED, AuditContext, append
from gallery.errors import ApiKeyExistsError, ApiKeyNotFoundError, ApiKeyNotRemovableError, InvalidInputError

Role = Literal["read", "enroll", "admin"]
ROLES: tuple[Role, ...] = ("read", "enroll", "admin")
Source = Literal["api", "file", "env"]
SOURCES: tuple[Source, ...] = ("api", "file", "env")
OPERATOR_SOURCES: tuple[Source, ...] = ("file", "env")

KEY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,   -- hex sha256 of the secret
    source TEXT NOT NULL,              -- api | file | env
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);
"""


def hash_secret(secret: str | bytes) -> str:
    """Hex sha256 of a key's secret: what is stored and compared (keys are long random strings, so a
    fast hash suffices; `gaitid keys new` makes them)."""
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    """True when `role` includes `needed` (read < enroll < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ApiKeyRecord:
    name: str
    namespace: str
    role: Role
    key_sha256: str
    source: Source = "api"
    created_at: float = 0.0
    created_by: str = ""

    def public(self) -> dict[str, str]:
        """What the audit log keeps of a key: never its hash."""
        return {"key_name": self.name, "role": self.role, "source": self.source}


def check_record(record: ApiKeyRecord) -> ApiKeyRecord:
    from gallery.validation import check_namespace  # validation imports the store, which imports this

    if not isinstance(record.name, str) or not KEY_NAME_PATTERN.match(record.name):
        raise InvalidInputError(f"key name must be 1-64 chars of [A-Za-z0-9_.@:-] starting with a letter or digit, "
                                f"got {record.name!r}")
    if record.role not in ROLES:
        raise InvalidInputError(f"role must be {' | '.join(ROLES)}, got {record.role!r}")
    if record.source not in SOURCES:
        raise InvalidInputError(f"source must be {' | '.join(SOURCES)}, got {record.source!r}")
    if not isinstance(record.key_sha256, str) or not SHA256_PATTERN.match(record.key_sha256):
        raise InvalidInputError(f"key {record.name!r}: sha256 must be 64 lowercase hex digits")
    check_namespace(record.namespace)
    return record


def bump_version(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO meta(key, value) VALUES ('keys_version', '1') ON CONFLICT(key) "
                 "DO UPDATE SET value = CAST(value AS INTEGER) + 1")


def version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'keys_version'").fetchone()
    return 0 if row is None else int(row[0])


def all_keys(conn: sqlite3.Connection, namespace: str | None = None) -> list[ApiKeyRecord]:
    sql = "SELECT name, namespace, role, key_sha256, source, created_at, created_by FROM api_keys"
    params: tuple = ()
    if namespace is not None:
        sql += " WHERE namespace = ?"
        params = (namespace,)
    return [ApiKeyRecord(*row) for row in conn.execute(sql + " ORDER BY name", params)]


def add(conn: sqlite3.Connection, record: ApiKeyRecord, context: AuditContext | None) -> ApiKeyRecord:
    record = check_record(record)
    if conn.execute("SELECT 1 FROM api_keys WHERE name = ?", (record.name,)).fetchone():
        raise ApiKeyExistsError(record.name)
    if conn.execute("SELECT 1 FROM api_keys WHERE key_sha256 = ?", (record.key_sha256,)).fetchone():
        raise ApiKeyExistsError(record.name, same_secret=True)
    stored = ApiKeyRecord(record.name, record.namespace, record.role, record.key_sha256, record.source,
                          time.time(), (context or AuditContext()).actor)
    conn.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (stored.name, stored.namespace, stored.role, stored.key_sha256, stored.source, stored.created_at,
                  stored.created_by))
    append(conn, stored.namespace, context, KEY_ADDED, **stored.public())
    bump_version(conn)
    return stored


def remove(conn: sqlite3.Connection, name: str, namespace: str, context: AuditContext | None,
           allowed_sources: Iterable[str] = ("api",)) -> ApiKeyRecord:
    """Remove the key `name` of `namespace`. A key of another namespace is "not found" (its existence
    is not revealed); the namespace's last admin key and keys of other sources are not removable."""
    found = [k for k in all_keys(conn, namespace) if k.name == name]
    if not found:
        raise ApiKeyNotFoundError(name, namespace)
    record = found[0]
    if record.source not in tuple(allowed_sources):
        raise ApiKeyNotRemovableError(f"key {name!r} comes from the operator's configuration ({record.source}); "
                                      "remove it there and restart the service")
    if record.role == "admin" and not any(k.role == "admin" and k.name != name for k in all_keys(conn, namespace)):
        raise ApiKeyNotRemovableError(f"key {name!r} is the last admin key of its gallery; add another admin key "
                                      "first")
    conn.execute("DELETE FROM api_keys WHERE name = ?", (name,))
    append(conn, namespace, context, KEY_REMOVED, **record.public())
    bump_version(conn)
    return record


def sync(conn: sqlite3.Connection, configured: Iterable[ApiKeyRecord], context: AuditContext | None) -> list[str]:
    """Make the operator's keys (sources file/env) in the table exactly `configured`; each difference
    is audited in the key's namespace. Returns one line per change (names and roles only)."""
    wanted = {r.name: check_record(r) for r in configured}
    if len({r.key_sha256 for r in wanted.values()}) != len(wanted):
        raise InvalidInputError("two configured keys have the same secret")
    if any(r.source not in OPERATOR_SOURCES for r in wanted.values()):
        raise InvalidInputError(f"configured keys come from {' or '.join(OPERATOR_SOURCES)}")
    wanted_secrets = {r.key_sha256 for r in wanted.values()}
    changes: list[str] = []

    def drop(old: ApiKeyRecord) -> None:
        conn.execute("DELETE FROM api_keys WHERE name = ?", (old.name,))
        append(conn, old.namespace, context, KEY_REMOVED, **old.public())
        changes.append(f"removed {old.name} ({old.role}, {old.source})")

    for old in all_keys(conn):
        new = wanted.get(old.name)
        if new is None:
            # An operator key no longer configured, or an HTTP-made key whose secret the operator now configures.
            if old.source in OPERATOR_SOURCES or old.key_sha256 in wanted_secrets:
                drop(old)
        elif (old.namespace, old.key_sha256, old.source) != (new.namespace, new.key_sha256, new.source):
            drop(old)  # added again below as configured
        elif old.role != new.role:
            conn.execute("UPDATE api_keys SET role = ? WHERE name = ?", (new.role, old.name))
            append(conn, old.namespace, context, KEY_CHANGED, key_name=old.name, role=new.role,
                         previous_role=old.role, source=new.source)
            changes.append(f"changed {old.name}: role {old.role} -> {new.role}")
    present = {k.name for k in all_keys(conn)}
    for record in wanted.values():
        if record.name not in present:
            add(conn, record, context)
            changes.append(f"added {record.name} ({record.role}, {record.source})")
    if changes:
        bump_version(conn)
    return changes

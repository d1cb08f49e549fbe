"""API keys: who the caller is (the key's name), which gallery the key opens, and what its role allows.

Where keys come from -- secrets are never stored, only their sha256:

- the operator's keys file, GAITID_KEYS_FILE (TOML), read at start-up:

      [[keys]]
      name = "front-desk-2026"   # who, in the audit log (never the key itself)
      gallery = "acme"           # the gallery it opens: 1-64 chars of [a-z0-9_.-], from a letter or digit
      role = "enroll"            # read | enroll | admin
      sha256 = "9f86d081..."     # hex sha256 of the secret: `gaitid keys new` prints a secret and its entry

- GAITID_API_KEYS=k1,k2 (the first releases' setting): each key opens the gallery named by the first 16
  hex digits of its sha256 -- where that key's data has always lived -- with role admin, under the
  name "env-" + 8 hex digits;
- keys an admin makes over HTTP (POST /keys, for their own gallery), kept in the gallery database.

At start-up the configured keys (file + environment) are written into the gallery database
(`gallery.api_keys.sync`), every difference with the previous start audited; the key ring then
answers from the database and reloads within a second when another process changes it. A keys file
that cannot be read fails closed: every gallery route answers 503 until it is fixed.

Roles, each including the previous: `read` (identify, list and read subjects), `enroll` (+ enroll),
`admin` (+ delete subjects, re-embed, manage the gallery's keys, read its audit log). Without any
key, authentication is off and every caller is admin of the gallery "default".

Rotating a key: add the new key for the same gallery (a file entry, or POST /keys), move the clients,
remove the old key. Data belongs to the gallery, not to the key, so nothing moves.

Migrating from GAITID_API_KEYS: a key's data lives in the namespace sha256(key)[:16] (`gaitid keys
hash KEY` prints it); name it as the gallery of a keys-file entry (`gallery = "f10f781241e22466"`)
and drop the variable. Turning keys on over a single-user gallery: give a key `gallery = "default"`;
otherwise the start-up log names every gallery with subjects that no key opens (`hidden_galleries`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gallery import (
    DEFAULT_NAMESPACE,
    ApiKeyRecord,
    AuditContext,
    Gallery,
    GalleryError,
    hash_secret,
    role_allows,
)
from gallery.api_keys import Role, check_record
from service.errors import ApiError
from service.settings import HttpSettings

log = logging.getLogger("gaitid.service")

API_KEY_HEADER = "X-API-Key"
KEYS_FILE_FIELDS = ("name", "gallery", "role", "sha256")
RELOAD_CHECK_S = 1.0  # how often a server asks the database whether another process changed the keys
OPERATOR = AuditContext("operator")  # who changes the configured keys, in the audit log


def namespace_for_key(key: bytes) -> str:
    """The gallery of a GAITID_API_KEYS key: 16 hex digits of its sha256. Galleries made by the first
    releases hold each key's data under these names, so they must never change."""
    return hashlib.sha256(key).hexdigest()[:16]


def match_api_key(supplied: bytes, keys: Sequence[bytes]) -> bytes | None:
    """The configured key equal to `supplied`, or None. Every key is compared, each in constant
    time, so the response time says nothing about which key (or how much of one) matched."""
    matched = None
    for key in keys:
        if hmac.compare_digest(supplied, key):
            matched = key
    return matched


class KeysFileError(ValueError):
    """The keys file (or GAITID_API_KEYS) cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's name (None when authentication is off), its gallery and role."""

    key_name: str | None
    gallery: str
    role: Role

    @property
    def actor(self) -> str:
        """The name the audit log records."""
        return self.key_name or "anonymous"

    def allows(self, needed: Role) -> bool:
        return role_allows(self.role, needed)


def environment_keys(api_keys: str) -> list[ApiKeyRecord]:
    """GAITID_API_KEYS entries as key records (gallery = the key's legacy namespace, role admin)."""
    records = []
    for secret in (k.strip() for k in api_keys.split(",")):
        if secret:
            digest = hash_secret(secret)
            records.append(ApiKeyRecord(f"env-{digest[:8]}", digest[:16], "admin", digest, "env"))
    return records


def read_keys_file(path: Path) -> list[ApiKeyRecord]:
    """The entries of a keys file (format in this module's docstring), every field checked."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise KeysFileError(f"keys file {path} cannot be read: {error}") from error
    unknown = set(data) - {"keys"}
    if unknown:
        raise KeysFileError(f"keys file {path}: unknown top-level entries {sorted(unknown)}; use [[keys]] tables")
    entries = data.get("keys", [])
    if not isinstance(entries, list):
        raise KeysFileError(f"keys file {path}: `keys` must be an array of tables ([[keys]])")
    records = []
    for position, entry in enumerate(entries):
        where = f"keys file {path}, entry {position + 1}"
        if not isinstance(entry, dict) or set(entry) != set(KEYS_FILE_FIELDS):
            fields = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise KeysFileError(f"{where}: needs exactly the fields {', '.join(KEYS_FILE_FIELDS)}, has {fields}")
        sha256 = entry["sha256"].lower() if isinstance(entry["sha256"], str) else entry["sha256"]
        record = ApiKeyRecord(entry["name"], entry["gallery"], entry["role"], sha256, "file")
        try:
            records.append(check_record(record))
        except GalleryError as error:
            raise KeysFileError(f"{where}: {error}") from error
    return records


def configured_keys(http: HttpSettings) -> list[ApiKeyRecord]:
    """The operator's keys: the keys file and GAITID_API_KEYS, names and secrets unique."""
    records = environment_keys(http.api_keys)
    if http.keys_file is not None:
        records += read_keys_file(http.keys_file)
    for field in ("name", "key_sha256"):
        values = [getattr(r, field) for r in records]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            what = "names" if field == "name" else "secrets (sha256)"
            shown = duplicates if field == "name" else [d[:8] + "..." for d in duplicates]
            raise KeysFileError(f"the configured keys repeat {what}: {shown}")
    return records


class KeyRing:
    """The keys a server accepts, looked up by the sha256 of what a caller sends.

    Built from the configured keys (`from_settings`); once the gallery is open, `attach` writes them
    into its database and the ring answers from there (keys made over HTTP included)."""

    def __init__(self, configured: Sequence[ApiKeyRecord] = (), error: str | None = None):
        self.configured = list(configured)
        self.error = error  # the keys file cannot be read: fail closed
        self._records: tuple[ApiKeyRecord, ...] = tuple(self.configured)
        self._gallery: Gallery | None = None
        self._version: int | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, http: HttpSettings) -> KeyRing:
        try:
            return cls(configured_keys(http))
        except KeysFileError as error:
            log.error("API keys unavailable, every gallery route answers 503 until this is fixed: %s", error)
            return cls(error=str(error))

    @property
    def enabled(self) -> bool:
        """Whether callers must send a key (any key is known, or the keys file is broken)."""
        return bool(self._records) or self.error is not None

    def records(self) -> tuple[ApiKeyRecord, ...]:
        self._maybe_reload()
        return self._records

    def attach(self, gallery: Gallery) -> list[str]:
        """Write the configured keys into the gallery database (audited) and answer from it from now
        on; returns the changes since the previous start (names and roles, never secrets)."""
        changes = [] if self.error else gallery.sync_configured_keys(self.configured, audit_context=OPERATOR)
        with self._lock:
            self._gallery = gallery
        self.reload()
        return changes

    def reload(self) -> None:
        """Read every key from the database now (after a change made by this process)."""
        gallery = self._gallery
        if gallery is None:
            return
        with self._lock:
            self._version = gallery.api_keys_version()
            self._records = tuple(gallery.api_keys())
            self._checked_at = time.monotonic()

    def _maybe_reload(self) -> None:
        gallery = self._gallery
        if gallery is None or time.monotonic() - self._checked_at < RELOAD_CHECK_S:
            return
        try:
            changed = gallery.api_keys_version() != self._version
        except GalleryError:  # closed at shutdown: keep answering from memory
            return
        if changed:
            self.reload()
        else:
            self._checked_at = time.monotonic()

    def authenticate(self, supplied: str | None) -> Caller:
        """The caller holding `supplied`, or ApiError 401 (503 while the keys file is broken)."""
        if self.error is not None:
            raise ApiError(503, "keys_unavailable", "The server's API keys cannot be read; its operator has to fix "
                                                    "the keys file (the server log says what is wrong).")
        records = self.records()
        if not records:
            return Caller(None, DEFAULT_NAMESPACE, "admin")  # the embedded single-user default
        challenge = {"WWW-Authenticate": API_KEY_HEADER}
        if not supplied:
            raise ApiError(401, "missing_api_key",
                           f"This server needs an API key: send it in the {API_KEY_HEADER} header.", headers=challenge)
        digest = hash_secret(supplied.encode("utf-8", "surrogateescape"))
        matched = None
        for record in records:  # every one compared, in constant time: timing reveals nothing
            if hmac.compare_digest(digest, record.key_sha256):
                matched = record
        if matched is None:
            raise ApiError(401, "invalid_api_key", f"The {API_KEY_HEADER} header does not hold a valid API key.",
                           headers=challenge)
        return Caller(matched.name, matched.namespace, matched.role)


def hidden_galleries(gallery: Gallery, ring: KeyRing) -> list[tuple[str, int]]:
    """Galleries holding subjects that no key opens while keys are on: (name, subjects)."""
    if not ring.enabled:
        return []
    opened = {r.namespace for r in ring.records()}
    hidden = []
    for namespace in gallery.namespaces():
        if namespace not in opened and (subjects := gallery.status(namespace).subjects):
            hidden.append((namespace, subjects))
    return hidden


def start_key_ring(ring: KeyRing, gallery: Gallery) -> str:
    """At start-up: sync the configured keys into the gallery (audited), log the changes and every
    gallery that keys hide, and return a one-line summary for /readyz (counts only: the galleries'
    names are other tenants' business)."""
    changes = ring.attach(gallery)
    for change in changes:
        log.info("API keys: %s", change)
    hidden = hidden_galleries(gallery, ring)
    for namespace, subjects in hidden:
        legacy = len(namespace) == 16 and all(c in "0123456789abcdef" for c in namespace)
        log.warning(
            "API keys are on, and no key opens gallery %r (%d subjects): its subjects are hidden. To keep "
            "using it, give a key `gallery = \"%s\"` in the keys file (GAITID_KEYS_FILE)%s.", namespace, subjects,
            namespace, "; this is the gallery of a GAITID_API_KEYS key: `gaitid keys hash KEY` prints which"
            if legacy else "")
    if not ring.enabled:
        return "off: no API keys are configured, every caller is admin of gallery 'default'"
    galleries = len({r.namespace for r in ring.records()})
    summary = f"on: {len(ring.records())} keys, {galleries} galleries"
    return summary + (f"; {len(hidden)} galleries with subjects are opened by no key (see the log)" if hidden else "")

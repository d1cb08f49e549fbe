"""GET /keys, POST /keys, DELETE /keys/{name}: the API keys of the caller's gallery (role admin).

A key made here opens the caller's gallery with the role asked for; its secret is answered once and
stored only as its sha256 (gallery.api_keys). Keys from the operator's configuration (keys file,
GAITID_API_KEYS) are listed but changed only there. The gallery's last admin key cannot be removed.
Every change is audited and reaches every server process within a second.

Rotation: POST /keys a new key with the same role, move the clients to it, DELETE /keys/{old}: the
gallery and its subjects stay (they belong to the gallery, not to a key).
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Path

from gallery import ApiKeyRecord, hash_secret
from service.deps import AdminDep, AuditDep, GalleryDep, StateDep
from service.errors import ApiError
from service.schemas import KeyCreate, KeyCreated, KeyList, KeyOut, error_responses, key_out

router = APIRouter(prefix="/keys", tags=["keys"])

SECRET_BYTES = 32  # 256 random bits: a fast hash of the secret is then safe to store


@router.get("", response_model=KeyList)
async def list_keys(caller: AdminDep, gallery: GalleryDep) -> KeyList:
    """Every key that opens your gallery: name, role, where it comes from (never a secret)."""
    records = await anyio.to_thread.run_sync(gallery.api_keys, caller.gallery)
    return KeyList(keys=[key_out(r) for r in records])


@router.post("", status_code=201, response_model=KeyCreated,
             responses=error_responses({409: "a key of that name exists, or the server runs without keys",
                                        422: "invalid name or role"}))
async def create_key(body: KeyCreate, caller: AdminDep, audit_context: AuditDep, gallery: GalleryDep,
                     state: StateDep) -> KeyCreated:
    """A new key for your gallery. Its secret is in this answer only: store it now."""
    if caller.key_name is None:
        raise ApiError(409, "keys_off", "This server runs without API keys; its operator turns them on with a "
                                        "keys file (GAITID_KEYS_FILE), after which admins can make more here.")
    secret = secrets.token_urlsafe(SECRET_BYTES)
    record = ApiKeyRecord(body.name, caller.gallery, body.role, hash_secret(secret), "api")
    stored = await anyio.to_thread.run_sync(partial(gallery.add_api_key, record, audit_context=audit_context))
    state.keyring.reload()
    return KeyCreated(**key_out(stored).model_dump(), secret=secret)


@router.delete("/{name}", response_model=KeyOut,
               responses=error_responses({404: "no key of that name opens your gallery",
                                          409: "the key comes from the operator's configuration, or it is the "
                                               "gallery's last admin key"}))
async def delete_key(name: Annotated[str, Path(min_length=1, max_length=64)], caller: AdminDep,
                     audit_context: AuditDep, gallery: GalleryDep, state: StateDep) -> KeyOut:
    """Remove a key of your gallery: it stops working at once (every server process within a second)."""
    removed = await anyio.to_thread.run_sync(partial(
        gallery.remove_api_key, name, namespace=caller.gallery, audit_context=audit_context))
    state.keyring.reload()
    return key_out(removed)

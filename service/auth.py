"""API keys: which configured key a caller holds (compared in constant time) and the gallery
namespace that key owns."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from gallery import DEFAULT_NAMESPACE
from service.errors import ApiError

API_KEY_HEADER = "X-API-Key"


def namespace_for_key(key: bytes) -> str:
    """The gallery namespace of an API key: 16 hex digits of its sha256, so the key itself is never
    stored. Galleries made since the first release hold their namespaces under these names."""
    return hashlib.sha256(key).hexdigest()[:16]


def match_api_key(supplied: bytes, keys: Sequence[bytes]) -> bytes | None:
    """The configured key equal to `supplied`, or None. Every key is compared, each in constant
    time, so the response time says nothing about which key (or how much of one) matched."""
    matched = None
    for key in keys:
        if hmac.compare_digest(supplied, key):
            matched = key
    return matched


def authenticate(keys: Sequence[bytes], supplied: str | None) -> str:
    """The caller's namespace, or ApiError 401. No keys configured = authentication disabled."""
    if not keys:
        return DEFAULT_NAMESPACE  # the embedded single-user default
    challenge = {"WWW-Authenticate": API_KEY_HEADER}
    if not supplied:
        raise ApiError(401, "missing_api_key", f"This server needs an API key: send it in the {API_KEY_HEADER} header.",
                       headers=challenge)
    matched = match_api_key(supplied.encode(), keys)
    if matched is None:
        raise ApiError(401, "invalid_api_key", f"The {API_KEY_HEADER} header does not hold a valid API key.",
                       headers=challenge)
    return namespace_for_key(matched)

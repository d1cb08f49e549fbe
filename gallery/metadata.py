"""The bounds of metadata (a subject's, a sequence's): checked on JSON text before it is parsed and
on objects before they are serialised, so nothing the service cannot answer with is ever stored.

Metadata is a JSON object of at most MAX_METADATA_BYTES (64 KiB) as UTF-8 JSON text, nested at most
MAX_METADATA_DEPTH (32) levels of objects and arrays (`{"a": 1}` is 1), without NaN or infinities.
`metadata_from_json` is what the HTTP layer calls on a form field, before anything else runs;
`json_object` is what the gallery calls on what it stores; `stored_metadata` reads a row back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gallery.errors import InvalidMetadataError

MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32


def json_object(value: Mapping[str, Any], what: str) -> str:
    """`value` as canonical JSON text (a mapping, serialisable, within the metadata bounds)."""
    if not isinstance(value, Mapping):
        raise InvalidMetadataError(f"{what} must be a JSON object (mapping), got {type(value).__name__}")
    if _object_depth(value) > MAX_METADATA_DEPTH:  # before json.dumps, which recurses
        raise InvalidMetadataError(f"{what} is nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        text = json.dumps(dict(value), allow_nan=False, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidMetadataError(f"{what} is not JSON-serialisable: {exc}") from exc
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) is not text SQLite can store
        raise InvalidMetadataError(f"{what} holds characters that are not valid Unicode text: {exc.reason}") from exc
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(f"{what} is larger than {MAX_METADATA_BYTES} bytes as JSON")
    return text


def metadata_from_json(text: str, what: str = "metadata") -> dict[str, Any]:
    """JSON text -> a metadata object, every bound checked on the text before it is parsed (the
    parser recurses, so an unchecked deep text would exhaust the stack)."""
    if not isinstance(text, str):
        raise InvalidMetadataError(f"{what} must be JSON text, got {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(f"{what} is {size} bytes; at most {MAX_METADATA_BYTES} are accepted")
    if json_text_depth(text) > MAX_METADATA_DEPTH:
        raise InvalidMetadataError(f"{what} is nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeError) as error:
        where = f": {error.msg} at position {error.pos}" if isinstance(error, json.JSONDecodeError) else ""
        raise InvalidMetadataError(f"{what} is not valid JSON{where}") from error
    except ValueError as error:  # NaN / Infinity
        raise InvalidMetadataError(f"{what}: {error}") from error
    if not isinstance(value, dict):
        raise InvalidMetadataError(f"{what} must be a JSON object such as {{\"team\": \"blue\"}}, "
                                   f"not a {type(value).__name__}")
    json_object(value, what)  # what only the parsed value shows (lone surrogates from \ud800 escapes)
    return value


def stored_metadata(text: str) -> dict[str, Any]:
    """Metadata as stored -> a dict within today's bounds. Rows written by older versions may be
    nested deeper than answers can carry: they read back as one key saying so (the row is kept)."""
    if json_text_depth(text) > MAX_METADATA_DEPTH:
        return {"_unreadable": f"stored metadata is nested deeper than {MAX_METADATA_DEPTH} levels; "
                               "replace it by enrolling again with new metadata"}
    return json.loads(text)


def json_text_depth(text: str) -> int:
    """Deepest nesting of [ and { in JSON text, outside strings (iterative: no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _object_depth(value: Any) -> int:
    """Nesting depth of dicts/lists/tuples (iterative; stops past the bound, so cycles end too)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")

"""The OpenAPI document the app serves, made truthful where FastAPI's default is not:

- the X-API-Key security requirement appears only when the server has keys (a client of a server
  without keys needs none);
- every 422 answer is the service's error body (FastAPI would document its own validation shape,
  which service.errors replaces);
- every operation that reads a request body documents 400 (a body that cannot be parsed, e.g.
  broken multipart);
- every gallery operation documents 503 (keys file unreadable, gallery or models not ready).

Built on first request after start-up (when the key ring knows whether keys exist), once per state
of the ring.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.auth import KeyRing
from service.schemas import ErrorBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
METHODS = ("get", "put", "post", "delete", "patch")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def truthful(schema: dict[str, Any], keys_enabled: bool) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    for path_item in schema.get("paths", {}).values():
        for method in METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            secured = "security" in operation
            if "422" in responses:
                responses["422"] = _error(responses["422"].get("description") or "invalid request")
            if "requestBody" in operation:
                responses.setdefault("400", _error("the request body cannot be parsed (e.g. broken multipart)"))
            if secured:
                responses.setdefault("503", _error("API keys, gallery or models not ready (see /readyz)"))
                if keys_enabled:
                    responses.setdefault("401", _error("missing or invalid API key"))
                    responses.setdefault("403", _error("the API key's role does not allow this"))
                else:
                    del operation["security"]
                    for status in ("401", "403"):
                        responses.pop(status, None)
    if not keys_enabled:
        components.pop("securitySchemes", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install_openapi(app: FastAPI, keyring: KeyRing) -> None:
    built: dict[bool, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        enabled = keyring.enabled
        if enabled not in built:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 description=app.description, routes=app.routes)
            built[enabled] = truthful(schema, enabled)
        return built[enabled]

    app.openapi = openapi  # type: ignore[method-assign]

"""service/openapi.py: the OpenAPI document tells the truth -- the key is required only when the
server has keys, 400 (unparsable body) and the service's own 422 body are documented, nullable form
fields accept what OpenAPI clients send for null."""

from __future__ import annotations

from tests.service.conftest import serve
from tests.service.keyfile import write_keys_file

GALLERY_OPERATIONS = [("post", "/enroll"), ("post", "/identify"), ("get", "/subjects"), ("get", "/subjects/{subject_id}"),
                      ("delete", "/subjects/{subject_id}"), ("get", "/audit"), ("get", "/keys"), ("post", "/keys"),
                      ("post", "/gallery/reembed")]


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_without_keys_no_operation_asks_for_one(client):
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema["components"]
    for method, path, operation in operations(schema):
        assert "security" not in operation, (method, path)
        assert "401" not in operation["responses"], (method, path)


def test_with_keys_gallery_operations_require_one(tmp_path, tiny_model, fake):
    keys = write_keys_file(tmp_path / "keys.toml", ("ops", "acme", "admin", "k"))
    with serve(tmp_path / "data", tiny_model, fake, keys_file=keys) as client:
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    by_operation = {(m, p): o for m, p, o in operations(schema)}
    for method, path in GALLERY_OPERATIONS:
        operation = by_operation[(method, path)]
        assert operation["security"] == [{"APIKeyHeader": []}]
        assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in by_operation[("get", path)]


def test_errors_are_documented_as_they_are_answered(client):
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        if "requestBody" in operation:
            assert "400" in responses, (method, path)
        if "422" in responses:
            assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_a_broken_multipart_body_is_400_as_documented(client, fake):
    for route in ("/enroll", "/identify"):
        response = client.post(route, content=b"garbage", headers={"Content-Type": "multipart/form-data"})
        assert response.status_code == 400 and response.json()["error"] == "invalid_body", response.text
        assert "multipart" in response.json()["message"]
    assert fake.calls == 0

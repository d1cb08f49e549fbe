"""Property-based API test: schemathesis generates requests for every operation of the app's own
OpenAPI document and checks every answer -- no 5xx, and status code, content type, headers and body
all as documented. Against the real app: the real clip pipeline (background subtraction + the tiny
ONNX model of tests/conftest.py) and a real gallery holding subjects (one enrolled from a synthetic
walking clip, one stored by an older version under an id today's rule refuses, one with metadata too
deep to answer). Three runs: without keys (schema-valid and schema-invalid requests), with keys
(schema-valid requests under an admin key). Bounded: a fixed seed and a fixed number of examples per
operation; it prints the cases run and the time taken.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, given, settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from tests.service.conftest import make_settings, serve, walking_clip
from tests.service.keyfile import key, write_keys_file

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 100
# A 5xx, or an answer the document does not describe, is a failure.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
ADMIN_SECRET = "schemathesis-admin-key"


def seed_gallery(data_dir: Path, model: Path, keys_file: Path | None, headers: dict[str, str]) -> None:
    """A gallery with real content, through the real app and pipeline, plus rows older versions wrote."""
    overrides = {"keys_file": keys_file} if keys_file else {}
    with serve(data_dir, model, segmenter="bgsub", **overrides) as client:
        enrolled = client.post("/enroll", data={"subject_id": "walker", "metadata": '{"team": "blue"}'},
                               files={"video": ("walk.avi", walking_clip(), "video/x-msvideo")}, headers=headers)
        assert enrolled.status_code == 201, enrolled.text
        client.post("/enroll", data={"subject_id": "tmp"}, files={"video": ("walk.avi", walking_clip(), "video/x-msvideo")},
                    headers=headers)
    with sqlite3.connect(data_dir / "gallery" / "gallery.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        for table in ("subjects", "sequences"):
            conn.execute(f"UPDATE {table} SET subject_id = 'legacy/id' WHERE subject_id = 'tmp'")
        conn.execute("UPDATE subjects SET metadata = ? WHERE subject_id = 'legacy/id'", ('{"a":' * 300 + "1" + "}" * 300,))


def run_schemathesis(app, mode: GenerationMode, headers: dict[str, str], checks) -> tuple[int, Counter, dict]:
    """Every operation of the app's document, EXAMPLES_PER_OPERATION generated requests each; returns
    (cases run, failures by kind, one report per kind)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tally: dict = {"cases": 0, "failures": Counter(), "examples": {}}
    for result in schema.get_all_operations():
        run_operation(result.ok(), mode, headers, checks, tally)
    return tally["cases"], tally["failures"], tally["examples"]


def run_operation(operation, mode: GenerationMode, headers: dict[str, str], checks, tally: dict) -> None:
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def one_case(case) -> None:
        tally["cases"] += 1
        try:
            case.call_and_validate(checks=checks, headers=headers)
        # Failed checks come as a FailureGroup (a BaseExceptionGroup): collect every failure.
        except (Exception, FailureGroup) as failure:  # noqa: BLE001
            label = f"{operation.label}: {type(failure).__name__}: {str(failure).splitlines()[0][:200]}"
            tally["failures"][label] += 1
            tally["examples"].setdefault(label, str(failure)[:3000])

    try:
        one_case()
    except hypothesis.errors.Unsatisfiable:  # an operation without parameters has no invalid request
        pass


@pytest.mark.parametrize(("with_keys", "mode"), [
    (False, GenerationMode.POSITIVE), (False, GenerationMode.NEGATIVE), (True, GenerationMode.POSITIVE),
], ids=["no-keys-valid", "no-keys-invalid", "keys-valid"])
def test_no_server_errors_and_no_schema_violations(tmp_path, tiny_model, with_keys, mode):
    keys_file = write_keys_file(tmp_path / "keys.toml", ("ops", "acme", "admin", ADMIN_SECRET)) if with_keys else None
    headers = key(ADMIN_SECRET) if with_keys else {}
    data_dir = tmp_path / "data"
    seed_gallery(data_dir, tiny_model, keys_file, headers)
    overrides = {"keys_file": keys_file} if keys_file else {}
    app = create_app(make_settings(data_dir, tiny_model, segmenter="bgsub", **overrides))
    # Invalid requests must also be refused: a schema-invalid request answered 2xx is a failure too.
    checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])
    started = time.perf_counter()
    cases, failures, examples = run_schemathesis(app, mode, headers, checks)
    seconds = time.perf_counter() - started
    print(f"\nschemathesis {'keys' if with_keys else 'no keys'}, {mode.value}: {cases} cases in {seconds:.1f} s, "
          f"{sum(failures.values())} failures")
    assert cases > 100
    assert not failures, "\n".join(f"{count}x {label}\n{examples[label]}" for label, count in failures.most_common(5))

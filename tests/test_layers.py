"""The layers stay one-way (import-linter contracts in pyproject.toml), and the parts that serve
never load torch: importing the HTTP app, `gaitid --help` and the start of `gaitid serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from .conftest import REPO

PYTHON = sys.executable
LINT_IMPORTS = Path(PYTHON).with_name("lint-imports")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([PYTHON, "-c", code], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has in sys.modules after running `statement`."""
    result = _run(f"import sys, json\n{statement}\nprint(json.dumps([m for m in {list(modules)!r} if m in sys.modules]))")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_linter_contracts_hold():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_contracts_name_every_layer_and_forbid_torch_in_the_service():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["include_external_packages"] is True
    contracts = config["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    assert layers == ["gaitid.cli", "model", "service", "gallery", "gaitid.contract | gaitid.progress"]
    forbidden = {tuple(c["source_modules"]): set(c["forbidden_modules"]) for c in contracts if c["type"] == "forbidden"}
    assert {"model", "torch", "transformers", "ultralytics", "gaitid.cli"} <= forbidden[("service",)]
    assert {"service", "model", "gaitid.cli", "torch"} <= forbidden[("gallery",)]
    assert {"service.app", "service.routers", "service.deps", "service.settings"} <= forbidden[("model",)]


def test_a_broken_contract_is_reported(tmp_path):
    """lint-imports really fails on a layer violation: a copy of the contracts over a tiny tree
    where the gallery imports the service."""
    for package, body in {"gallery": "import service\n", "service": "", "model": "", "gaitid": ""}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(body)
    (tmp_path / "gaitid" / "cli.py").write_text("")
    (tmp_path / "gaitid" / "contract.py").write_text("")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_packages =\n    gaitid\n    service\n    model\n    gallery\n\n"
        "[importlinter:contract:layers]\nname = layers\ntype = layers\n"
        "layers =\n    gaitid.cli\n    model\n    service\n    gallery\n    gaitid.contract\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tmp_path / ".importlinter")],
                            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "gallery -> service" in result.stdout, result.stdout


def test_the_http_app_loads_no_torch_and_no_training_code():
    loaded = _loaded_after("import service.app", ("torch", "transformers", "ultralytics", "model", "gaitid.cli"))
    assert loaded == []


def test_gaitid_help_loads_no_torch_and_no_part():
    loaded = _loaded_after(
        "from typer.testing import CliRunner\nfrom gaitid.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\nassert result.exit_code == 0, result.output\n"
        "assert 'serve' in result.output and 'rescore' in result.output",
        ("torch", "model", "service.app", "gallery", "onnxruntime"),
    )
    assert loaded == []


def test_gaitid_serve_builds_the_app_without_torch(tmp_path):
    """`gaitid serve` up to the point uvicorn would listen: the app factory runs, its startup loads
    the models and the gallery, and torch never enters the process."""
    code = (
        "import uvicorn\n"
        "from fastapi.testclient import TestClient\n"
        "def fake_run(target, factory, **kwargs):\n"
        "    module, name = target.split(':')\n"
        "    import importlib\n"
        "    app = getattr(importlib.import_module(module), name)()\n"
        "    with TestClient(app) as client:\n"
        "        assert client.get('/healthz').status_code == 200\n"
        "uvicorn.run = fake_run\n"
        "from typer.testing import CliRunner\nfrom gaitid.cli import app\n"
        "result = CliRunner().invoke(app, ['serve'])\nassert result.exit_code == 0, result.output\n"
    )
    env_code = f"import os\nos.environ['GAITID_DATA_DIR'] = {str(tmp_path)!r}\nos.environ['GAITID_PROVIDERS'] = 'cpu'\n"
    loaded = _loaded_after(env_code + code, ("torch", "transformers", "model"))
    assert loaded == []

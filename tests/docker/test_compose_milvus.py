"""docker/compose.milvus.yml, the overlay that puts the gallery's search vectors in a Milvus standalone
server: it parses with docker-compose.yml, and both gaitid services then use Milvus and wait for it.
(Checked with `docker compose config` only: starting it needs the images.)"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.docker.test_docker import COMPOSE_FILE, REPO, compose_command

OVERLAY = REPO / "docker" / "compose.milvus.yml"


@pytest.mark.parametrize("profile", [[], ["--profile", "cpu"]])
def test_the_milvus_overlay_points_the_service_at_milvus(profile: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAITID_")}
    result = subprocess.run([*compose_command(), "-f", str(COMPOSE_FILE), "-f", str(OVERLAY), "--project-directory",
                             str(REPO), *profile, "config", "--format", "json"],
                            check=False, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"milvus", "milvus-etcd", "milvus-minio"} <= set(services)
    for name in ["gaitid"] + (["gaitid-cpu"] if profile else []):
        service = services[name]
        assert service["environment"]["GAITID_INDEX_BACKEND"] == "milvus"
        assert service["environment"]["GAITID_MILVUS_URI"] == "http://milvus:19530"
        assert service["environment"]["GAITID_DATA_DIR"] == "/data"  # the base file's settings stay
        assert service["depends_on"]["milvus"]["condition"] == "service_healthy"
        assert service["build"]["args"]["EXTRAS"] == "milvus"
    milvus = services["milvus"]
    assert milvus["environment"] == {"ETCD_ENDPOINTS": "milvus-etcd:2379", "MINIO_ADDRESS": "milvus-minio:9000"}
    assert "ports" not in milvus and "ports" not in services["milvus-minio"]  # reachable only by the project

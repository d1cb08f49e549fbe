"""`docker compose up` for real (run by `make docker-test`, skipped otherwise): both images built
by the real Compose v2 binary, the CPU service started with `--profile cpu`, real CASIA-B clips
enrolled and identified through the container's HTTP port, the gallery found intact in its volume
after a restart, the GPU image serving on the CPU provider where no GPU is visible, and everything
torn down. Needs a Docker engine that answers (docker/engine.sh) and a base image it can use
(GAITID_PYTHON_IMAGE, from docker/base-image.sh). Prints the figures the README quotes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, VIDEOS, require_shared
from tests.docker.test_docker import COMPOSE_FILE, compose_command

pytestmark = pytest.mark.skipif(os.environ.get("GAITID_DOCKER_TEST") != "1",
                                reason="builds and runs containers: `make docker-test`")

PROJECT = "gaitid-test"
OVERRIDE = Path(__file__).with_name("compose.test.yml")
SERVICE = "gaitid-cpu"
BUILD_TIMEOUT_S = 1800
HEALTHY_TIMEOUT_S = 180
GPU_CONTAINER = "gaitid-test-gpu"
FIGURES: dict[str, object] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*command: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


class Compose:
    """The test project: docker-compose.yml + the test override, under its own project name."""

    def __init__(self, port: int, videos: Path):
        self.port = port
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("GAITID_")},
                    "GAITID_TEST_PORT": str(port), "GAITID_TEST_VIDEOS": str(videos)}
        for passed in ("GAITID_PYTHON_IMAGE", "GAITID_EXTRA_CA"):
            if passed in os.environ:
                self.env[passed] = os.environ[passed]

    def command(self, *args: str) -> list[str]:
        return [*compose_command(), "-p", PROJECT, "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE),
                "--project-directory", str(REPO), "--profile", "cpu", *args]

    def __call__(self, *args: str, timeout: float = 300) -> str:
        return run(*self.command(*args), timeout=timeout, env=self.env)

    def container(self) -> str:
        return self("ps", "-q", SERVICE).strip()

    def wait_healthy(self) -> float:
        """Seconds until Docker's healthcheck says healthy (the healthcheck the image declares)."""
        start = time.monotonic()
        while time.monotonic() - start < HEALTHY_TIMEOUT_S:
            state = json.loads(run("docker", "inspect", "-f", "{{json .State}}", self.container()))
            if state["Health"]["Status"] == "healthy":
                return time.monotonic() - start
            assert state["Status"] == "running", f"the container stopped: {state}\n{self('logs', SERVICE)}"
            time.sleep(0.5)
        pytest.fail(f"not healthy after {HEALTHY_TIMEOUT_S} s:\n{self('logs', SERVICE)}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def casia_clips() -> Path:
    return require_shared(VIDEOS / "casia-b")


@pytest.fixture(scope="module")
def compose(casia_clips):
    project = Compose(free_port(), casia_clips)
    project("down", "-v", "--remove-orphans")  # what an interrupted earlier run left
    try:
        yield project
    finally:  # after a failure: the log, then the same teardown as the last step
        if project.container():
            logs = subprocess.run(project.command("logs", "--no-color", SERVICE), check=False, capture_output=True,
                                  text=True, timeout=60, env=project.env)
            print(f"\n{SERVICE} log (end):\n{logs.stdout[-2000:]}{logs.stderr[-1000:]}")
        project("down", "-v", "--remove-orphans", timeout=120)
        subprocess.run(["docker", "rm", "-f", "-v", GPU_CONTAINER], check=False, capture_output=True)
        print("docker-test figures:", json.dumps(FIGURES, indent=1))


def image_mb(image: str) -> float:
    return round(int(run("docker", "image", "inspect", "-f", "{{.Size}}", image)) / 1e6)


def clip(folder: Path, subject: str) -> tuple[str, bytes, str]:
    return (f"{subject}.avi", (folder / f"{subject}-nm-01-090.avi").read_bytes(), "video/x-msvideo")


def identify(client: httpx.Client, folder: Path, subject: str) -> dict:
    response = client.post("/identify", files={"video": clip(folder, subject)})
    assert response.status_code == 200, response.text
    (track,) = response.json()["tracks"]
    return track


# == the steps, in order ===========================================================================
def image_id(image: str) -> str | None:
    result = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", image], check=False,
                            capture_output=True, text=True, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def test_compose_builds_both_images(compose):
    images = ("gaitid:cpu", "gaitid:gpu")
    earlier = {image: image_id(image) for image in images}
    start = time.monotonic()
    compose("build", "gaitid", SERVICE, timeout=BUILD_TIMEOUT_S)
    FIGURES["build_both_s"] = round(time.monotonic() - start)
    # An earlier run's images, now untagged, would pile up run after run (GBs): removed by id only.
    for image, old_id in earlier.items():
        if old_id and old_id != image_id(image):
            subprocess.run(["docker", "image", "rm", old_id], check=False, capture_output=True, timeout=120)
    for variant in ("cpu", "gpu"):
        FIGURES[f"image_{variant}_mb"] = image_mb(f"gaitid:{variant}")
        config = json.loads(run("docker", "image", "inspect", "-f", "{{json .Config}}", f"gaitid:{variant}"))
        assert config["User"] == "10001:10001" and "/data" in config["Volumes"]
        # No build secret or proxy CA reached the image: pip's bundle is the wheel's own, nothing added.
        history = run("docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", f"gaitid:{variant}")
        assert "BEGIN CERTIFICATE" not in history
    found = run("docker", "run", "--rm", "--network", "host", "--entrypoint", "python", "gaitid:cpu", "-c",
                "import importlib.util as u; print([m for m in ('torch', 'model') if u.find_spec(m)])")
    assert found.strip() == "[]", "the CPU image carries training code"


def test_cpu_service_comes_up_healthy(compose):
    start = time.monotonic()
    compose("up", "-d", SERVICE, timeout=120)
    FIGURES["healthy_after_up_s"] = round(time.monotonic() - start + compose.wait_healthy(), 1)
    ready = httpx.get(f"{compose.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    checks = {c["name"]: c for c in ready.json()["checks"]}
    assert "CPUExecutionProvider" in checks["embedding_model"]["detail"]
    assert "deepgaitv2-sil-casiab.onnx" in checks["embedding_model"]["detail"]


def test_real_clips_enrolled_and_identified_through_the_port(compose, casia_clips):
    with httpx.Client(base_url=compose.url, timeout=120) as client:
        for subject in ("002", "003"):
            enrolled = client.post("/enroll", data={"subject_id": subject}, files={"video": clip(casia_clips, subject)})
            assert enrolled.status_code == 201, enrolled.text
        start = time.monotonic()
        for subject in ("002", "003"):
            track = identify(client, casia_clips, subject)
            # The same clip through the same deterministic pipeline: its own enrollment, named.
            assert track["subject_id"] == subject and not track["unknown"], track["candidates"]
            assert track["similarity"] == pytest.approx(1.0, abs=1e-3)
        FIGURES["identify_clip_s"] = round((time.monotonic() - start) / 2, 2)
        # 004 was never enrolled: a stranger, at the shipped model's calibrated threshold.
        stranger = identify(client, casia_clips, "004")
        assert stranger["unknown"] and stranger["subject_id"] is None, stranger["candidates"]


def test_gallery_is_intact_in_its_volume_after_a_restart(compose, casia_clips):
    with httpx.Client(base_url=compose.url, timeout=120) as client:
        before = identify(client, casia_clips, "002")
        container = compose.container()
        compose("restart", SERVICE, timeout=120)
        assert compose.container() == container  # the same container, restarted: the volume kept the data
        compose.wait_healthy()
        listing = client.get("/subjects").json()
        assert [s["subject_id"] for s in listing["subjects"]] == ["002", "003"]
        assert identify(client, casia_clips, "002")["candidates"] == before["candidates"]
    mounts = json.loads(run("docker", "inspect", "-f", "{{json .Mounts}}", container))
    assert any(m["Type"] == "volume" and m["Destination"] == "/data" and m["Name"].startswith(PROJECT)
               for m in mounts)


def test_gpu_image_serves_on_the_cpu_provider_without_a_gpu(compose):
    """This machine has no GPU: the GPU image must start, answer /readyz and say it fell back."""
    port = free_port()
    start = time.monotonic()
    run("docker", "run", "-d", "--name", GPU_CONTAINER, "--network", "host", "gaitid:gpu",
        "gaitid", "serve", "--host", "127.0.0.1", "--port", str(port))
    try:
        deadline = start + HEALTHY_TIMEOUT_S
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, run("docker", "logs", GPU_CONTAINER)
                time.sleep(0.5)
        FIGURES["gpu_image_ready_s"] = round(time.monotonic() - start, 1)
        assert ready.status_code == 200, ready.text
        checks = {c["name"]: c for c in ready.json()["checks"]}
        assert "providers ['CPUExecutionProvider']" in checks["embedding_model"]["detail"]
        logs = subprocess.run(["docker", "logs", GPU_CONTAINER], check=True, capture_output=True, text=True)
        fallback = [line for line in (logs.stdout + logs.stderr).splitlines() if "falling back to" in line]
        assert any("CUDAExecutionProvider not usable here" in line for line in fallback), logs.stderr[-3000:]
        FIGURES["gpu_fallback_line"] = fallback[-1]
    finally:
        inspected = subprocess.run(["docker", "inspect", "-f", "{{json .Mounts}}", GPU_CONTAINER], check=False,
                                   capture_output=True, text=True, timeout=60)
        mounts = json.loads(inspected.stdout) if inspected.returncode == 0 else []
        # -v: its anonymous /data volume goes with it
        subprocess.run(["docker", "rm", "-f", "-v", GPU_CONTAINER], check=False, capture_output=True, timeout=60)
    left = run("docker", "volume", "ls", "-q").split()
    assert not [m["Name"] for m in mounts if m["Type"] == "volume" and m["Name"] in left]


def test_teardown_leaves_no_container_or_volume(compose):
    print(f"\n{SERVICE} log (end):\n{compose('logs', '--no-color', SERVICE)[-2000:]}")
    compose("down", "-v", "--remove-orphans", timeout=120)
    label = f"label=com.docker.compose.project={PROJECT}"
    assert run("docker", "ps", "-aq", "--filter", label).strip() == ""
    assert run("docker", "volume", "ls", "-q", "--filter", label).strip() == ""

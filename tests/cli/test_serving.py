"""`gaitid serve`: the service as a real server process (what `make serve` runs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO

GAITID = Path(sys.executable).with_name("gaitid")


def test_gaitid_serve_starts_the_service(tmp_path, tiny_model):
    """Ready on CPU with background subtraction, through the installed console script."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAITID_")}
    env.update({"GAITID_DATA_DIR": str(tmp_path / "data"), "GAITID_EMBEDDING_MODEL": str(tiny_model),
                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    command = [str(GAITID)] if GAITID.exists() else [sys.executable, "-c", "from gaitid.cli import app; app()"]
    server = subprocess.Popen([*command, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None, server.stdout.read().decode() if server.poll() is not None else "no answer"
        assert ready.status_code == 200, ready.text
        assert {c["name"] for c in ready.json()["checks"]} == {"embedding_model", "segmenter", "threshold", "gallery",
                                                             "api_keys", "subject_ids"}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["status"] == "ok"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    assert (tmp_path / "data" / "gallery" / "gallery.db").exists()  # the embedded SQLite gallery


def test_the_console_script_is_gaitid_cli():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"gaitid": "gaitid.cli:app"}

"""The real service in a subprocess for benchmarks: `uvicorn service.app:create_app --factory` on a free
port of 127.0.0.1, waited for until /readyz answers, then stopped gracefully or killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One server process; its output goes to `log_path` (appended to with `append`, e.g. across restarts)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, append: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab" if append else "wb")  # noqa: SIM115 -- closed in stop()/kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0, not_ready_grace_s: float | None = None,
                   poll_s: float = 0.1) -> None:
        """Until /readyz answers 200. With `not_ready_grace_s`, a not-ready answer that lasts past it (a
        missing model) stops the caller with the server's own explanation."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self._log.name}")
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2.0)
            except httpx.TransportError:
                response = None  # not listening yet
            if response is not None and response.status_code == 200:
                return
            if response is not None and not_ready_grace_s is not None \
                    and time.monotonic() - started > not_ready_grace_s:
                raise RuntimeError(f"the server is not ready: {response.text}")
            time.sleep(poll_s)
        raise TimeoutError(f"the server was not ready within {timeout_s} s; see {self._log.name}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crash does)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        """SIGINT: uvicorn shuts down gracefully (the gallery is closed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Fixtures of the browser tests: the real service under uvicorn on a free port, and headless Chromium
from the system's packages (Debian's `chromium`) driven by Playwright -- no browser download. Tests that
need the browser skip with a reason when it is not installed (`make test` installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, expect, sync_playwright

from service.app import create_app
from service.settings import load_settings

# Where Debian's package puts it; GAITID_CHROMIUM names another build of Chromium.
CHROMIUM_NAMES = ("chromium", "chromium-browser")
# The page's own steps (no clip processing) on a loaded 2-core CI machine; clips get their own timeout.
expect.set_options(timeout=20_000)
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_executable() -> str | None:
    configured = os.environ.get("GAITID_CHROMIUM")
    if configured:
        return configured
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip("needs Chromium from the system's packages (apt-get install chromium; `make test` installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def live_service(data_dir: Path, **settings) -> Iterator[str]:
    """The whole service (shipped model, background subtraction unless told otherwise) under uvicorn on
    a free local port; yields its base URL."""
    app = create_app(load_settings(env_file=None, data_dir=data_dir, providers="cpu",
                                   **{"segmenter": "bgsub", **settings}))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):  # start-up loads the model (a few seconds)
            if server.started or not thread.is_alive():
                break
            thread.join(0.1)
        assert server.started, "the service did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def service(tmp_path) -> Callable[..., contextmanager]:
    return lambda **settings: live_service(tmp_path / "data", **settings)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where the tests save their screenshots: GAITID_UI_SCREENSHOTS when set (to look at them), else tmp."""
    folder = Path(os.environ.get("GAITID_UI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

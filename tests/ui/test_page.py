"""GET /ui/ serves the page and only its own files, with a content security policy; no browser needed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.routers.ui import ASSETS, UI_DIR
from service.settings import load_settings


def test_the_page_and_its_files_are_served(tmp_path, tiny_model):
    settings = load_settings(env_file=None, data_dir=tmp_path, providers="cpu", embedding_model=tiny_model,
                             api_keys="some-key")
    with TestClient(create_app(settings)) as client:
        redirect = client.get("/ui", follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["location"] == "/ui/"
        page = client.get("/ui/")  # public like /docs even with keys on: it holds no data
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name in ("app.js", "app.css"):
            assert f'"{name}"' in page.text  # the page loads its own files, nothing from elsewhere
            asset = client.get(f"/ui/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"] == ASSETS[name]
            assert asset.content == (UI_DIR / name).read_bytes()
        for name in ("../settings.py", "%2e%2e%2fapp.py", "README.md"):
            missing = client.get(f"/ui/{name}")
            assert missing.status_code == 404 and missing.json()["error"] == "not_found", name
        assert not any(path.startswith("/ui") for path in client.get("/openapi.json").json()["paths"])


def test_every_file_of_the_page_is_served():
    assert {path.name for path in UI_DIR.iterdir()} == set(ASSETS)

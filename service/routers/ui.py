"""GET /ui/: the operators' web page (static HTML, CSS and JavaScript from service/ui, no build step).

The page is public like /docs: it holds no data. Everything it shows comes from the API, called by the
browser with the operator's key (X-API-Key, kept in the tab's sessionStorage), so the key's role
decides what works. Only the files named in ASSETS are served, never a path from the request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.errors import ApiError

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}
# Scripts and styles from this server only (no inline script). Inline styles are allowed for the
# re-scoring report, a self-contained page with its own <style> that the UI shows in a sandboxed frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "frame-src blob:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The page and its scripts change together with the server: revalidate instead of caching stale code.
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@router.get("")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
async def ui_index() -> FileResponse:
    return _asset("index.html")


@router.get("/{name}")
async def ui_asset(name: str) -> FileResponse:
    return _asset(name)


def _asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"The web page has no file {name!r}; open /ui/.")
    return FileResponse(UI_DIR / name, media_type=media_type, headers=HEADERS)

"""`gaitid serve`: the HTTP service under uvicorn (settings from GAITID_* environment variables)."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
):
    """Run the HTTP service (settings from GAITID_* environment variables)."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers)


def register(app: typer.Typer) -> None:
    app.command()(serve)

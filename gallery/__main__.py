"""`python -m gallery calibrate EMBEDDINGS.npz --target-far 0.01` (see gallery.calibration)."""

import typer

from gallery.calibration import calibrate_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="gaitid gallery tools.")
app.command("calibrate")(calibrate_command)


@app.callback()
def _main() -> None:
    """gaitid gallery tools."""


if __name__ == "__main__":
    app()

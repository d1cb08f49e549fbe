"""The `gaitid` command line: composes every part (training and export in `model/`, the service,
the gallery), one module per command group. Each command imports its heavy parts (torch, the HTTP
app, ONNX Runtime, the gallery) inside itself, so `gaitid --help` and `gaitid serve` load no torch.

    training.py  train, eval, export, prepare
    models.py    models fetch | import | list | upgrade
    serving.py   serve
    rescore.py   rescore, rescore-report, rescore-redact
    sightings.py sightings
    gallery.py   calibrate, reembed
    access.py    keys new | hash | list, audit, subjects list-invalid | delete, check-gallery
"""

from __future__ import annotations

import typer

from gaitid.cli import access, gallery, models, rescore, serving, sightings, training

app = typer.Typer(help="gaitid: identify people by the way they walk.", no_args_is_help=True)
app.add_typer(models.app, name="models")
for group in (training, serving, rescore, sightings, gallery, access):
    group.register(app)

__all__ = ["app"]

"""`gaitid models`: the person-segmentation and depth models (fetch, import, list; `model/zoo.py`),
upgrading an embedding model to the current contract (`model/export.py`), and OpenGait's trained
models (convert-opengait, fetch NAME; `model/opengait/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gaitid.cli.errors import reported_errors

app = typer.Typer(help="Person-segmentation and depth models (YOLO-seg, Depth Anything V2); embedding-model upgrades.",
                  no_args_is_help=True)


@app.command("fetch")
def models_fetch(
    name: Annotated[str | None, typer.Argument(
        help="an OpenGait zoo entry to download and convert (e.g. deepgaitv2-p3d-sustech1k); "
             "default: the segmentation and depth models")] = None,
    dest: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Download official YOLO-seg and Depth Anything V2 Small weights and export them to ONNX, or
    download and convert the OpenGait zoo entry NAME."""
    from model.zoo import default_dest, fetch_models

    with reported_errors():
        if name is None:
            fetch_models(dest)
            return
        from model.opengait.zoo import fetch_opengait

        typer.echo(f"installed {fetch_opengait(name, default_dest(dest))}")


@app.command("import")
def models_import(
    source: Annotated[Path, typer.Argument(help="folder with yolov8n-seg.pt and/or a Depth-Anything-V2-Small-hf folder")],
    dest: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Offline: export weights you bring to ONNX and record their sha256 and provenance."""
    from model.zoo import import_models

    with reported_errors():
        import_models(source, dest)


@app.command("list")
def models_list(
    dest: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Show installed models and their provenance."""
    from model.zoo import list_models

    with reported_errors():
        list_models(dest)


@app.command("upgrade")
def models_upgrade(
    old: Annotated[Path, typer.Argument(help="an embedding model of an older contract (.onnx)", exists=True,
                                        dir_okay=False)],
    new: Annotated[Path, typer.Argument(help="where to write the upgraded model (may be OLD itself)")],
):
    """Upgrade an embedding model to the current contract; same weights, same embeddings.

    The upgraded model takes the uint8 inputs and scales them inside the network."""
    from gaitid.contract import CONTRACT_VERSION, model_id
    from model.export import upgrade_v1

    with reported_errors(exit_code=2):
        metadata = upgrade_v1(old, new)
    typer.echo(f"{new}: {metadata.architecture} {metadata.variant}, contract v{CONTRACT_VERSION}, "
               f"model id {model_id(new)}")


@app.command("convert-opengait")
def models_convert_opengait(
    checkpoint: Annotated[Path, typer.Argument(help="an OpenGait checkpoint (.pt, {'model': state_dict, ...})")],
    out: Annotated[Path, typer.Argument(help="where to write the embedding model (.onnx)")],
    arch: Annotated[str, typer.Option("--arch", help="deepgaitv2-2d | deepgaitv2-p3d | deepgaitv2-3d | gaitbase")],
    config: Annotated[Path | None, typer.Option(
        "--config", help="the OpenGait YAML it was trained with (records dataset and metric; checks the shapes)")] = None,
):
    """Convert an OpenGait DeepGaitV2 / GaitBase checkpoint into an embedding model the service runs."""
    from gaitid.contract import model_id
    from model.opengait.architectures import ARCHITECTURES
    from model.opengait.convert import convert_opengait

    with reported_errors(exit_code=2):
        if arch not in ARCHITECTURES:
            raise typer.BadParameter(f"{arch!r} is not one of {', '.join(ARCHITECTURES)}", param_hint="--arch")
        if not checkpoint.is_file():
            raise typer.BadParameter(f"{checkpoint} does not exist", param_hint="CHECKPOINT")
        metadata = convert_opengait(checkpoint, out, arch, config)
    typer.echo(f"{out}: {metadata.architecture} {metadata.variant} trained on {metadata.training_data}, "
               f"embedding {metadata.embedding_channels}x{metadata.embedding_parts} ({metadata.embedding_feature}), "
               f"model id {model_id(out)}")

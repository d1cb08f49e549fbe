"""The `gaitid` command line. Each command is a thin shell over a library function; heavy imports
(torch, transformers, uvicorn) happen inside the command so `gaitid --help` stays instant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="gaitid: identify people by the way they walk.", no_args_is_help=True)
models_app = typer.Typer(help="Person-segmentation and depth models (YOLO-seg, Depth Anything V2).")
app.add_typer(models_app, name="models")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config, e.g. model/configs/deepgaitv2_sil_casiab.yaml")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, logs")] = Path("runs/default"),
    resume: Annotated[bool, typer.Option(help="continue from the latest checkpoint in --out")] = True,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a config field: trainer.iterations=1000")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
):
    """Train a DepthGait / DeepGaitV2 model on OpenGait-layout silhouette (and depth) trees."""
    from model.train import run_training

    run_training(config, out, resume=resume, overrides=set_ or [], device=device)


@app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="checkpoint (.pt) or exported ONNX model")],
    dataset_root: Annotated[Path, typer.Argument(help="silhouette root in OpenGait layout")],
    protocol: Annotated[str, typer.Option(help="casia-b | ccpg | sustech1k")] = "casia-b",
    depth_root: Annotated[Optional[Path], typer.Option(help="depth tree for two-modality models")] = None,
    subjects: Annotated[Optional[str], typer.Option(help="subject range, e.g. 055-074")] = None,
    metric: Annotated[str, typer.Option(help="euclidean | cosine | both")] = "both",
    out: Annotated[Optional[Path], typer.Option(help="write <out>.md and <out>.json")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (checkpoints only)")] = "auto",
):
    """Evaluate a model with a dataset's protocol; prints a markdown table."""
    from model.evaluate import EvaluationError, run_evaluation

    try:
        run_evaluation(model, dataset_root, protocol=protocol, depth_root=depth_root, subjects=subjects,
                       metric=metric, out=out, device=device)
    except EvaluationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="training checkpoint (.pt)")],
    out: Annotated[Path, typer.Argument(help="output .onnx file")],
    fp16: Annotated[bool, typer.Option(help="store weights in float16 (inputs/outputs stay float32)")] = False,
    training_data: Annotated[str, typer.Option(help="recorded in the model metadata")] = "",
):
    """Export a checkpoint to ONNX (dynamic batch and frame axes, metadata inside, parity check)."""
    from model.export import export_onnx

    export_onnx(checkpoint, out, fp16=fp16, training_data=training_data)


@models_app.command("fetch")
def models_fetch(
    dest: Annotated[Optional[Path], typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Download official YOLO-seg and Depth Anything V2 Small weights and export them to ONNX."""
    from model.zoo import ModelZooError, fetch_models

    try:
        fetch_models(dest)
    except ModelZooError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@models_app.command("import")
def models_import(
    source: Annotated[Path, typer.Argument(help="folder with yolov8n-seg.pt and/or a Depth-Anything-V2-Small-hf folder")],
    dest: Annotated[Optional[Path], typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Offline: export weights you bring to ONNX and record their sha256 and provenance."""
    from model.zoo import ModelZooError, import_models

    try:
        import_models(source, dest)
    except ModelZooError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@models_app.command("list")
def models_list(
    dest: Annotated[Optional[Path], typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Show installed models and their provenance."""
    from model.zoo import ModelZooError, list_models

    try:
        list_models(dest)
    except ModelZooError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def prepare(
    video_root: Annotated[Path, typer.Argument(help="labelled RGB videos, CASIA-B naming SSS-CC-NN-VVV.avi")],
    out_root: Annotated[Path, typer.Argument(help="writes OUT/sil and OUT/depth in OpenGait layout")],
    pattern: Annotated[str, typer.Option(help="regex with groups subject, condition, view")] = "",
    workers: Annotated[int, typer.Option(help="parallel processes")] = 1,
    segmenter: Annotated[str, typer.Option(help="yolo | bgsub")] = "yolo",
    background: Annotated[Optional[Path], typer.Option(help="empty-scene clip for bgsub")] = None,
    depth: Annotated[bool, typer.Option(help="also compute the depth tree")] = True,
):
    """Turn labelled RGB footage into silhouette + depth trees for `gaitid train`. Resumable."""
    from model.prepare import prepare_dataset

    prepare_dataset(video_root, out_root, pattern=pattern or None, workers=workers,
                    segmenter=segmenter, background=background, with_depth=depth)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
):
    """Run the HTTP service (settings from GAITID_* environment variables)."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers)


if __name__ == "__main__":
    app()

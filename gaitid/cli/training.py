"""Commands of the training tooling (`model/`, needs the `train` extra): train, eval, export, prepare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gaitid.cli.errors import reported_errors


def train(
    config: Annotated[Path, typer.Argument(help="YAML config, e.g. model/configs/deepgaitv2_sil_casiab.yaml")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, logs")] = Path("runs/default"),
    resume: Annotated[bool, typer.Option(help="continue from the latest checkpoint in --out")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: trainer.iterations=1000")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    init_from: Annotated[Path | None, typer.Option(
        help="start from these weights: an OpenGait DeepGaitV2 checkpoint or one of ours (encoders, and the "
             "head where shapes match); ignored when resuming")] = None,
    init_encoders: Annotated[str | None, typer.Option(
        help="which encoders --init-from seeds, e.g. sils or sils,depths (default: all)")] = None,
    init_config: Annotated[Path | None, typer.Option(help="the OpenGait YAML of an --init-from checkpoint")] = None,
):
    """Train a DepthGait / DeepGaitV2 model on OpenGait-layout silhouette (and depth) trees."""
    from model.train import InitFrom, run_training

    init = None
    if init_from is not None:
        encoders = tuple(e.strip() for e in init_encoders.split(",")) if init_encoders else None
        init = InitFrom(init_from, encoders, init_config)
    with reported_errors():
        run_training(config, out, resume=resume, overrides=set_ or [], device=device, init=init)


def evaluate(
    model: Annotated[Path, typer.Argument(help="checkpoint (.pt) or exported ONNX model")],
    dataset_root: Annotated[Path, typer.Argument(help="silhouette root in OpenGait layout")],
    protocol: Annotated[str, typer.Option(help="casia-b | ccpg | sustech1k")] = "casia-b",
    depth_root: Annotated[Path | None, typer.Option(help="depth tree for two-modality models")] = None,
    subjects: Annotated[str | None, typer.Option(help="subject range, e.g. 055-074")] = None,
    metric: Annotated[str, typer.Option(help="euclidean | cosine | both")] = "both",
    out: Annotated[Path | None, typer.Option(help="write <out>.md and <out>.json")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (checkpoints only)")] = "auto",
):
    """Evaluate a model with a dataset's protocol; prints a markdown table."""
    from model.evaluation import run_evaluation

    with reported_errors():
        run_evaluation(model, dataset_root, protocol=protocol, depth_root=depth_root, subjects=subjects,
                       metric=metric, out=out, device=device)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="training checkpoint (.pt)")],
    out: Annotated[Path, typer.Argument(help="output .onnx file")],
    fp16: Annotated[bool, typer.Option(help="store weights in float16 (inputs/outputs stay as the contract says)")] = False,
    training_data: Annotated[str, typer.Option(help="recorded in the model metadata")] = "",
    feature: Annotated[str | None, typer.Option(
        help="what retrieval compares: pre-bnneck | bnneck (default: the checkpoint's config)")] = None,
):
    """Export a checkpoint to ONNX (dynamic batch and frame axes, metadata inside, parity check)."""
    from model.export import export_onnx

    with reported_errors():
        export_onnx(checkpoint, out, fp16=fp16, training_data=training_data, inference_feature=feature)


def prepare(
    video_root: Annotated[Path, typer.Argument(help="labelled RGB videos, CASIA-B naming SSS-CC-NN-VVV.avi")],
    out_root: Annotated[Path, typer.Argument(help="writes OUT/sil and OUT/depth in OpenGait layout")],
    pattern: Annotated[str, typer.Option(help="regex with groups subject, condition, view")] = "",
    workers: Annotated[int, typer.Option(help="parallel processes")] = 1,
    segmenter: Annotated[str, typer.Option(help="yolo | bgsub")] = "yolo",
    background: Annotated[Path | None, typer.Option(help="empty-scene clip for bgsub")] = None,
    depth: Annotated[bool, typer.Option(help="also compute the depth tree")] = True,
):
    """Turn labelled RGB footage into silhouette + depth trees for `gaitid train`. Resumable."""
    from model.prepare import prepare_dataset

    with reported_errors():
        report = prepare_dataset(video_root, out_root, pattern=pattern or None, workers=workers,
                                 segmenter=segmenter, background=background, with_depth=depth)
    typer.echo(report.summary())


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("eval")(evaluate)
    app.command()(export)
    app.command()(prepare)

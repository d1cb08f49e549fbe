"""The `gaitid` command line. Each command is a thin shell over a library function; heavy imports
(torch, transformers, uvicorn) happen inside the command so `gaitid --help` stays instant."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="gaitid: identify people by the way they walk.", no_args_is_help=True)
models_app = typer.Typer(help="Person-segmentation and depth models (YOLO-seg, Depth Anything V2).")
app.add_typer(models_app, name="models")

# The errors each part raises for bad input: a user gets one line on stderr, not a traceback. Looked
# up among the modules already imported (an error can only come from a module that was imported), so
# this costs no import.
_USER_ERRORS = {
    "model.evaluate": "EvaluationError",
    "model.zoo": "ModelZooError",
    "service.pipeline.errors": "PipelineError",
    "service.rescore.errors": "RescoreError",
    "gallery.errors": "GalleryError",
}


@contextmanager
def reported_errors(exit_code: int = 1) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        user_errors = tuple(getattr(sys.modules[m], name) for m, name in _USER_ERRORS.items() if m in sys.modules)
        if not isinstance(error, user_errors):
            raise
        typer.echo(f"error: {getattr(error, 'message', None) or error}", err=True)
        raise typer.Exit(exit_code) from None


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config, e.g. model/configs/deepgaitv2_sil_casiab.yaml")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, logs")] = Path("runs/default"),
    resume: Annotated[bool, typer.Option(help="continue from the latest checkpoint in --out")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: trainer.iterations=1000")] = None,
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
    depth_root: Annotated[Path | None, typer.Option(help="depth tree for two-modality models")] = None,
    subjects: Annotated[str | None, typer.Option(help="subject range, e.g. 055-074")] = None,
    metric: Annotated[str, typer.Option(help="euclidean | cosine | both")] = "both",
    out: Annotated[Path | None, typer.Option(help="write <out>.md and <out>.json")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (checkpoints only)")] = "auto",
):
    """Evaluate a model with a dataset's protocol; prints a markdown table."""
    from model.evaluate import run_evaluation

    with reported_errors():
        run_evaluation(model, dataset_root, protocol=protocol, depth_root=depth_root, subjects=subjects,
                       metric=metric, out=out, device=device)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="training checkpoint (.pt)")],
    out: Annotated[Path, typer.Argument(help="output .onnx file")],
    fp16: Annotated[bool, typer.Option(help="store weights in float16 (inputs/outputs stay float32)")] = False,
    training_data: Annotated[str, typer.Option(help="recorded in the model metadata")] = "",
):
    """Export a checkpoint to ONNX (dynamic batch and frame axes, metadata inside, parity check)."""
    from model.export import export_onnx

    with reported_errors():
        export_onnx(checkpoint, out, fp16=fp16, training_data=training_data)


@models_app.command("fetch")
def models_fetch(
    dest: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Download official YOLO-seg and Depth Anything V2 Small weights and export them to ONNX."""
    from model.zoo import fetch_models

    with reported_errors():
        fetch_models(dest)


@models_app.command("import")
def models_import(
    source: Annotated[Path, typer.Argument(help="folder with yolov8n-seg.pt and/or a Depth-Anything-V2-Small-hf folder")],
    dest: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Offline: export weights you bring to ONNX and record their sha256 and provenance."""
    from model.zoo import import_models

    with reported_errors():
        import_models(source, dest)


@models_app.command("list")
def models_list(
    dest: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/models")] = None,
):
    """Show installed models and their provenance."""
    from model.zoo import list_models

    with reported_errors():
        list_models(dest)


@app.command()
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


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
):
    """Run the HTTP service (settings from GAITID_* environment variables)."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers)


# -- batch re-scoring of archived footage (service/rescore) ------------------------------------


@app.command()
def rescore(
    archive: Annotated[Path, typer.Argument(help="folder of videos (walked recursively), a list file (one path a line), or one video")],
    out: Annotated[Path, typer.Option(help="results file: .jsonl, .csv or .parquet")] = Path("results.jsonl"),
    format_: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet (default: from --out)")] = None,
    state: Annotated[Path | None, typer.Option(help="resumable state (default: <out>.state.sqlite)")] = None,
    namespace: Annotated[str, typer.Option(help="gallery namespace to score against")] = "default",
    top_k: Annotated[int | None, typer.Option(help="subjects listed per track (default: GAITID_TOP_K)")] = None,
    threshold: Annotated[float | None, typer.Option(help="similarity below which a track is unknown (default: GAITID_UNKNOWN_THRESHOLD)")] = None,
    gallery_dir: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/gallery")] = None,
    model: Annotated[Path | None, typer.Option(help="embedding model .onnx (default: GAITID_EMBEDDING_MODEL)")] = None,
    segmenter: Annotated[str | None, typer.Option(help="auto | yolo | bgsub (default: GAITID_SEGMENTER)")] = None,
    background: Annotated[Path | None, typer.Option(help="empty-scene clip for bgsub (default: GAITID_BACKGROUND_CLIP)")] = None,
    path_pattern: Annotated[list[str] | None, typer.Option(help="regex with groups camera, date, time (or datetime) matched on each path; repeatable, first match wins")] = None,
    max_frames: Annotated[int | None, typer.Option(help="frames decoded per video, sampled evenly (default: GAITID_MAX_FRAMES)")] = None,
    max_duration: Annotated[float | None, typer.Option(help="longer videos are reported as clip_too_long (default: GAITID_MAX_DURATION_S)")] = None,
    workers: Annotated[int, typer.Option(help="decode/segment threads (0 = cores - 1)")] = 0,
    use_ray: Annotated[bool, typer.Option("--ray/--local", help="run on Ray Data instead of local threads")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: running instance or a new local one)")] = None,
    ray_actors: Annotated[int, typer.Option(help="Ray actors, each with its own pipeline")] = 2,
    ray_cpus: Annotated[float, typer.Option(help="CPUs per Ray actor")] = 1.0,
    ray_gpus: Annotated[float, typer.Option(help="GPUs per Ray actor (e.g. 0.25 to pack four on a GPU)")] = 0.0,
    force: Annotated[bool, typer.Option(help="process every video again, even those already done")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
):
    """Re-score archived footage: every person track of every video, against the gallery.

    Resumable: finished videos are kept in the state file; after a crash or Ctrl-C run the same command again.

    A re-run decodes only new or changed videos and re-scores the stored embeddings against the gallery as it is now.

    Camera and time come from paths like camA/2024-01-02/10-00-00.avi or cam7_20240104_083000.mp4 (--path-pattern).
    """
    from gallery import Gallery
    from service.rescore import (
        DEFAULT_PATH_PATTERNS,
        ArchiveError,
        ExtractorSpec,
        LocalRunner,
        RayRunner,
        RescoreOptions,
        run_rescore,
    )
    from service.rescore.store import default_state_path
    from service.settings import get_settings

    base = get_settings()
    # Paths given here are the caller's, relative to the working directory (settings resolve a relative
    # model path against the data folder).
    overrides = {"embedding_model": model and model.resolve(), "segmenter": segmenter,
                 "background_clip": background and background.resolve(),
                 "max_frames": max_frames, "max_duration_s": max_duration}
    settings = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    options = RescoreOptions(
        out=out, format=format_, state=state, namespace=namespace,
        top_k=top_k if top_k is not None else settings.top_k,
        threshold=threshold if threshold is not None else settings.unknown_threshold,
        path_patterns=tuple(path_pattern) if path_pattern else DEFAULT_PATH_PATTERNS,
        force=force, progress=progress, extraction_settings=_extraction_settings(settings),
    )
    try:
        with reported_errors(exit_code=2):
            if not archive.exists():  # before loading any model
                raise ArchiveError(f"the archive {archive} does not exist (give a folder, a list file or a video)")
            spec = ExtractorSpec(settings, background=settings.background_clip)
            if use_ray:
                runner = RayRunner(spec, spec.model_id(), actors=ray_actors, num_cpus=ray_cpus, num_gpus=ray_gpus,
                                   address=ray_address)
            else:
                runner = LocalRunner(spec.build(), workers=workers or None)
            with Gallery(gallery_dir or settings.gallery_dir, threshold=options.threshold) as gallery:
                summary = run_rescore(archive, options, runner, gallery)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished videos are saved in {state or default_state_path(out)}; "
                   "run the same command again to go on", err=True)
        raise typer.Exit(130) from None
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(summary.line())


def _extraction_settings(settings) -> dict:
    """The settings that change what a video's tracks are (see service.rescore.job)."""
    fields = ("segmenter", "yolo_model", "yolo_imgsz", "depth_model", "depth_input", "depth_size", "max_frames",
              "max_duration_s", "max_side", "min_track_frames", "min_person_height", "background_clip")
    return {name: str(getattr(settings, name)) for name in fields}


@app.command("rescore-report")
def rescore_report(
    results: Annotated[Path, typer.Argument(help="results of `gaitid rescore` (.jsonl, .csv or .parquet)")],
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("report.html"),
    state: Annotated[Path | None, typer.Option(help="state file with the thumbnails (default: <results>.state.sqlite)")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet (default: from the name)")] = None,
    unknown_limit: Annotated[int, typer.Option(help="unknown tracks listed at most")] = 100,
):
    """A self-contained HTML page: per subject, where and when they were seen, with track thumbnails."""
    from service.rescore import build_report

    with reported_errors(exit_code=2):
        report = build_report(results, out, state=state, fmt=format_, unknown_limit=unknown_limit)
    typer.echo(f"{report.out}: {report.subjects} subjects, {report.sightings} sightings, {report.unknown} unknown "
               f"tracks, {report.errors} videos without a track")


# -- the gallery ----------------------------------------------------------------------------------


@app.command()
def calibrate(
    source: Annotated[Path, typer.Argument(help=".npz of labelled embeddings (embeddings, labels, [gallery]), "
                                                "or an embedding model (.onnx/.pt) to run over DATASET_ROOT")],
    dataset_root: Annotated[Path | None, typer.Argument(help="labelled silhouettes (OpenGait layout)")] = None,
    subjects: Annotated[str | None, typer.Option(help="subjects to use, e.g. 055-074 (never training ones)")] = None,
    enrolled_fraction: Annotated[float, typer.Option(help="share of subjects enrolled; the rest are strangers")] = 0.5,
    target_far: Annotated[float, typer.Option(help="false-accept rate to pick the threshold for")] = 0.01,
    rows: Annotated[int, typer.Option(help="rows of the FAR/FRR table")] = 11,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the summary as JSON")] = None,
    save_embeddings: Annotated[Path | None, typer.Option(help="keep the dataset's embeddings as .npz")] = None,
):
    """False-accept / false-reject rates over thresholds, and the open-set threshold (GAITID_UNKNOWN_THRESHOLD)
    at a target false-accept rate."""
    import json

    from gallery.calibration import calibrate_file, format_report

    with reported_errors(exit_code=2):
        if source.suffix == ".npz":
            report = calibrate_file(source, target_far=target_far)
        else:
            if dataset_root is None:
                raise typer.BadParameter("a model needs DATASET_ROOT to run over")
            from model.calibrate import calibrate_on_dataset

            report = calibrate_on_dataset(source, dataset_root, subjects, enrolled_fraction=enrolled_fraction,
                                          target_far=target_far, save_embeddings=save_embeddings)
    typer.echo(format_report(report, target_far, rows))
    if json_out is not None:
        json_out.write_text(json.dumps(report.summary(), indent=2))


@app.command()
def reembed(
    model: Annotated[Path, typer.Argument(help="the new embedding model (.onnx exported by `gaitid export`)")],
    namespace: Annotated[str, typer.Option(help="gallery namespace (one per API key)")] = "default",
    gallery_dir: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/gallery")] = None,
):
    """Re-embed every enrolled sequence with a new model (from the stored aligned sequences: no footage
    needed). Interrupted runs resume; the gallery switches models in one step at the end."""
    from tqdm import tqdm

    from gallery import Gallery
    from service.pipeline.embed import GaitEmbedder
    from service.settings import get_settings

    settings = get_settings()
    embedder = GaitEmbedder(model, providers=settings.providers, threads=settings.threads)
    with reported_errors(exit_code=2), Gallery(gallery_dir or settings.gallery_dir) as gallery:
        bar = tqdm(desc="re-embedding", unit="seq")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        report = gallery.reembed(embedder.embed, model_id=embedder.model_id, namespace=namespace, progress=progress)
        bar.close()
    typer.echo(report)


if __name__ == "__main__":
    app()

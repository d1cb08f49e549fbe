"""Commands on the gallery: calibrate its open-set threshold, re-embed it with a new model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gaitid.cli.errors import reported_errors


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
    det: Annotated[Path | None, typer.Option(help="draw the DET curve (FNIR against FPIR) into this PNG")] = None,
    write_threshold: Annotated[bool, typer.Option(
        help="store the threshold at --target-far in the ONNX model, the service's default (changes its model id)")] = False,
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
    if det is not None:
        from gallery.det_plot import write_det_plot

        with reported_errors(exit_code=2):
            typer.echo(f"DET curve: {write_det_plot(report, det, title=f'DET: {source.name}')}")
    if write_threshold:
        if source.suffix == ".npz" or dataset_root is None:
            raise typer.BadParameter("--write-threshold needs a model (.onnx) and DATASET_ROOT")
        from model.calibrate import write_threshold as store_threshold

        with reported_errors(exit_code=2):
            value = store_threshold(source, report, dataset=f"{dataset_root} subjects {subjects or 'all'}")
        typer.echo(f"wrote open_set_threshold {value} into {source}")


def reembed(
    model: Annotated[Path, typer.Argument(help="the new embedding model (.onnx exported by `gaitid export`)")],
    namespace: Annotated[str, typer.Option(help="the gallery (namespace) to re-embed")] = "default",
    gallery_dir: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/gallery")] = None,
):
    """Re-embed every enrolled sequence with a new model (from the stored aligned sequences: no footage
    needed). Interrupted runs resume; the gallery switches models in one step at the end, audited as
    cli:USER. (A running service re-embeds a gallery with POST /gallery/reembed.)"""
    import getpass

    from gaitid.progress import progress_bar
    from gallery import AuditContext
    from service.pipeline.embed import OnnxEmbedder
    from service.settings import get_settings

    settings = get_settings()
    with reported_errors(exit_code=2):
        embedder = OnnxEmbedder(model, providers=settings.pipeline.providers, threads=settings.pipeline.threads)
        with settings.gallery.open_gallery(gallery_dir, similarity=embedder.metadata.similarity) as gallery:
            bar = progress_bar(desc="re-embedding", unit="seq")

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)  # update, not refresh: a log gets a line every few seconds

            report = gallery.reembed(embedder, namespace=namespace, progress=progress,
                                     audit_context=AuditContext(f"cli:{getpass.getuser()}"))
            bar.close()
    typer.echo(report)


def register(app: typer.Typer) -> None:
    app.command()(calibrate)
    app.command()(reembed)

"""`gaitid rescore` (archived footage -> every person track scored against the gallery; see
service/rescore), `gaitid rescore-report` (its HTML page) and `gaitid rescore-redact` (an erased
subject taken out of a state's results and reports: DELETE /subjects/{id} does it for the state the
service knows, GAITID_RESCORE_STATE; this is for the others).

The command's many options become one typed `RescoreCommand` as soon as they are parsed; what to
run is decided from it: the pipeline settings it overrides, the job's options, the runner.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel, ConfigDict

from gaitid.cli.errors import reported_errors

if TYPE_CHECKING:
    from service.pipeline.config import PipelineSettings
    from service.pipeline.types import ClipOverrides
    from service.rescore import RescoreOptions
    from service.rescore.job import Runner
    from service.settings import Settings


class RayOptions(BaseModel):
    """Where and how wide re-scoring runs on Ray Data."""

    model_config = ConfigDict(frozen=True)

    address: str | None = None  # None: the running instance, else a new local one
    actors: int = 2
    cpus: float = 1.0  # per actor
    gpus: float = 0.0  # per actor (0.25 packs four on a GPU)


class RescoreCommand(BaseModel):
    """Everything `gaitid rescore` was asked to do. None means "the setting's value" (GAITID_*)."""

    model_config = ConfigDict(frozen=True)

    archive: Path
    out: Path = Path("results.jsonl")
    format: str | None = None
    state: Path | None = None
    namespace: str = "default"
    top_k: int | None = None
    threshold: float | None = None
    gallery_dir: Path | None = None
    # Overrides of the pipeline's settings.
    model: Path | None = None
    segmenter: str | None = None
    background: Path | None = None
    max_frames: int | None = None
    max_duration: float | None = None
    path_patterns: tuple[str, ...] = ()  # empty: service.rescore.DEFAULT_PATH_PATTERNS
    cameras: tuple[str, ...] = ()  # FOLDER=CAMERA_ID (service.rescore.sources.CameraMap)
    camera_file: Path | None = None  # a file of FOLDER=CAMERA_ID lines
    workers: int = 0  # local decode/segment threads; 0 = one per core
    ray: RayOptions | None = None  # None: local threads
    force: bool = False
    progress: bool = True

    def pipeline_settings(self, base: PipelineSettings) -> PipelineSettings:
        """`base` with this command's overrides. Paths given on the command line are the caller's,
        relative to the working directory (settings resolve a relative model path against the data folder)."""
        overrides = {"embedding_model": self.model and self.model.resolve(), "segmenter": self.segmenter,
                     "background_clip": self.background and self.background.resolve(),
                     "max_frames": self.max_frames, "max_duration_s": self.max_duration}
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def rescore_options(self, settings: Settings, pipeline: PipelineSettings) -> RescoreOptions:
        from gaitid.contract import read_metadata
        from service.rescore import DEFAULT_PATH_PATTERNS, RescoreOptions

        overrides = self.camera_overrides(settings)
        fingerprint = pipeline.extraction_fingerprint()
        if overrides:  # the cameras' settings change what is extracted too
            fingerprint = {**fingerprint, "cameras": json.dumps(
                {c: dataclasses.asdict(o) for c, o in sorted(overrides.items())}, sort_keys=True, default=str)}
        return RescoreOptions(
            out=self.out, format=self.format, state=self.state, namespace=self.namespace,
            top_k=self.top_k if self.top_k is not None else settings.gallery.top_k,
            threshold=self.threshold if self.threshold is not None else settings.gallery.decision_threshold(
                lambda: read_metadata(pipeline.embedding_path))[0],
            path_patterns=self.path_patterns or DEFAULT_PATH_PATTERNS,
            force=self.force, progress=self.progress, extraction_settings=fingerprint,
            cameras=self.camera_entries(), camera_overrides=overrides,
        )

    def camera_overrides(self, settings: Settings) -> dict[str, ClipOverrides]:
        """The processing settings of each camera configured for the namespace's gallery in the
        service's data dir (PUT /cameras/{id}): rotation, background clip, region of interest."""
        from service.cameras import CameraRegistry, cameras_dir

        registry = CameraRegistry(cameras_dir(settings.gallery.data_dir))
        return {c.camera_id: registry.overrides(self.namespace, c.camera_id) for c in registry.list(self.namespace)}

    def camera_entries(self) -> tuple[str, ...]:
        """The mapping file's FOLDER=CAMERA_ID lines, then the options' (a later entry for a folder wins)."""
        from service.rescore.sources import CameraMap

        return (*(CameraMap.read(self.camera_file) if self.camera_file else ()), *self.cameras)

    def runner(self, pipeline: PipelineSettings) -> Runner:
        from service.rescore import ExtractorSpec, LocalRunner, RayRunner

        spec = ExtractorSpec(pipeline)
        if self.ray is not None:
            return RayRunner(spec, spec.model_id(), actors=self.ray.actors, num_cpus=self.ray.cpus,
                             num_gpus=self.ray.gpus, address=self.ray.address)
        return LocalRunner(spec.build(), workers=self.workers or None)

    def state_path(self) -> Path:
        from service.rescore.store import default_state_path

        return self.state or default_state_path(self.out)


def run(command: RescoreCommand) -> None:
    """Run a parsed `gaitid rescore`."""
    from service.rescore import ArchiveError, run_rescore
    from service.settings import get_settings

    settings = get_settings()
    pipeline = command.pipeline_settings(settings.pipeline)
    try:
        with reported_errors(exit_code=2):
            options = command.rescore_options(settings, pipeline)
            if not command.archive.exists():  # before loading any model
                raise ArchiveError(f"the archive {command.archive} does not exist (give a folder, a list file or a video)")
            runner = command.runner(pipeline)
            with settings.gallery.open_gallery(command.gallery_dir, threshold=options.threshold) as gallery:
                summary = run_rescore(command.archive, options, runner, gallery)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished videos are saved in {command.state_path()}; "
                   "run the same command again to go on", err=True)
        raise typer.Exit(130) from None
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(summary.line())


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
    camera: Annotated[list[str] | None, typer.Option(help="FOLDER=CAMERA_ID: videos under FOLDER (relative to the archive) are that camera's; repeatable, the deepest folder wins over the path's camera")] = None,
    cameras_file: Annotated[Path | None, typer.Option(help="a file of FOLDER=CAMERA_ID lines (like --camera)")] = None,
    max_frames: Annotated[int | None, typer.Option(help="frames decoded per video, sampled evenly (default: GAITID_MAX_FRAMES)")] = None,
    max_duration: Annotated[float | None, typer.Option(help="longer videos are reported as clip_too_long (default: GAITID_MAX_DURATION_S)")] = None,
    workers: Annotated[int, typer.Option(help="decode/segment threads (0 = one per core)")] = 0,
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

    Camera and time come from paths like camA/2024-01-02/10-00-00.avi or cam7_20240104_083000.mp4 (--path-pattern);
    --camera maps folders to cameras; without a time in the path, the container's creation time, else the file's time.
    """
    run(RescoreCommand(
        archive=archive, out=out, format=format_, state=state, namespace=namespace, top_k=top_k,
        threshold=threshold, gallery_dir=gallery_dir, model=model, segmenter=segmenter, background=background,
        max_frames=max_frames, max_duration=max_duration, path_patterns=tuple(path_pattern or ()),
        cameras=tuple(camera or ()), camera_file=cameras_file,
        workers=workers, force=force, progress=progress,
        ray=RayOptions(address=ray_address, actors=ray_actors, cpus=ray_cpus, gpus=ray_gpus) if use_ray else None,
    ))


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


def rescore_redact(
    subject: Annotated[str, typer.Argument(help="the erased subject's id, exactly as stored")],
    state: Annotated[Path, typer.Option(help="a re-scoring state file, or the folder holding its state(s) and results")],
    namespace: Annotated[str, typer.Option(help="gallery namespace the subject was enrolled in")] = "default",
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
):
    """Take a subject out of a re-scoring state's results and reports (after erasing them from the gallery).

    Their matches become unknown (marked `redacted`), their candidate entries are dropped, and reports built
    with the state are built again. Each file is replaced atomically; running it again is harmless.
    """
    from gaitid.progress import progress_bar
    from service.rescore import StateError, redact_subject

    with reported_errors(exit_code=2):
        if not state.exists():
            raise StateError(f"the re-scoring state {state} does not exist")
        bar = progress_bar(unit="record", desc="redact", disable=not progress)
        try:
            summary = redact_subject(state, subject, namespace=namespace, progress=bar.update)
        finally:
            bar.close()
    typer.echo(summary.line())
    for path in [*summary.files, *summary.reports]:
        typer.echo(f"  rewritten: {path}")


def register(app: typer.Typer) -> None:
    app.command()(rescore)
    app.command("rescore-report")(rescore_report)
    app.command("rescore-redact")(rescore_redact)

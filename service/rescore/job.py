"""`run_rescore`: an archive in, a results file out; resumable, idempotent, local or on Ray.

    list the archive -> skip files whose content (sha256) is done with this embedding model
      -> extract the rest with a runner (LocalRunner: threads; RayRunner: Ray Data actors),
         committing each file to the state as it finishes
      -> record each listed video's camera and start time (service.rescore.sources) in the state
      -> rewrite the results file from the state, every stored track scored against the gallery now

Re-runs: unchanged files are skipped without decoding (their hash is cached by size and mtime);
when only the gallery changed, every record is re-scored from the stored embeddings; when the
embedding model changed, files are processed again (the state is keyed by model id too).
Failed files (unreadable, unexpected errors) are retried; corrupt videos are not.

Settings that change what extraction produces (segmenter, limits, tracker, background clip) are
not part of the key: the state remembers the ones its files were made with and the summary warns
when they differ; pass force=True to process everything again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gaitid.progress import progress_bar
from service.pipeline.types import ClipOverrides
from service.rescore.archive import (
    DEFAULT_PATH_PATTERNS,
    VIDEO_EXTENSIONS,
    FileStat,
    PathInfo,
    PathParser,
    list_archive,
)
from service.rescore.errors import OptionError
from service.rescore.extract import FileJob, FileOutcome
from service.rescore.local import Sink
from service.rescore.results import GalleryScorer, build_records, results_format, write_results
from service.rescore.sources import (
    CameraMap,
    ContainerFacts,
    SourceFacts,
    camera_for,
    probe_container,
    recording_start,
)
from service.rescore.store import RescoreState, default_state_path

log = logging.getLogger("gaitid.rescore")


class Runner(Protocol):
    model_id: str

    def run(self, jobs: list[FileJob], done: set[str], sink: Sink) -> None: ...


@dataclass(frozen=True)
class RescoreOptions:
    out: Path
    format: str | None = None  # jsonl | csv | parquet; None: from the file name
    state: Path | None = None  # default: <out>.state.sqlite
    namespace: str = "default"
    top_k: int = 5
    threshold: float | None = None  # None: the gallery's
    path_patterns: tuple[str, ...] = DEFAULT_PATH_PATTERNS
    extensions: frozenset[str] = VIDEO_EXTENSIONS
    force: bool = False  # process every file again, even those done
    progress: bool = True  # tqdm bar on stderr
    extraction_settings: Mapping[str, Any] | None = None  # what the files are extracted with (see module doc)
    # FOLDER=CAMERA_ID entries (service.rescore.sources.CameraMap); relative folders are the archive's.
    cameras: tuple[str, ...] = ()
    # camera id -> its processing settings (service.cameras: rotation, background clip, region of
    # interest) for the videos of that camera; other videos get the server's.
    camera_overrides: Mapping[str, ClipOverrides] | None = None


@dataclass
class RescoreSummary:
    files: int = 0  # videos listed
    processed: int = 0  # decoded in this run
    skipped: int = 0  # done before (or a copy of a video done in this run)
    failed: int = 0  # this run's transient failures, retried next time
    pending: int = 0  # listed but not finished (the run stopped early)
    tracks: int = 0  # track records written
    matches: int = 0
    error_records: int = 0  # videos without a track (corrupt, nobody walking...)
    frames: int = 0  # frames decoded in this run
    new_tracks: int = 0  # tracks extracted in this run
    seconds: float = 0.0
    out: Path | None = None
    state: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = f", {self.processed / self.seconds:.2f} files/s, {self.frames / self.seconds:.1f} frames/s" \
            if self.seconds > 0 and self.processed else ""
        return (f"{self.files} videos: {self.processed} processed, {self.skipped} already done, {self.failed} failed "
                f"(retried next run), {self.pending} pending; {self.tracks} tracks ({self.matches} matched), "
                f"{self.error_records} videos without a track; {self.seconds:.1f} s{rate} -> {self.out}")


def run_rescore(archive: str | Path, options: RescoreOptions, runner: Runner, gallery: Any) -> RescoreSummary:
    """Re-score every video of `archive` against `gallery` (an open `gallery.Gallery`)."""
    started = time.perf_counter()
    if options.top_k < 1:
        raise OptionError("--top-k must be at least 1")
    fmt = results_format(options.out, options.format)
    paths = [str(p) for p in list_archive(archive, options.extensions)]
    parser = PathParser(options.path_patterns)
    archive_folder = Path(archive) if Path(archive).is_dir() else Path(archive).parent
    cameras = CameraMap.parse(options.cameras, base=archive_folder)
    infos = {path: parser.parse(path) for path in paths}
    model_id = runner.model_id
    GalleryScorer(gallery, namespace=options.namespace, top_k=options.top_k,
                  threshold=options.threshold).check_model(model_id)
    summary = RescoreSummary(files=len(paths), out=Path(options.out),
                             state=Path(options.state or default_state_path(options.out)))
    with RescoreState(summary.state) as state:
        _check_extraction_settings(state, model_id, options, summary)
        state.note_results(options.out, fmt)  # erasing a subject redacts it (service.rescore.redact)
        known = state.cached_hashes(paths)
        done = set() if options.force else state.done_hashes(model_id)
        overrides = camera_overrides(paths, infos, cameras, options.camera_overrides or {})
        jobs = [FileJob(p, known.get(p), overrides.get(p)) for p in paths
                if options.force or known.get(p) not in done]
        summary.skipped = len(paths) - len(jobs)
        run_failures: dict[str, FileOutcome] = {}
        finished: set[str] = set()
        bar = progress_bar(total=len(jobs), unit="file", desc="rescore", disable=not options.progress)

        def sink(outcome: FileOutcome) -> None:
            state.save(outcome)
            finished.add(outcome.path)
            if outcome.status == "skipped":
                summary.skipped += 1
            else:
                summary.processed += 1
                summary.frames += outcome.frame_count
            if outcome.status == "failed":
                summary.failed += 1
                if outcome.sha256 is None:
                    run_failures[outcome.path] = outcome
            summary.new_tracks += len(outcome.tracks)
            bar.set_postfix(tracks=summary.new_tracks, frames_s=f"{summary.frames / max(bar.format_dict['elapsed'], 1e-9):.1f}",
                            refresh=False)
            bar.update(1)

        def finalize() -> None:
            bar.close()
            summary.pending = len(jobs) - len(finished)
            summary.seconds = time.perf_counter() - started
            sources = record_sources(paths, state, infos, cameras)
            _write(paths, state, model_id, options, sources, run_failures, fmt, summary, gallery)

        try:
            runner.run(jobs, done, sink)
        except BaseException:
            # Stopping early: the results still show everything finished so far.
            try:
                finalize()
            except Exception:  # report the error that stopped the run, not this one
                log.exception("could not write the results while stopping")
            raise
        finalize()
    summary.seconds = time.perf_counter() - started
    return summary


def camera_overrides(paths: list[str], infos: Mapping[str, PathInfo], cameras: CameraMap,
                     by_camera: Mapping[str, ClipOverrides]) -> dict[str, ClipOverrides]:
    """path -> the processing settings of its camera (by the rule of service.rescore.sources), for
    the videos whose camera has some. `infos`: what each path says (PathParser.parse)."""
    if not by_camera:
        return {}
    found = {}
    for path in paths:
        camera = camera_for(cameras, path, infos[path])
        if camera in by_camera:
            found[path] = by_camera[camera]
    return found


def record_sources(paths: list[str], state: RescoreState, infos: Mapping[str, PathInfo],
                   cameras: CameraMap) -> dict[str, SourceFacts]:
    """Camera and start time of every listed video (service.rescore.sources), kept in the state for
    sightings; `infos`: what each path says (PathParser.parse). Container headers are read once per
    content, and only when the path has no time; the file is stat'ed only when its container has no
    creation time either (its mtime is then the only clue)."""
    hashes = state.path_hashes(paths)
    untimed = {hashes[p]: p for p in paths if infos[p].recorded_at is None and p in hashes}
    containers = state.container_facts(untimed)
    probed = {sha: probe_container(path) for sha, path in untimed.items() if sha not in containers}
    if probed:
        state.save_container_facts(probed)
    containers.update(probed)
    sources = {}
    for path in paths:
        sha, info = hashes.get(path), infos[path]
        container = containers.get(sha) if sha else None
        start, time_source = recording_start(info, container, _mtime_ns(path, info, container))
        sources[path] = SourceFacts(path, sha, camera_for(cameras, path, info), start, time_source)
    state.replace_sources(sources.values())
    return sources


def _mtime_ns(path: str, info: PathInfo, container: ContainerFacts | None) -> int | None:
    """The file's mtime when `recording_start` needs it (no time in the path nor the container)."""
    if info.recorded_at is not None or (container is not None and container.creation_time is not None):
        return None
    try:
        return FileStat.of(Path(path)).mtime_ns
    except OSError:
        return None


def _write(paths: list[str], state: RescoreState, model_id: str, options: RescoreOptions,
           sources: dict[str, SourceFacts], run_failures: dict[str, FileOutcome], fmt: str, summary: RescoreSummary, gallery: Any) -> None:
    """Rewrite the results file from the state, scored against the gallery as it is now."""
    scorer = GalleryScorer(gallery, namespace=options.namespace, top_k=options.top_k, threshold=options.threshold)

    def counted(records):
        for record in records:
            if record["decision"] == "error":
                summary.error_records += 1
            else:
                summary.tracks += 1
                summary.matches += record["decision"] == "match"
            yield record

    write_results(options.out, counted(build_records(paths, state, model_id, scorer, sources, run_failures)),
                  fmt)  # type: ignore[arg-type]


def _check_extraction_settings(state: RescoreState, model_id: str, options: RescoreOptions,
                               summary: RescoreSummary) -> None:
    if options.extraction_settings is None:
        return
    key = f"extraction:{model_id}"
    current = json.dumps(dict(options.extraction_settings), sort_keys=True, default=str)
    stored = state.get_meta(key)
    if stored is not None and stored != current and not options.force:
        summary.warnings.append(
            "files processed by earlier runs were extracted with other settings "
            f"(earlier {stored}, now {current}); their results are kept: pass --force to process them again")
        return
    state.set_meta(key, current)

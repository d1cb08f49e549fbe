"""Labelled RGB walking videos -> silhouette and depth trees for training (`gaitid prepare`).

Each clip goes through the serving pipeline (decode, segment, track, depth, align), so training data
is made exactly the way the service will see people. Output, in OpenGait's layout:

    OUT/sil/SSS/CC/VVV/VVV.pkl     (T, 64, 64) uint8 silhouettes, 0/255
    OUT/depth/SSS/CC/VVV/VVV.pkl   (T, 64, 64) uint8 disparity x 255, 0 outside the silhouette

Both trees hold the same frames in the same order. 64x64 like the CASIA-B pkl files: training trims
10 px each side at load time (model.dataset.trim_to_network_width).

Labels come from the file names. The default is CASIA-B's `SSS-CC-NN-VVV.avi` (001-nm-01-090.avi).
For other layouts pass `pattern`: a regular expression with the named groups `subject`, `condition`
and `view`, searched in each video's path relative to `video_root` (with `/` separators, so the
groups may come from folder names), e.g. for ROOT/<subject>/<condition>/<view>.mp4:

    (?P<subject>[^/]+)/(?P<condition>[^/]+)/(?P<view>[^/.]+)\\.mp4$

Videos that do not match (such as an empty-scene clip) are skipped. When a clip holds several
tracks, the longest is the labelled walker.

Resumable: a sequence whose output files exist is skipped, and every file is written atomically, so
an interrupted run simply continues. Parallel over clips with worker processes, each with its own
models.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from gaitid.progress import progress_bar
from model.dataset import CASIA_B_NAME, save_sequence
from service.pipeline.config import PipelineSettings
from service.pipeline.errors import PipelineError
from service.pipeline.pipeline import ClipPipeline, build_pipeline

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
_LABEL_GROUPS = ("subject", "condition", "view")
# A dataset keeps every frame of a walk: generous limits instead of the service's upload limits.
_DATASET_MAX_FRAMES = 100_000
_DATASET_MAX_DURATION_S = 3_600.0


@dataclass(frozen=True)
class LabelledVideo:
    path: Path
    subject: str
    condition: str
    view: str

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.condition}/{self.view}"


@dataclass
class PrepareReport:
    written: list[str] = field(default_factory=list)  # sequence keys written in this run
    skipped: list[str] = field(default_factory=list)  # already done by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # key -> why
    unlabelled: list[Path] = field(default_factory=list)  # videos the pattern did not match

    def summary(self) -> str:
        return (f"{len(self.written)} written, {len(self.skipped)} already done, {len(self.failed)} failed, "
                f"{len(self.unlabelled)} unlabelled videos ignored")


def prepare_dataset(
    video_root: str | Path,
    out_root: str | Path,
    pattern: str | None = None,
    workers: int = 1,
    segmenter: str = "yolo",
    background: str | Path | None = None,
    with_depth: bool = True,
    settings: PipelineSettings | None = None,
) -> PrepareReport:
    """Write OUT/sil (and OUT/depth) for every labelled video under video_root; see the module doc.

    segmenter: "yolo" | "bgsub" | "auto". background: the empty-scene clip for "bgsub".
    settings: models and runtime options (default: from the environment, GAITID_*).
    """
    video_root, out_root = Path(video_root), Path(out_root)
    if not video_root.is_dir():
        raise FileNotFoundError(f"no video folder at {video_root}")
    settings = _dataset_settings(settings or PipelineSettings(), segmenter)
    videos, unlabelled = find_labelled_videos(video_root, compile_pattern(pattern), exclude=background)
    report = PrepareReport(unlabelled=unlabelled)
    todo = []
    for video in videos:
        if _is_done(out_root, video, with_depth):
            report.skipped.append(video.key)
        else:
            todo.append(video)
    _check_unique_labels(videos)
    if todo:
        # Build one pipeline here first: a missing model fails now, once, not in every worker.
        pipeline = _make_pipeline(settings, background, with_depth)
        if workers <= 1:
            results = (_prepare_one(pipeline, video, out_root, with_depth) for video in todo)
            _collect(results, len(todo), report)
        else:
            del pipeline
            _run_parallel(todo, out_root, settings, background, with_depth, workers, report)
    log.info("prepare: %s", report.summary())
    tqdm.write(f"prepare: {report.summary()}")
    for key, reason in sorted(report.failed.items()):
        tqdm.write(f"  failed {key}: {reason}")
    return report


def compile_pattern(pattern: str | None) -> re.Pattern[str]:
    regex = re.compile(pattern) if pattern else CASIA_B_NAME
    missing = [g for g in _LABEL_GROUPS if g not in regex.groupindex]
    if missing:
        raise ValueError(f"pattern {regex.pattern!r} lacks the named group(s) {', '.join(missing)}")
    return regex


def find_labelled_videos(
    video_root: Path, regex: re.Pattern[str], exclude: str | Path | None = None
) -> tuple[list[LabelledVideo], list[Path]]:
    """(labelled videos sorted by path, videos the pattern does not match)."""
    excluded = Path(exclude).resolve() if exclude else None
    labelled, unlabelled = [], []
    for path in sorted(p for p in video_root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        if excluded is not None and path.resolve() == excluded:
            continue
        match = regex.search(path.relative_to(video_root).as_posix())
        if match is None:
            unlabelled.append(path)
            continue
        labelled.append(LabelledVideo(path, match["subject"], match["condition"], match["view"]))
    return labelled, unlabelled


def _check_unique_labels(videos: list[LabelledVideo]) -> None:
    seen: dict[str, Path] = {}
    for video in videos:
        if video.key in seen:
            raise ValueError(f"{video.path} and {seen[video.key]} both map to {video.key}: fix the pattern")
        seen[video.key] = video.path


def _dataset_settings(settings: PipelineSettings, segmenter: str) -> PipelineSettings:
    if segmenter not in ("yolo", "bgsub", "auto"):
        raise ValueError(f"unknown segmenter {segmenter!r}: use yolo, bgsub or auto")
    return settings.model_copy(update={
        "segmenter": segmenter,
        "max_frames": _DATASET_MAX_FRAMES,
        "max_duration_s": _DATASET_MAX_DURATION_S,
    })


def _make_pipeline(settings: PipelineSettings, background: str | Path | None, with_depth: bool) -> ClipPipeline:
    config = replace(settings.pipeline_config(), full_width=True)
    return build_pipeline(settings, with_depth=with_depth, background=background, config=config)


def _output_paths(out_root: Path, video: LabelledVideo) -> tuple[Path, Path]:
    rel = Path(video.subject) / video.condition / video.view / f"{video.view}.pkl"
    return out_root / "sil" / rel, out_root / "depth" / rel


def _is_done(out_root: Path, video: LabelledVideo, with_depth: bool) -> bool:
    sil, depth = _output_paths(out_root, video)
    return sil.exists() and (depth.exists() or not with_depth)


def _prepare_one(pipeline: ClipPipeline, video: LabelledVideo, out_root: Path, with_depth: bool) -> tuple[str, str | None]:
    """(key, None) when written, (key, reason) when the clip could not be used."""
    try:
        result = pipeline.process(video.path)
    except PipelineError as exc:
        return video.key, exc.message
    except Exception as exc:  # one odd clip must not end a long run; the log keeps the traceback
        log.exception("prepare: %s failed", video.path)
        return video.key, f"{type(exc).__name__}: {exc}"
    sequence = result.sequences[0]  # longest track: the labelled walker
    if with_depth:
        if sequence.depth is None:
            return video.key, "no depth was computed"
        depth = sequence.depth  # uint8 already: gaitid.contract.quantise_depth
        save_sequence(out_root / "depth", video.subject, video.condition, video.view, depth)
    # The silhouette file last: its presence (with the depth file) marks the sequence done.
    save_sequence(out_root / "sil", video.subject, video.condition, video.view, sequence.silhouettes)
    return video.key, None


def _collect(results: Iterator[tuple[str, str | None]], total: int, report: PrepareReport) -> None:
    for key, failure in progress_bar(results, total=total, desc="prepare", unit="clip"):
        if failure is None:
            report.written.append(key)
        else:
            report.failed[key] = failure


# Per-process pipeline of the worker pool (models load once per worker, not once per clip).
_WORKER_PIPELINE: ClipPipeline | None = None


def _init_worker(settings: PipelineSettings, background: str | Path | None, with_depth: bool) -> None:
    global _WORKER_PIPELINE
    _WORKER_PIPELINE = _make_pipeline(settings, background, with_depth)


def _work(video: LabelledVideo, out_root: Path, with_depth: bool) -> tuple[str, str | None]:
    assert _WORKER_PIPELINE is not None, "worker not initialised"
    return _prepare_one(_WORKER_PIPELINE, video, out_root, with_depth)


def _run_parallel(todo, out_root, settings, background, with_depth, workers, report) -> None:
    # spawn, not fork: ONNX Runtime's thread pools do not survive a fork safely.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(settings, background, with_depth),
    ) as pool:
        futures = [pool.submit(_work, video, out_root, with_depth) for video in todo]
        _collect((f.result() for f in as_completed(futures)), len(futures), report)

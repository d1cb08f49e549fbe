"""Batch re-scoring of archived footage: every person track of every video, scored against the gallery.

    from service.rescore import ExtractorSpec, LocalRunner, RescoreOptions, run_rescore
    runner = LocalRunner(ExtractorSpec(pipeline_settings).build(), workers=3)
    summary = run_rescore("archive/", RescoreOptions(out=Path("results.jsonl")), runner, gallery)

Modules: archive (listing, camera/time from paths, file stats), sources (each video's camera and
start time: folder mapping, path, container tag, mtime), extract (one video -> tracks with
embeddings and pictures), store (the resumable SQLite state), local (threads) and ray_runner (Ray
Data) runners, results (records, scoring, JSONL/CSV/Parquet), job (run_rescore), report (HTML),
sightings (where and when an enrolled subject appears in the archive), redact (an erased subject
taken out of the results and reports).
"""

from service.rescore.archive import DEFAULT_PATH_PATTERNS, PathInfo, PathParser, list_archive
from service.rescore.errors import ArchiveError, GalleryMismatchError, OptionError, RescoreError, StateError
from service.rescore.extract import Extractor, ExtractorSpec, FileJob, FileOutcome
from service.rescore.job import RescoreOptions, RescoreSummary, run_rescore
from service.rescore.local import LocalRunner
from service.rescore.ray_runner import RayRunner
from service.rescore.redact import RedactionSummary, redact_subject
from service.rescore.report import ReportSummary, build_report
from service.rescore.results import RECORD_FIELDS, read_results
from service.rescore.store import RescoreState, default_state_path

__all__ = [
    "DEFAULT_PATH_PATTERNS",
    "RECORD_FIELDS",
    "ArchiveError",
    "Extractor",
    "ExtractorSpec",
    "FileJob",
    "FileOutcome",
    "GalleryMismatchError",
    "LocalRunner",
    "OptionError",
    "PathInfo",
    "PathParser",
    "RayRunner",
    "RedactionSummary",
    "ReportSummary",
    "RescoreError",
    "RescoreOptions",
    "RescoreState",
    "RescoreSummary",
    "StateError",
    "build_report",
    "default_state_path",
    "list_archive",
    "read_results",
    "redact_subject",
    "run_rescore",
]

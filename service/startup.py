"""Startup and shutdown of the service: load the embedding model, build the clip pipeline, open
the gallery, put the API keys in it (service.auth) and report stored subject ids that break today's
rule. Nothing here stops the process: each component that cannot be loaded becomes a failed
readiness check saying what is missing and what fixes it (GET /readyz reports them)."""

from __future__ import annotations

import logging

from gaitid.contract import SequenceEmbedder
from gallery import Gallery
from service.auth import start_key_ring
from service.batching import EmbeddingBatcher
from service.pipeline.config import MODEL_FIX, missing_model
from service.pipeline.embed import OnnxEmbedder
from service.pipeline.errors import PipelineError
from service.state import ReadinessCheck, ServiceState

log = logging.getLogger("gaitid.service")


def start_services(state: ServiceState) -> None:
    """Load what the settings ask for; record a readiness check per component instead of failing."""
    embedder = load_embedder(state)
    state.embedder = embedder
    if embedder is not None:
        build_clip_pipeline(state, embedder)
    open_gallery(state, embedder)
    if state.gallery is not None:
        start_tenancy(state, state.gallery)


def stop_services(state: ServiceState) -> None:
    for closer in reversed(state.closers):
        try:
            closer.close()
        except Exception:
            log.exception("error while closing %r", closer)
    state.closers.clear()


def load_embedder(state: ServiceState) -> SequenceEmbedder | None:
    pipeline_settings, http = state.settings.pipeline, state.settings.http
    path = pipeline_settings.embedding_path
    fix = MODEL_FIX["embedding"]
    if (missing := missing_model(path, "embedding")) is not None:
        state.checks.append(ReadinessCheck("embedding_model", False, missing.message, fix))
        return None
    try:
        embedder = OnnxEmbedder(path, providers=pipeline_settings.providers, threads=pipeline_settings.threads)
    except Exception as error:  # noqa: BLE001 -- unreadable file, old contract, provider missing: all reported
        state.checks.append(ReadinessCheck("embedding_model", False, f"{path} cannot be loaded: {error}", fix))
        return None
    metadata = embedder.metadata
    state.checks.append(ReadinessCheck(
        "embedding_model", True,
        f"{path.name}: {metadata.architecture} {metadata.variant}, inputs {metadata.inputs}, model id "
        f"{embedder.model_id}, providers {embedder.providers()}",
    ))
    if not http.embed_batching:
        return embedder
    batcher = EmbeddingBatcher(embedder, max_batch=http.embed_batch_max, max_wait_ms=http.embed_batch_wait_ms,
                               observer=state.metrics.observe_batch)
    state.closers.append(batcher)
    return batcher


def build_clip_pipeline(state: ServiceState, embedder: SequenceEmbedder) -> None:
    # Imports OpenCV and supervision: after the cheap checks.
    from service.pipeline.pipeline import build_pipeline, uses_yolo

    settings = state.settings.pipeline
    yolo, depth, background = settings.yolo_path, settings.depth_path, settings.background_clip
    needs_depth = embedder.metadata.needs_depth
    if settings.segmenter == "yolo" and (missing := missing_model(yolo, "yolo")) is not None:
        state.checks.append(ReadinessCheck("segmenter", False, f"GAITID_SEGMENTER=yolo but {missing.message}",
                                           MODEL_FIX["yolo"] + "; or set GAITID_SEGMENTER=bgsub for a fixed camera"))
        return
    if needs_depth and (missing := missing_model(depth, "depth")) is not None:
        state.checks.append(ReadinessCheck(
            "depth_model", False, f"the embedding model needs depth maps: {missing.message}", MODEL_FIX["depth"]))
        return
    if background is not None and not background.exists():
        state.checks.append(ReadinessCheck(
            "background_clip", False, f"GAITID_BACKGROUND_CLIP={background} does not exist",
            "point GAITID_BACKGROUND_CLIP at an empty-scene clip of the camera, or unset it"))
        return
    try:
        state.pipeline = build_pipeline(settings, embedder, background=background)
    except PipelineError as error:
        state.checks.append(ReadinessCheck("pipeline", False, error.message))
        return
    except Exception as error:
        log.exception("building the clip pipeline failed")
        state.checks.append(ReadinessCheck("pipeline", False, f"building the clip pipeline failed: {error}"))
        return
    if uses_yolo(settings):
        state.checks.append(ReadinessCheck("segmenter", True, f"YOLO segmentation ({yolo.name})"))
    else:
        why = "GAITID_SEGMENTER=bgsub" if settings.segmenter == "bgsub" else f"no YOLO model at {yolo}"
        state.checks.append(ReadinessCheck(
            "segmenter", True,
            f"background subtraction ({why}): works for a fixed camera only"
            + (f", background from {background}" if background else "")
            + (f"; for moving cameras install YOLO-seg: {MODEL_FIX['yolo']}" if settings.segmenter == "auto" else ""),
        ))
    if needs_depth:
        state.checks.append(ReadinessCheck("depth_model", True, f"Depth Anything ({depth.name})"))


def open_gallery(state: ServiceState, embedder: SequenceEmbedder | None) -> None:
    """The gallery compares embeddings the way the model declares (the contract's default without one)."""
    settings = state.settings.gallery
    similarity = {} if embedder is None else {"similarity": embedder.metadata.similarity}
    threshold, origin = settings.decision_threshold(lambda: None if embedder is None else embedder.metadata)
    state.checks.append(ReadinessCheck("threshold", True, f"open-set threshold {threshold:g} ({origin})"))
    try:
        gallery = settings.open_gallery(threshold=threshold, **similarity)
    except Exception as error:
        log.exception("opening the gallery failed")
        state.checks.append(ReadinessCheck(
            "gallery", False, f"cannot open the gallery at {settings.gallery_dir}: {error}",
            f"make {settings.data_dir} writable by the service user (GAITID_DATA_DIR), then restart"))
        return
    state.gallery = gallery
    state.closers.insert(0, gallery)  # closed last: the batcher and pipeline stop first
    state.metrics.watch_gallery(lambda: _gallery_sizes(gallery))


MAX_LOGGED_PROBLEMS = 100


def start_tenancy(state: ServiceState, gallery: Gallery) -> None:
    """The API keys into the gallery (audited), and the stored subject ids an older version accepted
    that break today's rule (gallery.subject_ids), both logged; /readyz shows counts only."""
    if state.keyring.error is not None:
        state.checks.append(ReadinessCheck("api_keys", False, state.keyring.error,
                                           "fix the keys file (GAITID_KEYS_FILE), then restart"))
    else:
        try:
            state.checks.append(ReadinessCheck("api_keys", True, start_key_ring(state.keyring, gallery)))
        except Exception as error:
            log.exception("storing the configured API keys failed")
            state.checks.append(ReadinessCheck("api_keys", False, f"the configured keys cannot be stored: {error}",
                                               "fix the keys file (GAITID_KEYS_FILE), then restart"))
    problems = gallery.subject_id_problems()
    if problems:
        log.warning(
            "%d stored subject ids break the subject-id rule (gallery/subject_ids.py). They stay readable and "
            "deletable with an admin key through GET/DELETE /admin/subject?subject_id=..., or "
            "`gaitid subjects list-invalid` / `gaitid subjects delete`; new enrollments under them are refused:",
            len(problems))
        for problem in problems[:MAX_LOGGED_PROBLEMS]:
            log.warning("  gallery %r, subject %r: %s", problem.namespace, problem.subject_id, problem.problem)
        if len(problems) > MAX_LOGGED_PROBLEMS:
            log.warning("  ... and %d more (`gaitid subjects list-invalid` lists all)", len(problems) - MAX_LOGGED_PROBLEMS)
    state.checks.append(ReadinessCheck(
        "subject_ids", True,
        f"{len(problems)} stored subject ids break the subject-id rule (see the log)" if problems
        else "every stored subject id follows the subject-id rule"))


def _gallery_sizes(gallery: Gallery):
    for namespace in gallery.namespaces():
        status = gallery.status(namespace)
        yield namespace, status.subjects, status.sequences

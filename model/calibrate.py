"""Calibrating the service's open-set threshold on a labelled silhouette dataset.

Some subjects are enrolled (their gallery conditions, e.g. CASIA-B nm-01..04), the others are never
enrolled: every remaining sequence is a probe. Probes of enrolled subjects give the genuine scores
(false rejects), probes of subjects never enrolled the impostor scores (false accepts) — the
situation the service is in when a stranger walks past the camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gaitid.contract import SequenceEmbedder
from gallery.calibration import CalibrationReport, calibrate
from model.dataset import list_sequences, parse_subject_range
from model.evaluation.embedding import embed_dataset, open_embedder

CASIA_B_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")


def calibrate_on_dataset(
    model: str | Path | SequenceEmbedder,
    dataset_root: str | Path,
    subjects: str | None = None,
    enrolled_fraction: float = 0.5,
    gallery_conditions: tuple[str, ...] = CASIA_B_GALLERY,
    target_far: float = 0.01,
    depth_root: str | Path | None = None,
    save_embeddings: str | Path | None = None,
) -> CalibrationReport:
    """FAR/FRR of `model` (an .onnx, a checkpoint or an embedder) on a labelled tree, scored with the
    similarity the model declares; the first `enrolled_fraction` of subjects are enrolled."""
    sequences = list_sequences(dataset_root, parse_subject_range(subjects))
    if not sequences:
        raise ValueError(f"no sequences under {dataset_root} for subjects {subjects or 'all'}")
    names = sorted({s.subject for s in sequences})
    enrolled = set(names[: max(1, round(len(names) * enrolled_fraction))])
    embedder = open_embedder(model)
    embedded = embed_dataset(embedder, sequences, depth_root=depth_root)
    kept = embedded.sequences
    labels = np.array([s.subject for s in kept])
    gallery_mask = np.array([s.subject in enrolled and s.condition in gallery_conditions for s in kept])
    if save_embeddings:
        np.savez(save_embeddings, embeddings=embedded.embeddings, labels=labels, gallery=gallery_mask)
    return calibrate(embedded.embeddings, labels, gallery_mask=gallery_mask, target_far=target_far,
                     similarity=embedder.metadata.similarity)


def write_threshold(model_path: str | Path, report: CalibrationReport, *, dataset: str) -> float:
    """Store the calibrated threshold (at the report's target FPIR) in an ONNX model's metadata, with
    what it was measured on, so the service uses it by default. Rewrites the file atomically: its model
    id (file hash) changes, so do this before the model enrolls anyone."""
    import onnx

    from gaitid.contract import metadata_of, write_metadata

    path = Path(model_path)
    if path.suffix != ".onnx":
        raise ValueError(f"the threshold is written into an exported model (.onnx), not {path.name}")
    model = onnx.load(str(path))
    metadata = metadata_of(model, str(path))
    summary = report.summary()
    metadata.open_set_threshold = round(report.threshold, 6)
    metadata.provenance["calibration"] = {
        "dataset": dataset, "target_fpir": report.target_far, "fnir_at_threshold": summary["frr_at_threshold"],
        "eer": summary["eer"], "fnir_at_fpir": summary["fnir_at_fpir"], "rank1": summary["rank1"],
        "genuine_trials": report.genuine_trials, "impostor_trials": report.impostor_trials,
    }
    write_metadata(model, metadata)
    tmp = path.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return metadata.open_set_threshold

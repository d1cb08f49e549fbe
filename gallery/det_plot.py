"""The DET curve of a calibration report as a PNG (FNIR against FPIR, log axes), the picture 1:N
evaluations publish. matplotlib is imported here only: the service never draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gallery.calibration import REPORTED_FPIRS, CalibrationReport


def write_det_plot(report: CalibrationReport, path: str | Path, title: str = "") -> Path:
    """Draw FNIR (FRR) against FPIR (FAR) over all thresholds; mark the reported operating points and
    the EER. Returns the path written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # an optional dependency: say which install brings it
        raise RuntimeError("drawing the DET curve needs matplotlib: pip install 'gaitid[train]'") from exc

    _, far, frr = report.curve()
    floor = 0.5 / max(len(report.impostor_scores), len(report.genuine_scores))  # log axes cannot show 0
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.step(np.maximum(far, floor), np.maximum(frr, floor), where="post", color="tab:blue", label="DET")
    points = []
    for fpir in REPORTED_FPIRS:
        fnir, threshold = report.fnir_at_fpir(fpir)
        ax.plot(max(fpir, floor), max(fnir, floor), "o", color="tab:red")
        points.append(f"FPIR {fpir:g}: FNIR {fnir:.1%} (t = {threshold:.3f})")
    ax.text(0.98, 0.98, "\n".join(points), transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.plot([floor, 1], [floor, 1], ":", color="grey", linewidth=0.8, label=f"EER {report.eer:.1%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("FPIR (false-positive identification rate)")
    ax.set_ylabel("FNIR (false-negative identification rate)")
    ax.set_title(title or f"DET, {report.mode}: {report.genuine_trials} genuine, {report.impostor_trials} impostor")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

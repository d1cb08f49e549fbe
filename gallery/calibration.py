"""Calibrate the open-set threshold from labelled embeddings.

Scores are the model's similarity as the contract computes it (gaitid.contract.search_vectors,
"part-cosine" by default), the same numbers the gallery's search gives; a trial is accepted when
score >= threshold, exactly like `Identification.is_known`. Two protocols:

* pairs (no gallery split): every pair of embeddings is a verification trial, genuine when both
  carry the same label, impostor otherwise. FAR = accepted impostor pairs / impostor pairs,
  FRR = rejected genuine pairs / genuine pairs.
* open-set (a boolean `gallery_mask` marks the enrolled embeddings, the rest are probes): each
  probe is searched like `Gallery.search` (best sequence per subject, top-1 subject). Probes
  whose subject is not enrolled are impostor searches: FAR (ISO/IEC 19795 FPIR) = fraction whose
  top score is >= threshold. Probes whose subject is enrolled are genuine searches: FRR (FNIR) =
  fraction not answered with the right subject at >= threshold; a probe whose top-1 subject is
  wrong counts as a reject at every threshold (and is reported in `misidentified`).

For open-set reports the 1:N figures of ISO/IEC 19795 and NIST FRTE are available too: FNIR at a
given FPIR (`fnir_at_fpir`, by default at FPIR 0.1, 0.01 and 0.003), and rank-1 / rank-5
identification rates of the genuine probes (the rank of their true subject among the enrolled
subjects, each scored by its best sequence, thresholds aside). `gallery.det_plot` draws the DET curve.

The report gives FAR and FRR at every distinct score, the lowest threshold whose FAR is at most
`target_far` (the one that rejects the fewest genuine trials under that constraint), and the
equal error rate. Scores are exact for the "flat" index; the "fp16" index moves them by ~1e-3.

CLI: `gaitid calibrate EMBEDDINGS.npz --target-far 0.01` with arrays `embeddings` (N, C, P),
`labels` (N,) and optionally `gallery` (N,) bool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gaitid.contract import Similarity, search_vectors
from gallery.errors import InvalidInputError
from gallery.validation import contract_errors_as_invalid_input, embedding_batch

Mode = Literal["pairs", "open-set"]
# The operating points 1:N evaluations report (NIST FRTE 1:N): FNIR at these FPIRs.
REPORTED_FPIRS = (0.1, 0.01, 0.003)
# Pair mode materialises every pair score; beyond this, ask for a gallery/probe split instead.
MAX_PAIRS = 50_000_000
_PROBE_CHUNK = 1024


@dataclass(frozen=True)
class CalibrationReport:
    mode: Mode
    genuine_scores: np.ndarray  # sorted; -inf for misidentified open-set probes
    impostor_scores: np.ndarray  # sorted
    target_far: float
    threshold: float  # lowest threshold with FAR <= target_far
    far_at_threshold: float
    frr_at_threshold: float
    eer: float  # equal error rate (mean of FAR and FRR where they are closest)
    eer_threshold: float
    misidentified: int = 0  # open-set: genuine probes whose top-1 subject was another one
    # open-set: rank (1 = first) of each genuine probe's true subject among the enrolled subjects
    true_subject_ranks: np.ndarray | None = None

    @property
    def genuine_trials(self) -> int:
        return len(self.genuine_scores)

    @property
    def impostor_trials(self) -> int:
        return len(self.impostor_scores)

    def rates_at(self, threshold: float) -> tuple[float, float]:
        """(FAR, FRR) when accepting scores >= threshold."""
        return _far(self.impostor_scores, threshold), _frr(self.genuine_scores, threshold)

    def fnir_at_fpir(self, fpir: float) -> tuple[float, float]:
        """(FNIR, threshold) at the lowest threshold whose FPIR (FAR) is at most `fpir`. With fewer
        than 1/fpir impostor trials this is the threshold that accepts no impostor at all."""
        threshold = _threshold_at_far(self.genuine_scores, self.impostor_scores, fpir)
        return _frr(self.genuine_scores, threshold), threshold

    def rank_rate(self, rank: int) -> float | None:
        """Share of genuine probes whose true subject is among the first `rank` (open-set only)."""
        if self.true_subject_ranks is None:
            return None
        return float(np.mean(self.true_subject_ranks <= rank))

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds ascending, FAR, FRR) at every distinct finite score, plus one threshold above
        the highest score (where nothing is accepted)."""
        thresholds = _candidate_thresholds(self.genuine_scores, self.impostor_scores)
        n_imp, n_gen = len(self.impostor_scores), len(self.genuine_scores)
        far = (n_imp - np.searchsorted(self.impostor_scores, thresholds, side="left")) / n_imp
        frr = np.searchsorted(self.genuine_scores, thresholds, side="left") / n_gen
        return thresholds, far, frr

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "genuine_trials": self.genuine_trials, "impostor_trials": self.impostor_trials,
            "target_far": self.target_far, "threshold": self.threshold,
            "far_at_threshold": self.far_at_threshold, "frr_at_threshold": self.frr_at_threshold,
            "eer": self.eer, "eer_threshold": self.eer_threshold, "misidentified": self.misidentified,
            "fnir_at_fpir": [
                {"fpir": fpir, "fnir": fnir, "threshold": t}
                for fpir in REPORTED_FPIRS for fnir, t in [self.fnir_at_fpir(fpir)]
            ],
            "rank1": self.rank_rate(1), "rank5": self.rank_rate(5),
        }

    def table(self, rows: int = 11) -> str:
        """Markdown: FAR/FRR on an even threshold grid over the observed scores, then the chosen points."""
        finite = np.concatenate([self.genuine_scores[np.isfinite(self.genuine_scores)], self.impostor_scores])
        low, high = float(finite.min()), float(finite.max())
        lines = ["| threshold | FAR | FRR |", "|---:|---:|---:|"]
        for t in np.linspace(low, high, max(rows, 2)):
            far, frr = self.rates_at(float(t))
            lines.append(f"| {t:.4f} | {far:.4%} | {frr:.4%} |")
        lines.append(f"| **{self.threshold:.4f}** (FAR <= {self.target_far:g}) | {self.far_at_threshold:.4%} "
                     f"| {self.frr_at_threshold:.4%} |")
        eer_far, eer_frr = self.rates_at(self.eer_threshold)
        lines.append(f"| **{self.eer_threshold:.4f}** (EER {self.eer:.4%}) | {eer_far:.4%} | {eer_frr:.4%} |")
        return "\n".join(lines)


def calibrate(embeddings: np.ndarray, labels: Sequence[Any], *, gallery_mask: np.ndarray | None = None,
              target_far: float = 0.01, similarity: Similarity = "part-cosine") -> CalibrationReport:
    """FAR/FRR over thresholds for labelled (N, C, P) embeddings; see the module docstring.

    gallery_mask None -> pairs protocol; a boolean (N,) mask -> open-set protocol (True = enrolled,
    False = probe; include probes whose label has no enrolled embedding).
    """
    batch = embedding_batch(embeddings)
    label_codes = _label_codes(labels, len(batch))
    if gallery_mask is None:
        genuine, impostor = pair_scores(batch, label_codes, similarity)
        return rates_from_scores(genuine, impostor, target_far=target_far, mode="pairs")
    genuine, impostor, misidentified, ranks = open_set_scores(batch, label_codes, gallery_mask, similarity)
    return rates_from_scores(genuine, impostor, target_far=target_far, mode="open-set",
                             misidentified=misidentified, true_subject_ranks=ranks)


def pair_scores(embeddings: np.ndarray, labels: Sequence[Any],
                similarity: Similarity = "part-cosine") -> tuple[np.ndarray, np.ndarray]:
    """Scores of all unordered pairs: (genuine, impostor)."""
    vectors = _search_vectors(embeddings, similarity)
    codes = _label_codes(labels, len(vectors))
    n = len(vectors)
    if n * (n - 1) // 2 > MAX_PAIRS:
        raise InvalidInputError(f"{n} embeddings make more than {MAX_PAIRS} pairs: pass a gallery_mask "
                                "(open-set protocol) or fewer embeddings")
    genuine, impostor = [], []
    for start in range(0, n, _PROBE_CHUNK):
        stop = min(start + _PROBE_CHUNK, n)
        scores = vectors[start:stop] @ vectors[start:].T
        for row, i in enumerate(range(start, stop)):  # pairs (i, j > i)
            pair = scores[row, i - start + 1:]
            same = codes[i + 1:] == codes[i]
            genuine.append(pair[same])
            impostor.append(pair[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def open_set_scores(embeddings: np.ndarray, labels: Sequence[Any], gallery_mask: np.ndarray,
                    similarity: Similarity = "part-cosine") -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Search every probe against the gallery part: (genuine top-1 scores, -inf where the top-1
    subject is wrong; impostor top-1 scores; number misidentified; rank of each genuine probe's true
    subject among the enrolled subjects, 1 = first)."""
    mask = np.asarray(gallery_mask)
    vectors = _search_vectors(embeddings, similarity)
    codes = _label_codes(labels, len(vectors))
    if mask.shape != (len(vectors),) or mask.dtype != bool:
        raise InvalidInputError(f"gallery_mask must be a boolean array of shape ({len(vectors)},)")
    if not mask.any() or mask.all():
        raise InvalidInputError("gallery_mask must mark some embeddings as enrolled and some as probes")
    # Gallery sequences grouped by subject, so a subject's score (its best sequence) is one reduceat.
    order = np.argsort(codes[mask], kind="stable")
    gallery, gallery_codes = vectors[mask][order], codes[mask][order]
    subjects, first = np.unique(gallery_codes, return_index=True)
    probes, probe_codes = vectors[~mask], codes[~mask]
    top_scores = np.empty(len(probes), np.float32)
    top_codes = np.empty(len(probes), codes.dtype)
    true_ranks = np.zeros(len(probes), np.int64)  # 0 where the probe's subject is not enrolled
    for start in range(0, len(probes), _PROBE_CHUNK):
        stop = min(start + _PROBE_CHUNK, len(probes))
        per_subject = np.maximum.reduceat(probes[start:stop] @ gallery.T, first, axis=1)
        best = per_subject.argmax(axis=1)
        top_scores[start:stop] = per_subject[np.arange(len(best)), best]
        top_codes[start:stop] = subjects[best]
        column = np.searchsorted(subjects, probe_codes[start:stop])
        enrolled = (column < len(subjects)) & (subjects[np.minimum(column, len(subjects) - 1)] == probe_codes[start:stop])
        own = per_subject[np.arange(len(best)), np.minimum(column, len(subjects) - 1)]
        true_ranks[start:stop] = np.where(enrolled, 1 + (per_subject > own[:, None]).sum(axis=1), 0)
    mated = true_ranks > 0
    correct = top_codes == probe_codes
    genuine = np.where(correct[mated], top_scores[mated].astype(np.float64), -np.inf)
    impostor = top_scores[~mated].astype(np.float64)
    return genuine, impostor, int((~correct[mated]).sum()), true_ranks[mated]


def rates_from_scores(genuine: np.ndarray, impostor: np.ndarray, *, target_far: float = 0.01,
                      mode: Mode = "pairs", misidentified: int = 0,
                      true_subject_ranks: np.ndarray | None = None) -> CalibrationReport:
    """Threshold at target FAR and EER from genuine / impostor scores (accept iff score >= t)."""
    if not 0.0 <= target_far <= 1.0:
        raise InvalidInputError(f"target_far must be in [0, 1], got {target_far}")
    genuine = np.sort(np.asarray(genuine, np.float64).ravel())
    impostor = np.sort(np.asarray(impostor, np.float64).ravel())
    if len(genuine) == 0 or len(impostor) == 0:
        raise InvalidInputError(f"need genuine and impostor trials, got {len(genuine)} and {len(impostor)}")
    if np.isnan(genuine).any() or not np.isfinite(impostor).all():
        raise InvalidInputError("scores must be finite (genuine may be -inf for misidentified probes)")
    threshold = _threshold_at_far(genuine, impostor, target_far)
    thresholds = _candidate_thresholds(genuine, impostor)
    far = (len(impostor) - np.searchsorted(impostor, thresholds, side="left")) / len(impostor)
    frr = np.searchsorted(genuine, thresholds, side="left") / len(genuine)
    closest = int(np.argmin(np.abs(far - frr)))
    return CalibrationReport(
        mode=mode, genuine_scores=genuine, impostor_scores=impostor, target_far=float(target_far),
        threshold=threshold, far_at_threshold=_far(impostor, threshold), frr_at_threshold=_frr(genuine, threshold),
        eer=float((far[closest] + frr[closest]) / 2), eer_threshold=float(thresholds[closest]),
        misidentified=misidentified, true_subject_ranks=true_subject_ranks,
    )


def calibrate_file(path: str | Path, *, target_far: float = 0.01,
                   similarity: Similarity = "part-cosine") -> CalibrationReport:
    """calibrate() on an .npz with `embeddings`, `labels` and optional `gallery` (bool mask)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            embeddings, labels = data["embeddings"], data["labels"]
            mask = data["gallery"] if "gallery" in data.files else None
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidInputError(f"{path}: need an .npz with arrays 'embeddings' (N, C, P), 'labels' (N,) "
                                f"and optionally 'gallery' (N,) bool ({exc})") from exc
    return calibrate(embeddings, labels, gallery_mask=mask, target_far=target_far, similarity=similarity)


# -- helpers ---------------------------------------------------------------------------------
def _search_vectors(embeddings: np.ndarray, similarity: Similarity) -> np.ndarray:
    with contract_errors_as_invalid_input():
        return search_vectors(embeddings, similarity)


def _label_codes(labels: Sequence[Any], count: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (count,):
        raise InvalidInputError(f"need one label per embedding: {count} embeddings, labels of shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    _, codes = np.unique(array.astype(str), return_inverse=True)
    return codes.astype(np.int64)


def _far(impostor_sorted: np.ndarray, threshold: float) -> float:
    return float((len(impostor_sorted) - np.searchsorted(impostor_sorted, threshold, side="left"))
                 / len(impostor_sorted))


def _frr(genuine_sorted: np.ndarray, threshold: float) -> float:
    return float(np.searchsorted(genuine_sorted, threshold, side="left") / len(genuine_sorted))


def _threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, target_far: float) -> float:
    """Lowest t with FAR(t) <= target: just above the (a+1)-th highest impostor score, where a is the
    number of impostor accepts the target allows."""
    allowed = math.floor(target_far * len(impostor) + 1e-9)
    if allowed >= len(impostor):
        finite = genuine[np.isfinite(genuine)]
        return float(min(impostor[0], finite[0]) if len(finite) else impostor[0])
    return float(np.nextafter(impostor[len(impostor) - 1 - allowed], np.inf))


def _candidate_thresholds(genuine: np.ndarray, impostor: np.ndarray) -> np.ndarray:
    finite = np.concatenate([genuine[np.isfinite(genuine)], impostor])
    unique = np.unique(finite)
    return np.append(unique, np.nextafter(unique[-1], np.inf))


def format_report(report: CalibrationReport, target_far: float, rows: int = 11) -> str:
    """The FAR/FRR table and the chosen threshold, as printed by `gaitid calibrate`."""
    trials = f"{report.mode}: {report.genuine_trials} genuine, {report.impostor_trials} impostor trials"
    if report.mode == "open-set":
        trials += f", {report.misidentified} misidentified"
    lines = [trials, report.table(rows)]
    if report.mode == "open-set":
        lines += ["", "| FPIR | threshold | FNIR |", "|---:|---:|---:|"]
        for fpir in REPORTED_FPIRS:
            fnir, threshold = report.fnir_at_fpir(fpir)
            lines.append(f"| {fpir:g} | {threshold:.4f} | {fnir:.2%} |")
        lines.append(f"rank-1 {report.rank_rate(1):.2%}, rank-5 {report.rank_rate(5):.2%} "
                     f"of {report.genuine_trials} genuine searches")
    return "\n".join([
        *lines,
        (f"threshold at FAR <= {target_far:g}: {report.threshold:.6f} "
         f"(FAR {report.far_at_threshold:.4%}, FRR {report.frr_at_threshold:.4%}); "
         f"EER {report.eer:.4%} at {report.eer_threshold:.6f}"),
    ])

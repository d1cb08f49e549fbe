"""ONNX Runtime sessions: one place that decides execution providers and thread counts."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger("gaitid.service")

# Order of preference when the user asks for "auto". TensorRT is only used when asked for by name:
# its engine build takes minutes on first use, which is wrong for a default.
_AUTO_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")
_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def resolve_providers(requested: str | list[str] = "auto") -> list[str]:
    """Turn 'auto' / 'cpu' / 'cuda,cpu' / ['tensorrt', 'cuda'] into available ORT provider names."""
    available = ort.get_available_providers()
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    if not requested or requested == ["auto"]:
        chosen = [p for p in _AUTO_ORDER if p in available]
    else:
        chosen = []
        for name in requested:
            full = _ALIASES.get(name.lower(), name)
            if full not in available:
                raise ValueError(
                    f"ONNX Runtime execution provider {full!r} is not available here "
                    f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT"
                )
            chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # always keep a fallback for unsupported ops
    return chosen


def make_session(
    path: str | Path, providers: str | list[str] = "auto", threads: int = 1
) -> ort.InferenceSession:
    """An inference session with a fixed intra-op thread count.

    One thread by default: on a loaded machine several single-threaded sessions serving concurrent
    requests beat one session fighting the other requests for cores.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    chosen = resolve_providers(providers)
    session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    # onnxruntime-gpu lists CUDA as available even where no GPU is visible; the session then quietly
    # runs on the CPU. Say so in one line: it is the difference between GPU and CPU throughput.
    if unusable := [p for p in chosen if p != "CPUExecutionProvider" and p not in session.get_providers()]:
        log.warning("%s: %s not usable here (no GPU visible, or its driver or libraries missing); falling back to "
                    "%s", Path(path).name, ", ".join(unusable), ", ".join(session.get_providers()))
    return session

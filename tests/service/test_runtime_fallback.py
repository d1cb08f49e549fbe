"""service.runtime.make_session says in one log line when a requested GPU provider is not usable and
the session runs on the CPU (what the GPU image does on a machine without a visible GPU)."""

from __future__ import annotations

import logging

from service import runtime


class _SessionWithoutCuda:
    """Stands in for onnxruntime-gpu's InferenceSession where no GPU is visible: CUDA was asked
    for, the session came up on the CPU provider alone."""

    def __init__(self, path, sess_options=None, providers=None):
        self.asked_for = providers

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_falling_back_to_the_cpu_provider_is_logged(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime.ort, "InferenceSession", _SessionWithoutCuda)
    with caplog.at_level(logging.WARNING, logger="gaitid.service"):
        session = runtime.make_session(tmp_path / "embedder.onnx", "auto")
    assert session.asked_for == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    (record,) = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "embedder.onnx: CUDAExecutionProvider not usable here" in record.getMessage()
    assert record.getMessage().endswith("falling back to CPUExecutionProvider")


def test_a_session_on_the_providers_it_asked_for_logs_nothing(caplog, tiny_model):
    with caplog.at_level(logging.WARNING, logger="gaitid.service"):
        session = runtime.make_session(tiny_model, "cpu")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert not [r for r in caplog.records if "falling back" in r.getMessage()]

"""`embed_dataset` and `run_evaluation` end to end: tiny contract-v2 ONNX models and tiny DepthGait
checkpoints over pkl trees, reports on disk and on stdout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.dataset import list_sequences, load_sequence, save_sequence, trim_to_network_width
from model.evaluation import EvaluationError, embed_dataset, format_markdown, run_evaluation
from tests.model.conftest import CASIA_CONDITIONS, STRIP_PARTS, strip_pool, subject_frames, write_checkpoint

# ------------------------------------------------------------------------------------------------
# Embedding and run_evaluation on tiny ONNX models over pkl trees
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def casia_tree(tmp_path_factory):
    """Subjects 001-005 x 10 conditions x views 000/090/180. Planted: 003 cl-01 090 walks like 001; 002
    bg-02 180 has no frames. Subject 005 exists but the evaluation range leaves it out."""
    root = tmp_path_factory.mktemp("casia") / "sil"
    rng = np.random.default_rng(6)
    for s in range(1, 6):
        for cond in CASIA_CONDITIONS:
            for view in ("000", "090", "180"):
                walker = 1 if (s, cond, view) == (3, "cl-01", "090") else s
                array = subject_frames(walker, rng)
                if (s, cond, view) == (2, "bg-02", "180"):
                    array = array[:0]
                save_sequence(root, f"{s:03d}", cond, view, array)
    return root


def test_run_evaluation_end_to_end_on_onnx(casia_tree, tmp_path, capsys, strip_pool_onnx):
    model = strip_pool_onnx(["sils"])
    out = tmp_path / "report" / "tiny"
    result = run_evaluation(model, casia_tree, protocol="casia-b", subjects="001-004", metric="both", out=out)

    assert result.num_subjects == 4
    assert result.info["skipped"] == ["002/bg-02/180"]
    cl_view_090 = 100 * (8 - 1) / 8  # 4 subjects x cl-01/02 probes in view 090, one walks like 001
    cl_mean = (100 + cl_view_090 + 100) / 3
    for metric in ("euclidean", "cosine"):
        nm, bg, cl = (result[metric].condition(n) for n in ("NM", "BG", "CL"))
        assert nm.mean() == bg.mean() == 100.0
        assert bg.num_probes == 4 * 2 * 3 - 1
        np.testing.assert_allclose(cl.accuracy[1][1], cl_view_090)
        np.testing.assert_allclose(cl.mean(), cl_mean)

    saved = json.loads((tmp_path / "report" / "tiny.json").read_text())
    assert saved["protocol"] == "casia-b" and saved["num_sequences"] == 4 * 10 * 3 - 1
    assert saved["summary"]["cosine"]["CL"]["rank1"] == pytest.approx(cl_mean, abs=1e-3)
    assert saved["metrics"]["euclidean"][2]["rank1"]["table"][1] == [pytest.approx(cl_view_090)] * 3
    markdown = (tmp_path / "report" / "tiny.md").read_text()
    assert markdown == format_markdown(result)
    assert f"| CL | cl-01, cl-02 | nm-01..04 | 24 | {cl_mean:.2f} | {cl_mean:.2f} |" in markdown
    assert f"| CL | 100.00 | {cl_view_090:.2f} | 100.00 | {cl_mean:.2f} |" in markdown
    assert "| NM | 100.00 | 100.00 | 100.00 | 100.00 |" in markdown
    assert markdown in capsys.readouterr().out  # the same table went to stdout


def test_embed_dataset_reads_depth_and_the_model_scales_it(tmp_path, strip_pool_onnx):
    rng = np.random.default_rng(7)
    sil_root, depth_root = tmp_path / "sil", tmp_path / "depth"
    for s in (1, 2):
        for view in ("000", "090"):
            frames = 3 + s
            save_sequence(sil_root, f"00{s}", "nm-01", view, subject_frames(s, rng, frames))
            save_sequence(depth_root, f"00{s}", "nm-01", view, rng.integers(0, 256, (frames, 64, 64), np.uint8))
    model = strip_pool_onnx(["sils", "depths"])
    infos = list_sequences(sil_root)

    with pytest.raises(EvaluationError, match="needs depth"):
        embed_dataset(model, infos, progress=False)
    got = embed_dataset(model, infos, depth_root=depth_root, progress=False)

    assert got.sequences == infos and got.embeddings.shape == (4, 88, STRIP_PARTS)
    for info, emb in zip(infos, got.embeddings):
        sil = torch.from_numpy(trim_to_network_width(load_sequence(info.path)) / 255.0)[None]
        depth = torch.from_numpy(
            trim_to_network_width(load_sequence(depth_root / info.subject / info.condition / info.view)) / 255.0
        )[None]
        want = torch.cat([strip_pool(sil), strip_pool(depth)], dim=1)[0].numpy()
        np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)

    # a depth tree whose frame count disagrees is refused with the sequence named
    save_sequence(depth_root, "001", "nm-01", "000", np.zeros((9, 64, 64), np.uint8))
    with pytest.raises(EvaluationError, match="001/nm-01/000: 4 silhouette frames but 9 depth frames"):
        embed_dataset(model, infos, depth_root=depth_root, progress=False)


def test_checkpoint_and_onnx_backends_embed_identically(tmp_path):
    """A real (tiny) DepthGait: `embed_dataset` on the training checkpoint (torch) and on its ONNX export
    (ONNX Runtime) must agree, so both backends feed the network the same frames."""
    from model.export import export_onnx

    ckpt, _ = write_checkpoint(tmp_path / "tiny.pt", "silhouette")
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(ckpt, onnx_path)

    rng = np.random.default_rng(8)
    root = tmp_path / "sil"
    for s, frames in ((1, 7), (2, 12)):
        save_sequence(root, f"00{s}", "nm-05", "090", subject_frames(s, rng, frames))
    infos = list_sequences(root)
    from_torch = embed_dataset(ckpt, infos, device="cpu", progress=False)
    from_onnx = embed_dataset(onnx_path, infos, device="cpu", progress=False)
    assert from_torch.embeddings.shape == (2, 256, 16)
    np.testing.assert_allclose(from_torch.embeddings, from_onnx.embeddings, rtol=1e-4, atol=1e-4)


def test_run_evaluation_refuses_bad_inputs(tmp_path, casia_tree, strip_pool_onnx):
    model = strip_pool_onnx(["sils"])
    with pytest.raises(EvaluationError, match="not a folder"):
        run_evaluation(model, tmp_path / "missing")
    with pytest.raises(EvaluationError, match="unknown protocol"):
        run_evaluation(model, casia_tree, protocol="grew")
    with pytest.raises(EvaluationError, match="no casia-b sequences"):
        run_evaluation(model, casia_tree, subjects="100-120")
    with pytest.raises(EvaluationError, match="not found"):
        run_evaluation(tmp_path / "nope.onnx", casia_tree)
    with pytest.raises(EvaluationError, match="expected an exported .onnx"):
        run_evaluation(casia_tree / "001" / "nm-01" / "000" / "000.pkl", casia_tree)


def test_embed_dataset_takes_an_embedder_and_reads_the_tree_in_chunks(tmp_path, monkeypatch):
    from model.embedder import TorchEmbedder
    from model.evaluation import embedding

    ckpt, net = write_checkpoint(tmp_path / "tiny.pt", "silhouette")
    rng = np.random.default_rng(10)
    root = tmp_path / "sil"
    for s in range(1, 4):
        for view in ("000", "090", "180"):
            save_sequence(root, f"00{s}", "nm-01", view, subject_frames(s, rng, 5 + s))
    infos = list_sequences(root)
    whole = embed_dataset(TorchEmbedder(net, "cpu"), infos, progress=False)
    monkeypatch.setattr(embedding, "SEQUENCES_PER_CHUNK", 2)
    chunked = embed_dataset(ckpt, infos, device="cpu", progress=False)
    assert chunked.sequences == whole.sequences == infos
    np.testing.assert_allclose(chunked.embeddings, whole.embeddings, rtol=1e-5, atol=1e-6)
    assert whole.model.startswith("torch silhouette") and chunked.model.startswith("checkpoint silhouette")


def test_a_contract_v1_onnx_file_is_refused_with_the_upgrade_command(tmp_path, casia_tree, v1_onnx):
    with pytest.raises(EvaluationError, match="gaitid models upgrade"):
        run_evaluation(v1_onnx(["sils"]), casia_tree)


def test_a_tree_of_float_arrays_is_refused_by_the_contract(tmp_path, strip_pool_onnx):
    root = tmp_path / "sil"
    save_sequence(root, "001", "nm-01", "000", np.ones((4, 64, 64), np.float32))
    with pytest.raises(EvaluationError, match="001/nm-01/000: sils must be uint8"):
        embed_dataset(strip_pool_onnx(["sils"]), list_sequences(root), progress=False)

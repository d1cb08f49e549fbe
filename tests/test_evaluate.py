"""The evaluator: distances, the CASIA-B / CCPG / SUSTech1K protocols on embeddings whose right answer
is known by construction, and `run_evaluation` end to end on tiny ONNX models over pkl trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from model.dataset import list_sequences, load_sequence, save_sequence, trim_to_network_width
from model.evaluate import (
    EvaluationError,
    embed_dataset,
    evaluate_embeddings,
    format_markdown,
    pairwise_distance,
    run_evaluation,
)
from service.pipeline.embed import METADATA_KEY, EmbeddingModelMetadata

CASIA_CONDITIONS = [f"nm-0{i}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]
CASIA_VIEWS = [f"{18 * i:03d}" for i in range(11)]


def casia_labels(subjects: list[str], views: list[str] = CASIA_VIEWS) -> list[tuple[str, str, str]]:
    return [(s, c, v) for s in subjects for c in CASIA_CONDITIONS for v in views]


def clustered(labels, rng, channels=16, parts=4, noise=0.05, scale=1.0) -> tuple[np.ndarray, dict]:
    """Each subject a random centre, each sequence its centre plus small noise."""
    centres = {s: scale * rng.normal(size=(channels, parts)) for s in sorted({lab[0] for lab in labels})}
    x = np.stack([centres[s] + noise * rng.normal(size=(channels, parts)) for s, _, _ in labels])
    return x.astype(np.float32), centres


def index_of(labels, key) -> int:
    return labels.index(key)


# ------------------------------------------------------------------------------------------------
# Distances
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distance_matches_a_per_part_loop(metric):
    rng = np.random.default_rng(0)
    probe, gallery = rng.normal(size=(7, 5, 3)), rng.normal(size=(4, 5, 3))
    gallery[1, :, 2] = 0.0  # an all-zero part: cosine must treat it as similarity 0, not NaN
    want = np.zeros((7, 4))
    for i in range(7):
        for j in range(4):
            for p in range(3):
                a, b = probe[i, :, p], gallery[j, :, p]
                if metric == "euclidean":
                    want[i, j] += np.linalg.norm(a - b) / 3
                else:
                    denom = max(np.linalg.norm(a), 1e-12) * max(np.linalg.norm(b), 1e-12)
                    want[i, j] += (1 - a @ b / denom) / 3
    # chunk_bytes small enough that every probe row is its own chunk: the chunking is exercised too
    for chunk_bytes in (1, 1 << 26):
        got = pairwise_distance(probe.astype(np.float32), gallery.astype(np.float32), metric, chunk_bytes)
        assert got.shape == (7, 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pairwise_distance(probe, gallery, metric), want, rtol=1e-12, atol=1e-12)


def test_euclidean_and_cosine_agree_on_unit_vectors_with_one_part():
    # For unit vectors |a - b|^2 = 2 - 2 cos(a, b): with a single part both metrics rank identically.
    rng = np.random.default_rng(1)
    labels = casia_labels(["001", "002", "003"], CASIA_VIEWS[:4])
    x, _ = clustered(labels, rng, channels=8, parts=1, noise=0.6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    euc, cos = pairwise_distance(x, x, "euclidean"), pairwise_distance(x, x, "cosine")
    np.testing.assert_allclose(euc**2, 2 * cos, atol=1e-5)

    result = evaluate_embeddings(x, labels, "casia-b", "both")
    for name in ("NM", "BG", "CL"):
        a, b = result["euclidean"].condition(name), result["cosine"].condition(name)
        np.testing.assert_array_equal(a.accuracy[1], b.accuracy[1])
    # the noise is large enough that this is not a trivially perfect case
    assert result["euclidean"].condition("CL").mean() < 100


def test_distance_rejects_mismatched_layouts():
    with pytest.raises(EvaluationError, match="differs"):
        pairwise_distance(np.zeros((2, 4, 3)), np.zeros((2, 4, 2)))
    with pytest.raises(EvaluationError, match="unknown metric"):
        pairwise_distance(np.zeros((2, 4, 3)), np.zeros((2, 4, 3)), "manhattan")


# ------------------------------------------------------------------------------------------------
# CASIA-B
# ------------------------------------------------------------------------------------------------


def test_casia_b_separated_subjects_score_100_everywhere():
    rng = np.random.default_rng(2)
    labels = casia_labels([f"{i:03d}" for i in range(75, 80)])
    x, _ = clustered(labels, rng)
    result = evaluate_embeddings(x, labels, "casia-b", "both")
    assert (result.num_sequences, result.num_subjects) == (len(labels), 5)
    for metric in ("euclidean", "cosine"):
        for cond in result[metric].conditions:
            assert cond.views == CASIA_VIEWS
            assert cond.num_probes == 5 * 2 * 11 and cond.num_gallery == 5 * 4 * 11
            np.testing.assert_array_equal(cond.accuracy[1], np.full((11, 11), 100.0))
            assert cond.mean(exclude_identical=True) == cond.mean(exclude_identical=False) == 100.0
    assert result.summary()["euclidean"]["CL"]["rank1"] == 100.0


def test_casia_b_planted_confusion_gives_the_exact_rank1():
    rng = np.random.default_rng(3)
    subjects = [f"{i:03d}" for i in range(75, 80)]
    labels = casia_labels(subjects)
    x, centres = clustered(labels, rng)
    # One NM probe of subject 075 in view 090 sits on subject 076's centre: wrong in every gallery view.
    x[index_of(labels, ("075", "nm-05", "090"))] = centres["076"]
    nm = evaluate_embeddings(x, labels, "casia-b", "euclidean")["euclidean"].condition("NM")

    probes_per_view = len(subjects) * 2  # nm-05 and nm-06
    wrong_view_cell = 100 * (probes_per_view - 1) / probes_per_view
    row = CASIA_VIEWS.index("090")
    expected = np.full((11, 11), 100.0)
    expected[row] = wrong_view_cell
    np.testing.assert_allclose(nm.accuracy[1], expected)
    np.testing.assert_allclose(nm.per_probe_view()[row], wrong_view_cell)
    np.testing.assert_allclose(nm.mean(), (10 * 100 + wrong_view_cell) / 11)
    # BG and CL did not move
    result = evaluate_embeddings(x, labels, "casia-b", "euclidean")
    assert result["euclidean"].condition("BG").mean() == result["euclidean"].condition("CL").mean() == 100.0


def test_identical_view_exclusion_changes_a_constructed_case():
    """Two subjects A, B; two views. The gallery of view 090 is laid out so that same-view matching is
    right and cross-view matching mostly wrong (1-D part, 2 channels, by hand):

        gallery nm-01: A/000 (0, 0)   B/000 (10, 0)   A/090 (20, 10)   B/090 (0, 10)
        probe   nm-05: A/000 (1, 0)   B/000 (9, 0)    A/090 (19, 10)   B/090 (1, 10)

    Probe view 000: same view both right; vs 090 gallery A(1,0) -> B/090 (wrong), B(9,0) -> B/090
    (right): [100, 50]. Probe view 090: same view both right; vs 000 gallery A(19,10) -> B/000
    (wrong), B(1,10) -> A/000 (wrong): [0, 100].
    """
    labels = [("A", "nm-01", "000"), ("B", "nm-01", "000"), ("A", "nm-01", "090"), ("B", "nm-01", "090"),
              ("A", "nm-05", "000"), ("B", "nm-05", "000"), ("A", "nm-05", "090"), ("B", "nm-05", "090")]
    x = np.array([[0, 0], [10, 0], [20, 10], [0, 10], [1, 0], [9, 0], [19, 10], [1, 10]], dtype=np.float32)
    nm = evaluate_embeddings(x, labels, "casia-b", "euclidean")["euclidean"].condition("NM")
    np.testing.assert_array_equal(nm.accuracy[1], [[100, 50], [0, 100]])
    np.testing.assert_allclose(nm.per_probe_view(exclude_identical=True), [50, 0])
    np.testing.assert_allclose(nm.per_probe_view(exclude_identical=False), [75, 50])
    assert nm.mean(exclude_identical=True) == 25.0
    assert nm.mean(exclude_identical=False) == 62.5
    # BG and CL have no probes here: NaN, reported as "not measured", not as 0
    bg = evaluate_embeddings(x, labels, "casia-b", "euclidean")["euclidean"].condition("BG")
    assert bg.num_probes == 0 and np.isnan(bg.mean())


def test_bad_inputs_raise_typed_errors():
    labels = casia_labels(["001"], ["000"])
    x = np.zeros((len(labels), 4, 2), dtype=np.float32)
    with pytest.raises(EvaluationError, match="unknown protocol"):
        evaluate_embeddings(x, labels, "oumvlp")
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate_embeddings(x, labels, "casia-b", "hamming")
    with pytest.raises(EvaluationError, match="labels"):
        evaluate_embeddings(x[:-1], labels)
    with pytest.raises(EvaluationError, match="no sequence follows the ccpg"):
        evaluate_embeddings(x, labels, "ccpg")


# ------------------------------------------------------------------------------------------------
# CCPG
# ------------------------------------------------------------------------------------------------

CCPG_CONDITIONS = ["U0_D0", "U0_D0_BG", "U1_D1", "U2_D2", "U3_D3", "U0_D3", "U1_D0"]


def test_ccpg_pairs_views_and_separated_subjects():
    rng = np.random.default_rng(4)
    subjects = [f"{i:03d}" for i in range(101, 107)]
    folders = ["01_1", "02_1", "03_2"]  # CCPG view folders: the part before "_" is the camera
    labels = [(s, c, v) for s in subjects for c in CCPG_CONDITIONS for v in folders]
    x, _ = clustered(labels, rng)
    result = evaluate_embeddings(x, labels, "ccpg", "euclidean")["euclidean"]
    assert [c.name for c in result.conditions] == ["CL", "UP", "DN", "BG"]
    n_views = len(folders)
    expected_sizes = {"CL": (2, 3), "UP": (1, 1), "DN": (1, 1), "BG": (1, 1)}  # conditions in probe, gallery
    for cond in result.conditions:
        assert cond.views == ["01", "02", "03"]
        n_probe_conditions, n_gallery_conditions = expected_sizes[cond.name]
        assert cond.num_probes == len(subjects) * n_probe_conditions * n_views
        assert cond.num_gallery == len(subjects) * n_gallery_conditions * n_views
        assert cond.mean() == 100.0
        assert cond.reid.rank1 == cond.reid.mean_ap == cond.reid.mean_inp == 100.0
        assert cond.reid.valid_probes == cond.num_probes


def test_ccpg_reid_scores_on_a_hand_built_ranking():
    """BG pair (probe U0_D0_BG, gallery U0_D0), one channel, one part; positions on a line.

        gallery: A/01 at 0, A/02 at 1, B/02 at 2, A/03 at 3, B/03 at 4
        probes (view 01): A at 0, B at 3.4

    ReID: probe A drops A/01 (same subject, same view): ranking A/02, B/02, A/03, B/03 -> hits at ranks
    1 and 3: rank-1 right, AP (1/1 + 2/3)/2, INP 2/3. Probe B: A/03, B/03, B/02, A/02, A/01 -> hits at
    ranks 2 and 3: rank-1 wrong, AP (1/2 + 2/3)/2, INP 2/3.
    View table, probe view 01: vs gallery 01 (only A): A right, B wrong -> 50; vs 02: both right -> 100;
    vs 03: A right, B -> A/03 wrong -> 50.
    """
    labels = [("A", "U0_D0", "01"), ("A", "U0_D0", "02"), ("B", "U0_D0", "02"), ("A", "U0_D0", "03"),
              ("B", "U0_D0", "03"), ("A", "U0_D0_BG", "01"), ("B", "U0_D0_BG", "01")]
    x = np.array([0, 1, 2, 3, 4, 0, 3.4], dtype=np.float64)[:, None, None]
    bg = evaluate_embeddings(x, labels, "ccpg", "euclidean")["euclidean"].condition("BG")
    assert bg.reid.valid_probes == 2
    assert bg.reid.rank1 == 50.0
    np.testing.assert_allclose(bg.reid.mean_ap, 100 * ((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    np.testing.assert_allclose(bg.reid.mean_inp, 100 * 2 / 3)
    np.testing.assert_array_equal(bg.accuracy[1][0], [50, 100, 50])
    assert np.isnan(bg.accuracy[1][1:]).all()  # no probes in views 02 and 03
    assert bg.mean(exclude_identical=True) == 75.0
    np.testing.assert_allclose(bg.mean(exclude_identical=False), 200 / 3)


def test_ccpg_reid_skips_probes_whose_only_match_is_same_view():
    # UP pair: probe U3_D3, gallery U0_D3. Subject C's only gallery entry shares the probe's view.
    labels = [("A", "U0_D3", "01"), ("A", "U0_D3", "02"), ("C", "U0_D3", "01"),
              ("A", "U3_D3", "01"), ("C", "U3_D3", "01")]
    x = np.array([0.0, 0.1, 5.0, 0.05, 5.05])[:, None, None]
    up = evaluate_embeddings(x, labels, "ccpg", "euclidean")["euclidean"].condition("UP")
    assert up.reid.valid_probes == 1 and up.reid.rank1 == 100.0


# ------------------------------------------------------------------------------------------------
# SUSTech1K
# ------------------------------------------------------------------------------------------------

SUSTECH_CONDITIONS = ["00-nm", "01-nm", "01-bg", "02-cl-ub", "03-cr", "04-nt", "04-oc", "05-uf"]


def test_sustech1k_groups_attributes_and_reports_rank5():
    rng = np.random.default_rng(5)
    subjects = [f"{i:04d}" for i in range(6)]
    views = ["000", "090"]
    labels = [(s, c, v) for s in subjects for c in SUSTECH_CONDITIONS for v in views]
    x, centres = clustered(labels, rng, channels=32, noise=0.01)
    # Subject 0000's bag probe in view 000 lies closer to 0001 than to itself: wrong at rank 1, but its
    # own subject is second, so right at rank 5.
    x[index_of(labels, ("0000", "01-bg", "000"))] = 0.45 * centres["0000"] + 0.55 * centres["0001"]
    result = evaluate_embeddings(x, labels, "sustech1k", "cosine")["cosine"]

    counts = {c.name: c.num_probes for c in result.conditions}
    n = len(subjects) * len(views)
    assert counts == {"Normal": n, "Bag": n, "Clothing": n, "Carrying": n, "Umbrella": n, "Uniform": n,
                      "Occlusion": n, "Night": n,
                      "Overall": n * 6}  # sequences numbered 01..04: 01-nm 01-bg 02-cl-ub 03-cr 04-nt 04-oc
    assert all(c.num_gallery == n for c in result.conditions)  # 00-nm

    bag, overall = result.condition("Bag"), result.condition("Overall")
    np.testing.assert_allclose(bag.per_probe_view(1), [100 * 5 / 6, 100])
    np.testing.assert_allclose(bag.mean(1), (100 * 5 / 6 + 100) / 2)
    np.testing.assert_allclose(overall.per_probe_view(1), [100 * (36 - 1) / 36, 100])
    assert bag.mean(5) == overall.mean(5) == 100.0
    for name in ("Normal", "Clothing", "Umbrella", "Night", "Uniform"):
        assert result.condition(name).mean(1) == 100.0
    summary = evaluate_embeddings(x, labels, "sustech1k", "cosine").summary()["cosine"]["Bag"]
    assert set(summary) == {"rank1", "rank1_incl_identical", "rank5", "rank5_incl_identical"}


# ------------------------------------------------------------------------------------------------
# Embedding and run_evaluation on tiny ONNX models over pkl trees
# ------------------------------------------------------------------------------------------------

PARTS = 4


def strip_pool(frames: torch.Tensor) -> torch.Tensor:
    """(N, T, 64, W) -> (N, W, PARTS): time mean, then the mean of each horizontal strip per column."""
    n, _, h, w = frames.shape
    return frames.mean(1).reshape(n, PARTS, h // PARTS, w).mean(2).transpose(1, 2)


class StripPool(nn.Module):
    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        return strip_pool(sils)


class StripPoolTwoInputs(nn.Module):
    def forward(self, sils: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
        return torch.cat([strip_pool(sils), strip_pool(depths)], dim=1)


def export_tiny(module: nn.Module, path: Path, inputs: list[str]) -> Path:
    example = tuple(torch.rand(1, 5, 64, 44) for _ in inputs)
    dynamic = {name: {0: "batch", 1: "frames"} for name in inputs} | {"embedding": {0: "batch"}}
    torch.onnx.export(module, example, str(path), input_names=inputs, output_names=["embedding"],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    meta = EmbeddingModelMetadata(variant="silhouette" if inputs == ["sils"] else "concat", inputs=inputs,
                                  embedding_channels=44 * len(inputs), embedding_parts=PARTS)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.model_dump_json()
    onnx.save(model, str(path))
    return path


def subject_frames(subject: int, rng: np.random.Generator, frames: int = 6) -> np.ndarray:
    """(T, 64, 64) uint8: a vertical bar whose column depends on the subject, plus a few speckles."""
    array = np.zeros((frames, 64, 64), dtype=np.uint8)
    col = 12 + 6 * subject  # inside the 10..54 columns the 64 -> 44 trim keeps
    array[:, 8:60, col:col + 4] = 255
    speckles = rng.random(array.shape) < 0.002
    array[speckles] = 255
    return array


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


def test_run_evaluation_end_to_end_on_onnx(casia_tree, tmp_path, capsys):
    model = export_tiny(StripPool(), tmp_path / "tiny.onnx", ["sils"])
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


def test_embed_dataset_reads_and_scales_depth(tmp_path):
    rng = np.random.default_rng(7)
    sil_root, depth_root = tmp_path / "sil", tmp_path / "depth"
    for s in (1, 2):
        for view in ("000", "090"):
            frames = 3 + s
            save_sequence(sil_root, f"00{s}", "nm-01", view, subject_frames(s, rng, frames))
            save_sequence(depth_root, f"00{s}", "nm-01", view, rng.integers(0, 256, (frames, 64, 64), np.uint8))
    model = export_tiny(StripPoolTwoInputs(), tmp_path / "two.onnx", ["sils", "depths"])
    infos = list_sequences(sil_root)

    with pytest.raises(EvaluationError, match="needs depth"):
        embed_dataset(model, infos, progress=False)
    got = embed_dataset(model, infos, depth_root=depth_root, progress=False)

    assert got.sequences == infos and got.embeddings.shape == (4, 88, PARTS)
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
    from model.checkpoint import save_checkpoint
    from model.config import ExperimentConfig
    from model.depthgait import build_model
    from model.export import export_onnx

    cfg = ExperimentConfig.model_validate({"model": {"variant": "silhouette", "width": 8, "layers": [1, 1, 1, 1]}})
    torch.manual_seed(0)
    net = build_model(cfg.model).eval()
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, {"model": net.state_dict(), "config": cfg.model_dump(mode="json")})
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


def test_run_evaluation_refuses_bad_inputs(tmp_path, casia_tree):
    model = export_tiny(StripPool(), tmp_path / "tiny.onnx", ["sils"])
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

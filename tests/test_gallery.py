"""Gallery: metric, search/aggregation, open set, CRUD, models, namespaces, persistence, crash
safety, concurrency, calibration. Synthetic embeddings only (fast, no data needed)."""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from gallery import (
    Gallery,
    InvalidInputError,
    ModelMismatchError,
    SequenceInput,
    SubjectExistsError,
    SubjectNotFoundError,
    calibrate,
    namespace_for_api_key,
    normalize_embeddings,
)
from gallery.index import VectorIndex
from service.cli import app as gaitid_cli

C, P = 256, 16
REPO = Path(__file__).resolve().parent.parent


def embedding(rng: np.random.Generator, center: np.ndarray | None = None, noise: float = 1.0) -> np.ndarray:
    e = rng.standard_normal((C, P)).astype(np.float32) * noise
    return e if center is None else (center + e).astype(np.float32)


def sequence(rng: np.random.Generator, emb: np.ndarray, frames: int = 3, depth: bool = False) -> SequenceInput:
    sils = (rng.random((frames, 64, 44)) > 0.5).astype(np.uint8) * 255
    dep = rng.random((frames, 64, 44)).astype(np.float32) if depth else None
    return SequenceInput(silhouettes=sils, embedding=emb, depth=dep, metadata={"frames": frames})


def direct_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over parts of the cosine of the C-dim part features, written out independently."""
    cosines = []
    for p in range(a.shape[1]):
        x, y = a[:, p].astype(np.float64), b[:, p].astype(np.float64)
        cosines.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return float(np.mean(cosines))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def gallery(tmp_path: Path):
    g = Gallery(tmp_path / "gallery", threshold=0.5)
    yield g
    g.close()


# -- metric and search -------------------------------------------------------------------------
def test_score_is_exactly_mean_per_part_cosine(gallery: Gallery, rng: np.random.Generator) -> None:
    enrolled = [embedding(rng) * rng.uniform(0.01, 100, size=(1, P)).astype(np.float32) for _ in range(6)]
    for i, e in enumerate(enrolled):
        gallery.enroll(f"s{i}", [sequence(rng, e)], model_id="m")
    query = enrolled[2] * 0.3 + embedding(rng)
    answer = gallery.search(query, model_id="m", top_k=6)[0]
    assert len(answer.candidates) == 6
    for candidate in answer.candidates:
        expected = direct_similarity(query, enrolled[int(candidate.subject_id[1:])])
        assert candidate.score == pytest.approx(expected, abs=2e-6)
    scores = [c.score for c in answer.candidates]
    assert scores == sorted(scores, reverse=True)
    assert answer.candidates[0].subject_id == "s2"


def test_subject_counts_once_at_its_best_sequence(gallery: Gallery, rng: np.random.Generator) -> None:
    target = embedding(rng)
    # "many" has 6 sequences all closer to the query than anything of "other": without aggregation
    # they would fill the whole top-2.
    many = [target + embedding(rng, noise=0.3 + 0.05 * i) for i in range(6)]
    other = target + embedding(rng, noise=1.5)
    gallery.enroll("many", [sequence(rng, e) for e in many], model_id="m")
    gallery.enroll("other", [sequence(rng, other)], model_id="m")
    gallery.enroll("far", [sequence(rng, embedding(rng))], model_id="m")
    answer = gallery.search(target, model_id="m", top_k=2)[0]
    assert [c.subject_id for c in answer.candidates] == ["many", "other"]
    best_many = max(direct_similarity(target, e) for e in many)
    assert answer.candidates[0].score == pytest.approx(best_many, abs=2e-6)
    assert answer.candidates[1].score == pytest.approx(direct_similarity(target, other), abs=2e-6)


def test_top_k_subjects_match_brute_force(gallery: Gallery, rng: np.random.Generator) -> None:
    centers = [embedding(rng) for _ in range(25)]
    stored: dict[str, list[np.ndarray]] = {}
    for i, center in enumerate(centers):
        embs = [center + embedding(rng, noise=1.2) for _ in range(1 + i % 5)]
        stored[f"p{i:02d}"] = embs
        gallery.enroll(f"p{i:02d}", [sequence(rng, e, frames=1) for e in embs], model_id="m")
    queries = np.stack([c + embedding(rng, noise=1.2) for c in centers[:8]])
    answers = gallery.search(queries, model_id="m", top_k=4)
    for query, answer in zip(queries, answers):
        best = {s: max(direct_similarity(query, e) for e in embs) for s, embs in stored.items()}
        expected = sorted(best, key=best.get, reverse=True)[:4]
        assert [c.subject_id for c in answer.candidates] == expected


def test_open_set_threshold_answers_unknown(gallery: Gallery, rng: np.random.Generator) -> None:
    known = embedding(rng)
    gallery.enroll("alice", [sequence(rng, known)], model_id="m", display_name="Alice")
    same = gallery.search(known + embedding(rng, noise=0.2), model_id="m")[0]
    assert same.subject_id == "alice" and same.is_known and same.best.display_name == "Alice"
    stranger = gallery.search(embedding(rng), model_id="m")[0]
    assert stranger.subject_id is None and not stranger.is_known
    assert stranger.best is not None and stranger.best.score < 0.5  # still reported as a candidate
    # The threshold argument overrides the gallery's default in both directions.
    assert gallery.search(embedding(rng), model_id="m", threshold=-1.0)[0].subject_id == "alice"
    assert gallery.search(known, model_id="m", threshold=1.01)[0].subject_id is None


def test_empty_gallery_answers_unknown(gallery: Gallery, rng: np.random.Generator) -> None:
    answers = gallery.search(np.stack([embedding(rng), embedding(rng)]), model_id="m")
    assert [a.subject_id for a in answers] == [None, None]
    assert all(a.candidates == () for a in answers)


# -- enrollment, records, deletion --------------------------------------------------------------
def test_enroll_modes_records_and_stored_sequences(gallery: Gallery, rng: np.random.Generator) -> None:
    first = sequence(rng, embedding(rng), frames=4, depth=True)
    result = gallery.enroll("bob", [first], model_id="m", display_name="Bob", metadata={"team": "a"})
    assert result.created and len(result.sequence_ids) == 1
    appended = gallery.enroll("bob", [sequence(rng, embedding(rng), frames=2)], model_id="m")
    assert not appended.created and appended.generation == result.generation + 1
    record = gallery.get_subject("bob")
    assert record.display_name == "Bob" and record.metadata == {"team": "a"} and record.sequence_count == 2
    assert [s.frames for s in record.sequences] == [4, 2]
    assert [s.has_depth for s in record.sequences] == [True, False]
    assert record.sequences[0].model_ids == ("m",) and record.sequences[0].metadata == {"frames": 4}

    stored = gallery.get_sequence(result.sequence_ids[0])
    np.testing.assert_array_equal(stored.silhouettes, first.silhouettes)
    np.testing.assert_array_equal(stored.depth, first.depth)
    assert stored.silhouettes.dtype == np.uint8 and stored.depth.dtype == np.float32

    with pytest.raises(SubjectExistsError):
        gallery.enroll("bob", [sequence(rng, embedding(rng))], model_id="m", if_exists="error")
    gallery.flush()
    old_vector = normalize_embeddings(first.embedding)[0].tobytes()[:64]
    assert old_vector in gallery.index_path("default").read_bytes()
    replacement = embedding(rng)
    replaced = gallery.enroll("bob", [sequence(rng, replacement)], model_id="m", if_exists="replace",
                              metadata={"team": "b"})
    assert set(replaced.replaced_sequence_ids) == set(result.sequence_ids + appended.sequence_ids)
    record = gallery.get_subject("bob")
    assert record.sequence_count == 1 and record.metadata == {"team": "b"} and record.display_name == "Bob"
    hit = gallery.search(replacement, model_id="m")[0].best
    assert hit.sequence_id == replaced.sequence_ids[0] and hit.score == pytest.approx(1.0, abs=1e-5)
    assert gallery.status().index.vectors == 1
    index_file = gallery.index_path("default")  # no stale index file keeps the replaced vectors
    assert not index_file.exists() or old_vector not in index_file.read_bytes()
    gallery.flush()
    assert old_vector not in index_file.read_bytes()

    gallery.enroll("carol", [sequence(rng, embedding(rng))], model_id="m")
    assert [s.subject_id for s in gallery.list_subjects()] == ["bob", "carol"]
    assert [s.subject_id for s in gallery.list_subjects(offset=1, limit=5)] == ["carol"]


def test_delete_really_removes_vectors_and_footage(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    secret = embedding(rng)
    with Gallery(root) as g:
        g.enroll("keep", [sequence(rng, embedding(rng))], model_id="m")
        g.enroll("gone", [sequence(rng, secret), sequence(rng, secret + embedding(rng, noise=0.1))], model_id="m")
        g.flush()
        needle = secret.astype(np.float32).tobytes()[:64]
        assert any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())  # the check can see it
        assert g.delete_subject("gone") == 2
        assert g.status().index.vectors == 1 and g.status().sequences == 1
        assert all(c.subject_id == "keep" for c in g.search(secret, model_id="m", top_k=5)[0].candidates)
        with pytest.raises(SubjectNotFoundError):
            g.get_subject("gone")
        with pytest.raises(SubjectNotFoundError):
            g.delete_subject("gone")
        # While the gallery is still running, the raw embedding bytes are nowhere on disk: not in
        # freed database pages, not in old WAL frames, not in an index file.
        for path in root.rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), path
    with sqlite3.connect(root / "gallery.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM sequences").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1
    for path in root.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


def test_invalid_input_is_a_typed_error(gallery: Gallery, rng: np.random.Generator) -> None:
    good = embedding(rng)
    sils = np.zeros((3, 64, 44), np.uint8)
    bad_calls = [
        lambda: gallery.enroll("x", [SequenceInput(np.zeros((3, 64, 64), np.uint8), good)], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils.astype(np.float32), good)], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good, depth=np.zeros((2, 64, 44)))], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, np.full((C, P), np.nan, np.float32))], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good[None])], model_id="m"),
        lambda: gallery.enroll("x", [], model_id="m"),
        lambda: gallery.enroll("", [SequenceInput(sils, good)], model_id="m"),
        lambda: gallery.enroll("x\n", [SequenceInput(sils, good)], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good)], model_id="m", metadata={"a": object()}),
        lambda: gallery.enroll("x", [SequenceInput(sils, good)], model_id="m", if_exists="merge"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good)], model_id="m", namespace="../etc"),
        lambda: gallery.search(good, model_id="m", top_k=0),
        lambda: gallery.search(np.zeros((2, 3, 4, 5)), model_id="m"),
        lambda: gallery.search(good, model_id="m", threshold=float("nan")),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidInputError):
            call()
    assert gallery.status().subjects == 0  # nothing half-enrolled
    gallery.enroll("x", [SequenceInput(sils, good)], model_id="m")
    with pytest.raises(InvalidInputError):  # same model, other embedding shape
        gallery.search(np.zeros((C, 8), np.float32), model_id="m")


# -- models and re-embedding ------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _projection() -> np.ndarray:
    return np.random.default_rng(99).standard_normal((64 * 44, C * P)).astype(np.float32)


def embed_from_silhouettes(sils: np.ndarray, depth: np.ndarray | None) -> np.ndarray:
    """A stand-in 'new model': a fixed random projection of the mean silhouette."""
    return (sils.mean(axis=0).reshape(1, -1) / 255.0 @ _projection()).reshape(C, P)


def test_models_never_mix_until_reembedded(gallery: Gallery, rng: np.random.Generator) -> None:
    sequences = {f"s{i}": sequence(rng, embedding(rng), frames=2) for i in range(4)}
    for subject, seq in sequences.items():
        gallery.enroll(subject, [seq], model_id="model-a")
    status = gallery.status()
    assert status.model_id == "model-a" and status.needs_reembed("model-b") and not status.needs_reembed("model-a")
    with pytest.raises(ModelMismatchError) as info:
        gallery.search(embedding(rng), model_id="model-b")
    assert info.value.gallery_model_id == "model-a" and "re-embed" in str(info.value)
    with pytest.raises(ModelMismatchError):
        gallery.enroll("new", [sequence(rng, embedding(rng))], model_id="model-b")

    calls = []
    report = gallery.reembed(embed_from_silhouettes, model_id="model-b", batch_size=3,
                             progress=lambda done, total: calls.append((done, total)))
    assert report.embedded == 4 and report.sequences == 4 and report.old_model_id == "model-a"
    assert calls == [(3, 4), (4, 4)]
    assert gallery.status().model_id == "model-b"
    for subject, seq in sequences.items():  # the stored footage gives back each subject
        query = embed_from_silhouettes(seq.silhouettes, None)
        assert gallery.search(query, model_id="model-b")[0].best.subject_id == subject
    with pytest.raises(ModelMismatchError):
        gallery.search(embedding(rng), model_id="model-a")
    record = gallery.get_subject("s0")
    assert record.sequences[0].model_ids == ("model-b",)  # old embeddings dropped, footage kept
    np.testing.assert_array_equal(gallery.get_sequence(record.sequences[0].sequence_id).silhouettes,
                                  sequences["s0"].silhouettes)


def test_interrupted_reembed_keeps_old_model_and_resumes(gallery: Gallery, rng: np.random.Generator) -> None:
    for i in range(5):
        gallery.enroll(f"s{i}", [sequence(rng, embedding(rng), frames=2)], model_id="a")
    calls = 0

    def flaky(sils: np.ndarray, depth: np.ndarray | None) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("GPU fell over")
        return embed_from_silhouettes(sils, depth)

    with pytest.raises(RuntimeError):
        gallery.reembed(flaky, model_id="b", batch_size=2)
    assert gallery.status().model_id == "a"  # still searchable with the old model
    assert gallery.search(embedding(rng), model_id="a")[0].candidates
    report = gallery.reembed(embed_from_silhouettes, model_id="b", batch_size=2)
    assert report.embedded == 3  # the first batch of 2 was kept
    assert gallery.status().model_id == "b" and gallery.status().index.vectors == 5


# -- namespaces -------------------------------------------------------------------------------
def test_namespaces_are_isolated(gallery: Gallery, rng: np.random.Generator) -> None:
    e1, e2 = embedding(rng), embedding(rng)
    gallery.enroll("same-id", [sequence(rng, e1)], model_id="m", namespace="tenant-1", display_name="One")
    gallery.enroll("same-id", [sequence(rng, e2)], model_id="other", namespace="tenant-2", display_name="Two")
    gallery.enroll("only-2", [sequence(rng, e1)], model_id="other", namespace="tenant-2")
    assert gallery.namespaces() == ["tenant-1", "tenant-2"]
    hit = gallery.search(e1, model_id="m", namespace="tenant-1", top_k=5)[0]
    assert [c.display_name for c in hit.candidates] == ["One"]
    assert gallery.status("tenant-1").index.vectors == 1 and gallery.status("tenant-2").index.vectors == 2
    assert gallery.search(e1, model_id="m")[0].candidates == ()  # the default namespace is empty
    gallery.delete_subject("same-id", namespace="tenant-1")
    assert gallery.get_subject("same-id", namespace="tenant-2").display_name == "Two"
    gallery.flush()
    key_namespace = namespace_for_api_key("secret-key-1")
    assert key_namespace != namespace_for_api_key("secret-key-2") and "secret" not in key_namespace
    assert gallery.search(e1, model_id="m", namespace=key_namespace)[0].candidates == ()  # a valid name
    assert VectorIndex.read_header(gallery.index_path("tenant-1"))["ntotal"] == 0
    assert VectorIndex.read_header(gallery.index_path("tenant-2"))["ntotal"] == 2


# -- persistence and rebuilds ----------------------------------------------------------------
def test_index_file_reused_or_rebuilt(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    queries = np.stack([embedding(rng) for _ in range(3)])
    with Gallery(root) as g:
        for i in range(6):
            g.enroll(f"s{i}", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m")
        expected = [[(c.subject_id, round(c.score, 5)) for c in a.candidates] for a in g.search(queries, model_id="m")]
    path = root / "index" / "default.faiss"
    old_file = path.read_bytes()

    def reopen(reason_prefix: str | None) -> None:
        with Gallery(root) as g:
            info = g.status().index
            assert info.loaded_from == ("file" if reason_prefix is None else "rebuilt")
            assert (info.rebuild_reason or "").startswith(reason_prefix or "")
            got = [[(c.subject_id, round(c.score, 5)) for c in a.candidates] for a in g.search(queries, model_id="m")]
            assert got == expected

    reopen(None)
    path.unlink()
    reopen("missing")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot in the vectors
    path.write_bytes(bytes(data))
    reopen("corrupt")
    path.write_bytes(path.read_bytes()[:1000])  # torn write
    reopen("corrupt")
    path.write_bytes(b"not an index")
    reopen("corrupt")
    with Gallery(root) as g:  # one more enrollment: the saved file now reflects an older generation
        g.enroll("late", [sequence(rng, embedding(rng))], model_id="m")
        expected = [[(c.subject_id, round(c.score, 5)) for c in a.candidates] for a in g.search(queries, model_id="m")]
    path.write_bytes(old_file)
    reopen("stale")


def test_index_file_of_a_diverged_copy_or_edited_database_is_not_trusted(tmp_path: Path,
                                                                           rng: np.random.Generator) -> None:
    import shutil

    root, copy = tmp_path / "g", tmp_path / "copy"
    with Gallery(root) as g:
        g.enroll("a", [sequence(rng, embedding(rng))], model_id="m")
    shutil.copytree(root, copy)
    for r, name in ((root, "x"), (copy, "y")):  # same generation, same id, different content
        with Gallery(r) as g:
            g.enroll(name, [sequence(rng, embedding(rng))], model_id="m")
    shutil.copy(root / "index" / "default.faiss", copy / "index" / "default.faiss")
    with Gallery(copy) as g:
        assert g.status().index.rebuild_reason.startswith("stale: generation_token")
        assert [s.subject_id for s in g.list_subjects()] == ["a", "y"]
    # An edit behind the gallery's back (same count, same generation, other ids) is caught too.
    with sqlite3.connect(copy / "gallery.db") as conn:
        conn.execute("UPDATE embeddings SET sequence_id = 999 WHERE sequence_id = 1")
        conn.execute("UPDATE sequences SET id = 999 WHERE id = 1")
    with Gallery(copy) as g:
        assert g.status().index.rebuild_reason == "stale: ids differ from the database"
        assert g.get_subject("a").sequences[0].sequence_id == 999


def test_second_instance_sees_writes_of_the_first(tmp_path: Path, rng: np.random.Generator) -> None:
    """Two Gallery objects on one root behave like two processes: the generation check reloads."""
    with Gallery(tmp_path / "g") as writer, Gallery(tmp_path / "g") as reader:
        e = embedding(rng)
        assert reader.search(e, model_id="m")[0].candidates == ()
        writer.enroll("a", [sequence(rng, e)], model_id="m")
        assert reader.search(e, model_id="m")[0].subject_id == "a"

        def subjects(g: Gallery) -> list[str]:
            return sorted(c.subject_id for c in g.search(e, model_id="m", top_k=10)[0].candidates)

        reader.enroll("b", [sequence(rng, embedding(rng))], model_id="m")
        writer.enroll("c", [sequence(rng, embedding(rng))], model_id="m")  # writer missed "b": reloads
        assert subjects(writer) == subjects(reader) == ["a", "b", "c"]
        reader.enroll("d", [sequence(rng, embedding(rng))], model_id="m")
        writer.delete_subject("a")  # writer missed "d": reloads
        assert subjects(writer) == subjects(reader) == ["b", "c", "d"]


def test_gpu_style_replica_gives_the_same_answers(tmp_path: Path, rng: np.random.Generator) -> None:
    """The GPU path (flat replica + id array, re-uploaded after removals) run with a CPU flat index."""
    with Gallery(tmp_path / "a") as plain, Gallery(tmp_path / "b", replica_factory=faiss.IndexFlatIP) as replica:
        embs = [embedding(rng) for _ in range(12)]
        for g in (plain, replica):
            for i, e in enumerate(embs):
                g.enroll(f"s{i}", [sequence(rng, e, frames=1)], model_id="m")
        queries = np.stack([e + embedding(rng, noise=0.5) for e in embs[:5]])
        for step in range(2):
            a = plain.search(queries, model_id="m", top_k=4)
            b = replica.search(queries, model_id="m", top_k=4)
            for x, y in zip(a, b):
                assert [c.subject_id for c in x.candidates] == [c.subject_id for c in y.candidates]
                np.testing.assert_allclose([c.score for c in x.candidates], [c.score for c in y.candidates], atol=1e-6)
            fresh = embedding(rng)
            for g in (plain, replica):  # a removal (replica re-upload) and additions (appended)
                g.delete_subject("s1")
                g.enroll("s12", [sequence(rng, embs[0], frames=1)], model_id="m")
                g.enroll("s1" if step == 0 else "s13", [sequence(rng, fresh, frames=1)], model_id="m")


def test_fp16_index_scores_close_to_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g", index_kind="fp16") as g:
        embs = [embedding(rng) for _ in range(20)]
        for i, e in enumerate(embs):
            g.enroll(f"s{i}", [sequence(rng, e, frames=1)], model_id="m")
        query = embs[3] + embedding(rng, noise=0.8)
        answer = g.search(query, model_id="m", top_k=3)[0]
        assert answer.best.subject_id == "s3"
        for c in answer.candidates:
            assert c.score == pytest.approx(direct_similarity(query, embs[int(c.subject_id[1:])]), abs=2e-3)
        assert g.status().index.kind == "fp16"


def test_vector_index_save_is_atomic_and_checked(tmp_path: Path, rng: np.random.Generator) -> None:
    index = VectorIndex(8)
    index.add(np.array([5, 9], np.int64), rng.standard_normal((2, 8)).astype(np.float32))
    path = tmp_path / "x.faiss"
    index.save(path, {"generation": 3})
    loaded, header = VectorIndex.load(path)
    assert header["generation"] == 3 and sorted(loaded.ids().tolist()) == [5, 9]
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temporary left behind


# -- crash safety and concurrency ---------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import gallery.store
    from gallery import Gallery, SequenceInput

    root, point, action = sys.argv[1], sys.argv[2], sys.argv[3]

    def hook(name):
        if name == point:
            if action == "exit":
                os._exit(17)
            open(os.path.join(root, "inside"), "w").close()
            time.sleep(60)  # the parent SIGKILLs us here

    gallery.store.FAULT_HOOK = hook
    g = Gallery(root)
    rng = np.random.default_rng(7)
    seqs = [SequenceInput(np.full((3, 64, 44), 255, np.uint8), rng.standard_normal((256, 16)).astype(np.float32))
            for _ in range(3)]
    g.enroll("victim", seqs, model_id="m")
    print("enrollment returned", flush=True)
""")


def _run_child(root: Path, point: str, action: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), point, action], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if action == "kill":
        deadline = time.monotonic() + 60
        while not (root / "inside").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "child never reached the fault point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return proc.returncode


def _assert_consistent(root: Path, expected_subjects: list[str], rng: np.random.Generator) -> None:
    with sqlite3.connect(root / "gallery.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Gallery(root) as g:
        status = g.status()
        assert [s.subject_id for s in g.list_subjects()] == expected_subjects
        assert status.index.vectors == status.sequences == sum(g.get_subject(s).sequence_count for s in expected_subjects)
        _, subjects, embs = g.export_embeddings()
        assert sorted(set(subjects)) == expected_subjects
        for e, subject in zip(embs, subjects):
            assert g.search(e, model_id="m")[0].best.subject_id == subject
        g.enroll("after-crash", [sequence(rng, embedding(rng))], model_id="m")  # still writable


@pytest.mark.parametrize("point,action,survives", [
    ("enroll:written", "exit", False),  # died inside the transaction
    ("enroll:written", "kill", False),  # SIGKILLed inside the transaction
    ("enroll:committed", "exit", True),  # died after COMMIT, before the index update
])
def test_crash_during_enrollment_leaves_before_or_after(tmp_path: Path, rng: np.random.Generator,
                                                        point: str, action: str, survives: bool) -> None:
    root = tmp_path / "g"
    with Gallery(root) as g:
        g.enroll("existing", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m")
    code = _run_child(root, point, action)
    assert code == (17 if action == "exit" else -signal.SIGKILL)
    _assert_consistent(root, ["existing", "victim"] if survives else ["existing"], rng)


def test_concurrent_enrollments_and_searches(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    with Gallery(tmp_path / "g") as g:
        seed = np.random.default_rng(0)
        g.enroll("seed", [sequence(seed, embedding(seed))], model_id="m")

        def enroller(worker: int) -> None:
            rng = np.random.default_rng(worker)
            try:
                for i in range(8):
                    e = embedding(rng)
                    g.enroll(f"w{worker}-{i}", [sequence(rng, e, frames=1), sequence(rng, e * 2, frames=1)],
                             model_id="m")
                    assert g.search(e, model_id="m")[0].subject_id == f"w{worker}-{i}"
                    if i % 3 == 2:
                        g.delete_subject(f"w{worker}-{i - 1}")
            except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
                errors.append(exc)

        def searcher() -> None:
            rng = np.random.default_rng(100)
            try:
                while not stop.is_set():
                    for answer in g.search(np.stack([embedding(rng) for _ in range(4)]), model_id="m", top_k=3):
                        assert len({c.subject_id for c in answer.candidates}) == len(answer.candidates)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=enroller, args=(w,)) for w in range(4)]
        readers = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads + readers:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()
        for t in readers:
            t.join(timeout=30)
        assert not errors, errors
        status = g.status()
        assert status.subjects == 1 + 4 * (8 - 2) and status.sequences == 1 + 2 * 4 * (8 - 2)
        assert status.index.vectors == status.sequences
        ids, _, _ = g.export_embeddings()
        assert sorted(g.store.active_sequence_map(g.store.connection(), "default", "m")[0].tolist()) == sorted(ids.tolist())


# -- calibration --------------------------------------------------------------------------------
def _labelled(rng: np.random.Generator, subjects: int, per_subject: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    centers = [embedding(rng) for _ in range(subjects)]
    embs = np.stack([c + embedding(rng, noise=noise) for c in centers for _ in range(per_subject)])
    labels = np.repeat([f"id{i}" for i in range(subjects)], per_subject)
    return embs, labels


def test_calibrate_pairs_matches_brute_force(rng: np.random.Generator) -> None:
    embs, labels = _labelled(rng, subjects=12, per_subject=4, noise=5.5)  # overlapping score ranges
    report = calibrate(embs, labels, target_far=0.05)
    genuine, impostor = [], []
    for i in range(len(embs)):
        for j in range(i + 1, len(embs)):
            (genuine if labels[i] == labels[j] else impostor).append(direct_similarity(embs[i], embs[j]))
    genuine, impostor = np.array(genuine), np.array(impostor)
    assert report.genuine_trials == len(genuine) == 12 * 6 and report.impostor_trials == len(impostor)
    # Same trials and scores as a direct computation (float32 index arithmetic vs float64 here).
    np.testing.assert_allclose(report.genuine_scores, np.sort(genuine), atol=1e-5)
    np.testing.assert_allclose(report.impostor_scores, np.sort(impostor), atol=1e-5)
    t = report.threshold
    scores_imp, scores_gen = report.impostor_scores, report.genuine_scores
    assert report.far_at_threshold == np.mean(scores_imp >= t) and report.frr_at_threshold == np.mean(scores_gen < t)
    assert report.far_at_threshold <= 0.05
    # Lowest such threshold: accepting the next impostor score below it would break the target.
    assert np.mean(scores_imp >= scores_imp[scores_imp < t].max()) > 0.05
    _, far, frr = report.curve()
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0)
    assert 0.0 < report.eer < 0.5
    eer_far, eer_frr = report.rates_at(report.eer_threshold)
    assert abs(eer_far - eer_frr) <= 1 / report.genuine_trials  # FAR and FRR cross there (one step apart)
    assert report.eer == pytest.approx((eer_far + eer_frr) / 2)


def test_calibrate_open_set_counts_unenrolled_probes_as_impostors(rng: np.random.Generator) -> None:
    embs, labels = _labelled(rng, subjects=10, per_subject=3, noise=1.5)
    subject_index = np.repeat(np.arange(10), 3)
    gallery_mask = (np.tile([True, False, False], 10)) & (subject_index < 7)  # subjects 7-9 never enrolled
    report = calibrate(embs, labels, gallery_mask=gallery_mask, target_far=0.0)
    assert report.mode == "open-set"
    assert report.genuine_trials == 7 * 2 and report.impostor_trials == 3 * 3
    assert report.far_at_threshold == 0.0
    assert report.threshold > report.impostor_scores.max()
    # The well-separated synthetic identities are recognised at that threshold.
    assert report.frr_at_threshold < 0.5 and report.misidentified == 0


def test_calibrate_cli(tmp_path: Path, rng: np.random.Generator) -> None:
    embs, labels = _labelled(rng, subjects=6, per_subject=3, noise=2.0)
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=embs, labels=labels)
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(gaitid_cli, ["calibrate", str(path), "--target-far", "0.1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "threshold at FAR <= 0.1" in result.output and "| threshold | FAR | FRR |" in result.output
    summary = json.loads(out.read_text())
    assert summary["threshold"] == pytest.approx(calibrate(embs, labels, target_far=0.1).threshold)
    bad = CliRunner().invoke(gaitid_cli, ["calibrate", str(tmp_path / "missing.npz")])
    assert bad.exit_code == 2 and "error:" in bad.output

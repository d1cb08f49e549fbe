"""Enrollment and deletion: modes, records, stored model inputs (uint8 silhouettes and depth),
vectors and footage really gone after a deletion, typed errors for invalid input."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gaitid.contract import search_vectors
from gallery import Gallery, InvalidInputError, SequenceInput, SubjectExistsError, SubjectNotFoundError
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import C, P, embedding, sequence


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
    assert stored.silhouettes.dtype == np.uint8 and stored.depth.dtype == np.uint8  # contract v2 inputs

    with pytest.raises(SubjectExistsError):
        gallery.enroll("bob", [sequence(rng, embedding(rng))], model_id="m", if_exists="error")
    gallery.flush()
    old_vector = search_vectors(first.embedding)[0].tobytes()[:64]
    if gallery.backend == "faiss":
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
    assert gallery.check() == []  # the stored index (file or collection) holds exactly the active sequences
    if gallery.backend == "faiss":
        index_file = gallery.index_path("default")  # no stale index file keeps the replaced vectors
        assert not index_file.exists() or old_vector not in index_file.read_bytes()
        gallery.flush()
        assert old_vector not in index_file.read_bytes()

    gallery.enroll("carol", [sequence(rng, embedding(rng))], model_id="m")
    assert [s.subject_id for s in gallery.list_subjects()] == ["bob", "carol"]
    assert [s.subject_id for s in gallery.list_subjects(offset=1, limit=5)] == ["carol"]


def test_uint8_depth_round_trips_exactly(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    """Every depth value 0..255 comes back bit for bit, also after the gallery is reopened."""
    depth = (np.arange(2 * 64 * 44) % 256).astype(np.uint8).reshape(2, 64, 44)
    sils = np.full((2, 64, 44), 255, np.uint8)
    with open_gallery(tmp_path / "g") as g:
        sequence_id = g.enroll("d", [SequenceInput(sils, embedding(rng), depth)], model_id="m").sequence_ids[0]
    with open_gallery(tmp_path / "g") as g:
        stored = g.get_sequence(sequence_id)
    assert stored.depth.dtype == np.uint8 and stored.depth.shape == (2, 64, 44)
    np.testing.assert_array_equal(stored.depth, depth)
    assert np.unique(stored.depth).tolist() == list(range(256))


def test_from_aligned_keeps_the_pipelines_model_inputs(rng: np.random.Generator) -> None:
    aligned = SimpleNamespace(silhouettes=np.full((3, 64, 44), 255, np.uint8),
                              depth=np.full((3, 64, 44), 17, np.uint8))
    e = embedding(rng)
    made = SequenceInput.from_aligned(aligned, e, {"source": "clip.mp4"})
    assert made.silhouettes is aligned.silhouettes and made.depth is aligned.depth and made.embedding is e
    assert made.metadata == {"source": "clip.mp4"}


def test_delete_really_removes_vectors_and_footage(open_gallery: OpenGallery, tmp_path: Path,
                                                   rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    secret = embedding(rng)
    with open_gallery(root) as g:
        g.enroll("keep", [sequence(rng, embedding(rng))], model_id="m")
        g.enroll("gone", [sequence(rng, secret), sequence(rng, secret + embedding(rng, noise=0.1))], model_id="m")
        g.flush()
        needle = secret.astype(np.float32).tobytes()[:64]
        index_needle = search_vectors(secret)[0].tobytes()[:64]  # what the index holds of it
        assert any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())  # the check can see it
        assert any(index_needle in p.read_bytes() for p in root.rglob("*") if p.is_file())
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
            assert index_needle not in path.read_bytes(), path  # nor its search vector (index, Milvus files)


def test_invalid_input_is_a_typed_error(gallery: Gallery, rng: np.random.Generator) -> None:
    good = embedding(rng)
    sils = np.zeros((3, 64, 44), np.uint8)
    bad_calls = [
        lambda: gallery.enroll("x", [SequenceInput(np.zeros((3, 64, 64), np.uint8), good)], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils.astype(np.float32), good)], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good, depth=np.zeros((2, 64, 44)))], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good, depth=np.zeros((2, 64, 44), np.uint8))], model_id="m"),
        lambda: gallery.enroll("x", [SequenceInput(sils, good, depth=np.zeros((3, 64, 44), np.float32))],
                               model_id="m"),  # contract v2: depth is quantised uint8
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


def test_subject_embeddings_are_the_subjects_rows_of_the_export(gallery: Gallery, rng: np.random.Generator) -> None:
    assert [len(a) for a in gallery.subject_embeddings("bob")] == [0, 0]  # no active model yet
    gallery.enroll("bob", [sequence(rng, embedding(rng)) for _ in range(3)], model_id="m")
    gallery.enroll("ann", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m")
    bob = gallery.enroll("bob", [sequence(rng, embedding(rng))], model_id="m").sequence_ids[0]
    with gallery.store.write() as conn:  # a sequence without an embedding of the active model drops out
        conn.execute("DELETE FROM embeddings WHERE sequence_id = ?", (bob,))
    ids, subjects, embeddings = gallery.export_embeddings()
    for subject in ("bob", "ann"):
        mine = np.array([s == subject for s in subjects])
        got_ids, got = gallery.subject_embeddings(subject)
        assert got_ids.dtype == np.int64 and got.dtype == np.float32
        np.testing.assert_array_equal(got_ids, ids[mine])
        np.testing.assert_array_equal(got, embeddings[mine])
    assert bob not in gallery.subject_embeddings("bob")[0]
    got_ids, got = gallery.subject_embeddings("carol")
    assert len(got_ids) == 0 and got.shape == (0, C, P)

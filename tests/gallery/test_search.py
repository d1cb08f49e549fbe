"""Search: scores are exactly the model's similarity, subjects rank once at their best sequence,
the exact top-k, the open-set threshold, empty namespaces, the fp16 index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import P, direct_similarity, embedding, sequence


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


def test_fp16_index_scores_close_to_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g", index_kind="fp16") as g:  # a FAISS index kind
        embs = [embedding(rng) for _ in range(20)]
        for i, e in enumerate(embs):
            g.enroll(f"s{i}", [sequence(rng, e, frames=1)], model_id="m")
        query = embs[3] + embedding(rng, noise=0.8)
        answer = g.search(query, model_id="m", top_k=3)[0]
        assert answer.best.subject_id == "s3"
        for c in answer.candidates:
            assert c.score == pytest.approx(direct_similarity(query, embs[int(c.subject_id[1:])]), abs=2e-3)
        assert g.status().index.kind == "fp16"


def test_similarity_is_the_models_and_checked_by_the_contract(open_gallery: OpenGallery, tmp_path: Path,
                                                              rng: np.random.Generator) -> None:
    """The gallery takes the similarity the model declares; one the contract does not know is refused."""
    from gallery import InvalidInputError

    with open_gallery(tmp_path / "g", similarity="part-cosine") as g:
        assert g.similarity == "part-cosine"
    with pytest.raises(InvalidInputError, match="unknown similarity 'euclidean'"):
        open_gallery(tmp_path / "h", similarity="euclidean")  # type: ignore[arg-type]
    assert not (tmp_path / "h").exists()  # refused before anything was created

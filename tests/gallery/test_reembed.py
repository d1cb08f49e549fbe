"""Models and re-embedding: embeddings of two models never mix; `reembed` feeds the stored model
inputs to a SequenceEmbedder in batches, resumes after an interruption and switches in one step."""

from __future__ import annotations

import numpy as np
import pytest

from gaitid.contract import ModelInput, SequenceEmbedder
from gallery import Gallery, InvalidInputError, ModelMismatchError
from tests.gallery.synthetic import C, ProjectionEmbedder, embed_from_silhouettes, embedding, sequence


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
    report = gallery.reembed(ProjectionEmbedder("model-b"), batch_size=3,
                             progress=lambda done, total: calls.append((done, total)))
    assert report.embedded == 4 and report.sequences == 4 and report.old_model_id == "model-a"
    assert report.new_model_id == "model-b"
    assert calls == [(3, 4), (4, 4)]
    assert gallery.status().model_id == "model-b"
    for subject, seq in sequences.items():  # the stored footage gives back each subject
        query = embed_from_silhouettes(seq.silhouettes)
        assert gallery.search(query, model_id="model-b")[0].best.subject_id == subject
    with pytest.raises(ModelMismatchError):
        gallery.search(embedding(rng), model_id="model-a")
    record = gallery.get_subject("s0")
    assert record.sequences[0].model_ids == ("model-b",)  # old embeddings dropped, footage kept
    np.testing.assert_array_equal(gallery.get_sequence(record.sequences[0].sequence_id).silhouettes,
                                  sequences["s0"].silhouettes)


def test_reembed_feeds_stored_model_inputs_in_batches(gallery: Gallery, rng: np.random.Generator) -> None:
    enrolled = [sequence(rng, embedding(rng), frames=2 + i % 3, depth=i % 2 == 0) for i in range(7)]
    for i, seq in enumerate(enrolled):
        gallery.enroll(f"s{i}", [seq], model_id="a")
    embedder = ProjectionEmbedder("b")
    assert isinstance(embedder, SequenceEmbedder)  # the contract's one embedding interface
    report = gallery.reembed(embedder, batch_size=3)
    assert report.embedded == 7 and gallery.status().model_id == "b"
    assert [len(batch) for batch in embedder.calls] == [3, 3, 1]  # one call per batch, not per sequence
    seen = [item for batch in embedder.calls for item in batch]
    for item, seq in zip(seen, enrolled):  # in enrollment order, exactly the stored model inputs
        assert isinstance(item, ModelInput) and item.sils.dtype == np.uint8
        np.testing.assert_array_equal(item.sils, seq.silhouettes)
        if seq.depth is None:
            assert item.depths is None
        else:
            assert item.depths.dtype == np.uint8
            np.testing.assert_array_equal(item.depths, seq.depth)
    assert gallery.reembed(embedder, batch_size=3).embedded == 0  # already active: nothing to do
    assert len(embedder.calls) == 3


def test_interrupted_reembed_keeps_old_model_and_resumes(gallery: Gallery, rng: np.random.Generator) -> None:
    for i in range(5):
        gallery.enroll(f"s{i}", [sequence(rng, embedding(rng), frames=2)], model_id="a")
    with pytest.raises(RuntimeError):
        gallery.reembed(ProjectionEmbedder("b", fail_on_call=2), batch_size=2)
    assert gallery.status().model_id == "a"  # still searchable with the old model
    assert gallery.search(embedding(rng), model_id="a")[0].candidates
    report = gallery.reembed(ProjectionEmbedder("b"), batch_size=2)
    assert report.embedded == 3  # the first batch of 2 was kept
    assert gallery.status().model_id == "b" and gallery.status().index.vectors == 5


def test_reembed_refuses_what_breaks_the_contract(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.enroll("s0", [sequence(rng, embedding(rng))], model_id="a")
    wrong_shape = ProjectionEmbedder("b")
    wrong_shape.metadata = wrong_shape.metadata.model_copy(update={"embedding_channels": C // 2})
    other_similarity = ProjectionEmbedder("b")
    other_similarity.metadata = other_similarity.metadata.model_copy(update={"similarity": "euclidean"})
    bad = [
        lambda: gallery.reembed(embed_from_silhouettes),  # a bare function is not a SequenceEmbedder
        lambda: gallery.reembed(ProjectionEmbedder("b"), batch_size=0),
        lambda: gallery.reembed(ProjectionEmbedder("")),
        lambda: gallery.reembed(other_similarity),
        lambda: gallery.reembed(wrong_shape),  # returns (C, P), declares (C/2, P)
    ]
    for call in bad:
        with pytest.raises(InvalidInputError):
            call()
    status = gallery.status()
    assert status.model_id == "a" and gallery.get_subject("s0").sequences[0].model_ids == ("a",)

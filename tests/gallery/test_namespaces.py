"""Namespaces: tenants are isolated (same subject ids, own index, own model); names are checked."""

from __future__ import annotations

import numpy as np
import pytest

from gallery import Gallery, InvalidInputError, check_namespace
from gallery.index import VectorIndex
from tests.gallery.synthetic import embedding, sequence


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
    hashed_key_namespace = "key-0123456789abcdef"  # the service's names for API keys are valid names
    assert gallery.search(e1, model_id="m", namespace=hashed_key_namespace)[0].candidates == ()
    assert gallery.status("tenant-1").index.vectors == 0 and gallery.status("tenant-2").index.vectors == 2
    assert gallery.check() == []
    if gallery.backend == "faiss":
        assert VectorIndex.read_header(gallery.index_path("tenant-1"))["ntotal"] == 0
        assert VectorIndex.read_header(gallery.index_path("tenant-2"))["ntotal"] == 2


@pytest.mark.parametrize("name", ["", "../etc", "Upper", "-lead", "a/b", "a" * 65, "sp ace", None])
def test_namespace_names_are_checked(name: object) -> None:
    with pytest.raises(InvalidInputError):
        check_namespace(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["default", "a", "key-0123456789abcdef", "t.1_x-y", "9" * 64])
def test_valid_namespace_names_pass(name: str) -> None:
    assert check_namespace(name) == name

"""gallery/metadata.py: metadata bounds (size, nesting, NaN, surrogates) hold on text before parsing and
on objects before storing; rows an older version stored deeper than the bound read back safely."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    Gallery,
    InvalidMetadataError,
    metadata_from_json,
)
from gallery.metadata import json_text_depth
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import embedding, sequence


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize("text", [
    nested(MAX_METADATA_DEPTH + 1), nested(300), nested(1_000), nested(100_000) [:MAX_METADATA_BYTES],
    "[" * 5_000, '{"a": ' + "[" * 40 + "]" * 40 + "}",
    '{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}',
    "[1, 2]", '"text"', "3", "null", "{not json", "",
    json.dumps({"big": "x" * MAX_METADATA_BYTES}),
    '{"s": "\\ud800"}',  # an unpaired surrogate escape
])
def test_bad_metadata_text_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(InvalidMetadataError) as raised:
        metadata_from_json(text)
    assert raised.value.code == "invalid_metadata"


def test_metadata_at_the_bounds_passes() -> None:
    assert json_text_depth(nested(MAX_METADATA_DEPTH)) == MAX_METADATA_DEPTH
    assert metadata_from_json(nested(MAX_METADATA_DEPTH))["a"]
    assert metadata_from_json('{"brackets in strings": "[[[[{{{{\\"", "n": [1, {"m": []}]}')["n"][1] == {"m": []}


def test_deep_objects_are_refused_by_the_gallery(gallery: Gallery, rng: np.random.Generator) -> None:
    deep: dict = {}
    cursor = deep
    for _ in range(MAX_METADATA_DEPTH + 5):
        cursor["a"] = {}
        cursor = cursor["a"]
    cyclic: dict = {}
    cyclic["self"] = cyclic
    for metadata in (deep, cyclic, {"nan": float("nan")}):
        with pytest.raises(InvalidMetadataError):
            gallery.enroll("x", [sequence(rng, embedding(rng))], model_id="m", metadata=metadata)
    with pytest.raises(InvalidMetadataError):  # a sequence's metadata too
        gallery.enroll("x", [sequence(rng, embedding(rng)).__class__(
            np.zeros((3, 64, 44), np.uint8), embedding(rng), metadata=deep)], model_id="m")
    assert gallery.status().subjects == 0


def test_too_deep_rows_of_older_versions_read_back_as_a_notice(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    with open_gallery(root) as g:
        g.enroll("old", [sequence(rng, embedding(rng))], model_id="m", metadata={"ok": 1})
    with sqlite3.connect(root / "gallery.db") as conn:  # what an older version let through
        conn.execute("UPDATE subjects SET metadata = ?", (nested(300),))
        conn.execute("UPDATE sequences SET metadata = ?", (nested(500),))
    with open_gallery(root) as g:
        subject = g.get_subject("old")
        assert list(subject.metadata) == ["_unreadable"] and "nested deeper" in subject.metadata["_unreadable"]
        assert list(subject.sequences[0].metadata) == ["_unreadable"]
        assert g.list_subjects()[0].metadata == subject.metadata

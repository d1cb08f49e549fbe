"""The SQLite store: galleries written before contract v2 (float32 depth) are read back as the
contract's uint8, for inspection and for re-embedding."""

from __future__ import annotations

import io
import sqlite3
import zlib
from pathlib import Path

import numpy as np

from gaitid.contract import quantise_depth
from gallery import SequenceInput
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import ProjectionEmbedder, embedding


def _old_style_blob(array: np.ndarray) -> bytes:
    """What a v1 gallery stored: zlib of np.save of the float32 (T, 64, 44) disparity."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 6)


def test_old_float32_depth_blob_is_read_back_quantised(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    sils = np.full((3, 64, 44), 255, np.uint8)
    old_depth = rng.random((3, 64, 44)).astype(np.float32)
    old_depth[0, 0, :2] = [0.0, 1.0]  # both ends of the range
    with open_gallery(root) as g:
        sequence_id = g.enroll("old", [SequenceInput(sils, embedding(rng), np.zeros((3, 64, 44), np.uint8))],
                               model_id="a").sequence_ids[0]
    with sqlite3.connect(root / "gallery.db") as conn:  # as a gallery of contract v1 left it
        conn.execute("UPDATE sequences SET depth = ? WHERE id = ?", (_old_style_blob(old_depth), sequence_id))
    expected = quantise_depth(old_depth)  # as a v2 pipeline stores the same disparity
    assert np.abs(expected - old_depth.astype(np.float64) * 255).max() <= 0.5 + 1e-4
    assert expected[0, 0, :2].tolist() == [0, 255]
    with open_gallery(root) as g:
        stored = g.get_sequence(sequence_id)
        assert stored.depth.dtype == np.uint8 and stored.record.has_depth
        np.testing.assert_array_equal(stored.depth, expected)
        embedder = ProjectionEmbedder("b")
        assert g.reembed(embedder).embedded == 1  # a new model gets the quantised depth too
        (fed,) = embedder.calls[0]
        assert fed.depths.dtype == np.uint8
        np.testing.assert_array_equal(fed.depths, expected)

"""Persistence: an index file is reused only when it provably matches the database, else rebuilt
(missing, corrupt, torn, stale, from a diverged copy); two instances on one root stay in step.
The Milvus counterparts of the file cases are in test_milvus.py."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np

from gallery import Gallery
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import embedding, sequence


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


def test_index_of_a_diverged_copy_or_edited_database_is_not_trusted(open_gallery: OpenGallery, backend: str,
                                                                      tmp_path: Path, rng: np.random.Generator) -> None:
    root, copy = tmp_path / "g", tmp_path / "copy"
    # Milvus: both copies use one server (a milvus-lite file outside both roots), as a restored
    # backup would; their collections have the same names (same database id).
    shared = {"milvus_uri": str(tmp_path / "shared.db")} if backend == "milvus" else {}
    with open_gallery(root, **shared) as g:
        g.enroll("a", [sequence(rng, embedding(rng))], model_id="m")
    shutil.copytree(root, copy)
    for r, name in ((root, "x"), (copy, "y")):  # same generation, same id, different content
        with open_gallery(r, **shared) as g:
            g.enroll(name, [sequence(rng, embedding(rng))], model_id="m")
    if backend == "faiss":
        shutil.copy(root / "index" / "default.faiss", copy / "index" / "default.faiss")
    else:  # opening the original rebuilds the shared collection from its database
        with open_gallery(root, **shared) as g:
            assert g.status().index.rebuild_reason.startswith("stale: generation_token")
    with open_gallery(copy, **shared) as g:
        assert g.status().index.rebuild_reason.startswith("stale: generation_token")
        assert [s.subject_id for s in g.list_subjects()] == ["a", "y"]
    # An edit behind the gallery's back (same count, same generation, other ids) is caught too.
    with sqlite3.connect(copy / "gallery.db") as conn:
        conn.execute("UPDATE embeddings SET sequence_id = 999 WHERE sequence_id = 1")
        conn.execute("UPDATE sequences SET id = 999 WHERE id = 1")
    with open_gallery(copy, **shared) as g:
        assert g.status().index.rebuild_reason == "stale: ids differ from the database"
        assert g.get_subject("a").sequences[0].sequence_id == 999


def test_second_instance_sees_writes_of_the_first(open_gallery: OpenGallery, tmp_path: Path,
                                                  rng: np.random.Generator) -> None:
    """Two Gallery objects on one root behave like two processes: the generation check reloads."""
    with open_gallery(tmp_path / "g") as writer, open_gallery(tmp_path / "g") as reader:
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



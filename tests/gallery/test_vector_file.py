"""gallery/vector_file.py: the compact index's memory-mapped search vectors (index/<namespace>.vectors).
Rebuilt when missing, torn or stale; in step across enroll / delete / restart; re-ranked scores equal
exhaustive search's; `Gallery.check` reports a file that disagrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery, compact_index
from gallery.compact_index import CompactIndex, CompactSpec
from gallery.index import IndexFileError
from gallery.namespace_indexes import NamespaceIndexes
from gallery.vector_file import HEADER_BYTES, VectorFile, read_header
from tests.gallery.synthetic import labelled, sequence

SMALL = CompactSpec(reduced_dim=64, subquantizers=64, prefilter=32, shortlist=64, train_size=1024)


def test_write_open_append_clear_grow(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "v.vectors"
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    ids = np.arange(10, 3010, dtype=np.int64)
    chunks = ((ids[i:min(i + 700, 2000)], x[i:min(i + 700, 2000)]) for i in range(0, 2000, 700))
    rows = VectorFile.write(path, {"generation": 1}, 32, 2000, chunks)
    found, got = rows.fetch(np.array([5, 10, 500, 2009, 2010]))
    assert found.tolist() == [10, 500, 2009] and np.array_equal(got, x[[0, 490, 1999]])
    rows.append(ids[2000:], x[2000:])  # past the capacity: the file grows (atomic rewrite)
    assert rows.clear(np.array([11, 12, 9999])) == 2
    assert rows.ntotal == 2998 and rows.capacity >= 2998
    assert np.array_equal(rows.fetch(ids)[0], np.delete(ids, [1, 2]))
    cleared_row = VectorFile.open(path)  # cleared on disk: -1 and zeros, before any header save
    assert 11 not in cleared_row.file_ids()
    cleared_row.close()
    rows.save_header({"generation": 2})
    rows.close()
    reopened = VectorFile.open(path)
    assert reopened.header["generation"] == 2 and reopened.header["ntotal"] == 2998
    found, got = reopened.fetch(ids)
    assert np.array_equal(found, np.delete(ids, [1, 2])) and np.array_equal(got, np.delete(x, [1, 2], axis=0))
    reopened.close()
    path.write_bytes(path.read_bytes()[:HEADER_BYTES + 100])  # torn
    with pytest.raises(IndexFileError, match="torn"):
        read_header(path)
    path.write_bytes(b"GAITVEC1" + bytes(5000))
    with pytest.raises(IndexFileError):
        read_header(path)


def same_scores(a: list, b: list) -> None:
    """Same decisions; for a known subject the same best (subject, sequence) and score (impostors of
    random embeddings are noise no compression ranks as exhaustive search does: test_compact_index.py)."""
    for x, y in zip(a, b, strict=True):
        assert x.subject_id == y.subject_id
        if x.subject_id is None:
            continue
        assert [(c.subject_id, c.sequence_id) for c in x.candidates[:1]] == \
            [(c.subject_id, c.sequence_id) for c in y.candidates[:1]]
        assert x.best.score == pytest.approx(y.best.score, abs=1e-5)


def rows_of(g: Gallery):
    return g._indexes.get("default").index.rows


def test_gallery_vector_file_through_changes_restarts_and_damage(tmp_path: Path, rng: np.random.Generator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact_index, "DEFAULT_SPEC", SMALL)
    embeddings, labels = labelled(rng, subjects=160, per_subject=8, noise=1.2)
    queries = np.concatenate([embeddings[::8][:40] + rng.standard_normal((40, 256, 16)).astype(np.float32),
                              rng.standard_normal((10, 256, 16)).astype(np.float32)])
    exact = Gallery(tmp_path / "flat", threshold=0.3)
    compact = Gallery(tmp_path / "compact", threshold=0.3, index_kind="compact")
    for g in (exact, compact):
        for s in range(160):
            g.enroll(f"id{s}", [sequence(rng, e, frames=1) for e in embeddings[labels == f"id{s}"]], model_id="m")
    vectors_path = tmp_path / "compact" / "index" / "default.vectors"
    assert vectors_path.exists() and rows_of(compact).ntotal == 1280
    assert compact._indexes.get("default").index.trained
    # re-ranked scores are exhaustive search's (exact top-k scores of the shortlist)
    state = compact._indexes.get("default")
    q = compact._indexes.vectors(queries)
    scores, ids = state.index.search(q, 5)
    found, full = state.index.rows.fetch(np.unique(ids))
    assert np.allclose(scores, np.einsum("nd,nkd->nk", q, full[np.searchsorted(found, ids)]), atol=1e-6, rtol=0)
    from_db = state.index.search(q, 5, full_vectors=compact._indexes.database_full_vectors("m"))
    assert np.array_equal(scores, from_db[0]) and np.array_equal(ids, from_db[1])  # bit for bit SQLite's
    same_scores(exact.search(queries, model_id="m", top_k=5), compact.search(queries, model_id="m", top_k=5))

    for g in (exact, compact):  # deletion clears rows at once; replacement and enrollment append
        g.delete_subject("id0")
        g.enroll("id1", [sequence(rng, embeddings[0], frames=1)], model_id="m", if_exists="replace")
        g.enroll("new", [sequence(rng, embeddings[5], frames=1)], model_id="m")
    assert compact.check() == []
    deleted = exact.store.connection().execute("SELECT MAX(id) FROM sequences").fetchone()[0]
    assert rows_of(compact).ntotal == 1280 - 8 - 8 + 1 + 1 and deleted in rows_of(compact).ids()
    expected = exact.search(queries, model_id="m", top_k=5)
    same_scores(expected, compact.search(queries, model_id="m", top_k=5))
    exact.close()
    compact.close()

    def reopen(reason: str | None) -> None:
        with Gallery(tmp_path / "compact", threshold=0.3, index_kind="compact") as g:
            rows = rows_of(g)
            assert g.status().index.loaded_from == "file"  # the index file was fine throughout
            assert (rows.loaded_from, rows.rebuild_reason if reason is None else rows.rebuild_reason[:len(reason)]) \
                == ("file" if reason is None else "rebuilt", reason)
            same_scores(expected, g.search(queries, model_id="m", top_k=5))
            problems = g.check()  # an unreadable file is reported, as an unreadable index file is
            assert problems == ([] if reason != "corrupt" else [p for p in problems if "vector file was unreadable" in p])
            assert len(problems) == (reason == "corrupt")

    reopen(None)  # restart: used as saved
    vectors_path.unlink()
    reopen("missing")
    vectors_path.write_bytes(vectors_path.read_bytes()[:-4096])
    reopen("corrupt")  # torn
    def crash_after(change) -> None:
        with Gallery(tmp_path / "compact", threshold=0.3, index_kind="compact") as g:
            change(rows_of(g))
            g.store.close()  # a crash: no flush, no header saved after the change
            g._closed = True
            rows_of(g).close()

    crash_after(lambda rows: rows.save_header(dict(rows.header, generation_token="another")))
    reopen("stale: generation_token")
    crash_after(lambda rows: rows.clear(rows.ids()[:1]))  # rows changed in place, header not
    reopen("stale: ids differ")

    with Gallery(tmp_path / "compact", threshold=0.3, index_kind="compact") as g:  # check-gallery sees damage
        rows = rows_of(g)
        row = int(rows._live_rows[3])
        with open(vectors_path, "r+b") as fh:
            fh.seek(HEADER_BYTES + 8 * rows.capacity + 4 * rows.dim * row)
            fh.write(np.ones(4, np.float32).tobytes())
        problems = g.check()
        assert any("differ from their stored embeddings" in p for p in problems), problems
        with open(vectors_path, "r+b") as fh:
            fh.seek(HEADER_BYTES + 8 * row)
            fh.write(np.int64(-1).tobytes())
        problems = g.check()
        assert any("the vector file holds" in p for p in problems), problems
    reopen("stale: ids differ")  # and the damaged file is rebuilt at the next start


def test_a_namespace_whose_subjects_are_all_deleted_keeps_an_empty_vector_file(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g", index_kind="compact") as g:
        g.enroll("a", [sequence(rng, rng.standard_normal((256, 16)).astype(np.float32), frames=1)], model_id="m")
        path = tmp_path / "g" / "index" / "default.vectors"
        assert path.exists() and isinstance(g._indexes.get("default").index, CompactIndex)
        g.delete_subject("a")
        g.search(rng.standard_normal((256, 16)).astype(np.float32), model_id="m")
        assert g.check() == []
    with Gallery(tmp_path / "g", index_kind="compact") as g:
        assert rows_of(g).ntotal == 0 and g.check() == []


def test_a_failed_start_closes_the_vector_files_already_opened(tmp_path: Path, rng: np.random.Generator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with Gallery(tmp_path / "g", index_kind="compact") as g:
        for namespace in ("a", "b"):
            g.enroll("s", [sequence(rng, rng.standard_normal((256, 16)).astype(np.float32), frames=1)],
                     model_id="m", namespace=namespace)
    opened: list[VectorFile] = []
    real_init = VectorFile.__init__

    def spy(self, path, header):
        real_init(self, path, header)
        opened.append(self)

    def fail_b(self, row, ids):
        if row.name == "b":
            raise RuntimeError("the second namespace fails to load")
        return real_stored(self, row, ids)

    real_stored = NamespaceIndexes._stored_index
    monkeypatch.setattr(VectorFile, "__init__", spy)
    monkeypatch.setattr(NamespaceIndexes, "_stored_index", fail_b)
    with pytest.raises(RuntimeError, match="second namespace"):
        Gallery(tmp_path / "g", index_kind="compact")
    assert [v.path.name for v in opened] == ["a.vectors"] and opened[0]._fd == -1

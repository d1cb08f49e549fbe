"""The Milvus backend's own cases (the shared gallery tests run on it too, see conftest.py): a
collection is reused only when its header and ids match the database, else rebuilt (the Milvus
counterparts of test_persistence's file cases); one collection per namespace behind an alias; the
consistency check reads what Milvus really holds; a gallery moves between backends freely."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery, InvalidInputError
from tests.gallery.conftest import MILVUS_MISSING, MILVUS_SKIP_REASON
from tests.gallery.synthetic import ProjectionEmbedder, embedding, sequence

pytestmark = pytest.mark.skipif(bool(MILVUS_MISSING), reason=MILVUS_SKIP_REASON)


@contextmanager
def milvus_of(root: Path) -> Iterator[object]:
    """A client of the gallery's milvus-lite folder (released after, as a closing gallery does)."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    path = str((root / "milvus.db").resolve())
    client = MilvusClient(uri=path)
    try:
        yield client
    finally:
        client.close()
        server_manager_instance.release_server(path)


def answers(g: Gallery, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    return [[(c.subject_id, round(c.score, 5)) for c in a.candidates] for a in g.search(queries, model_id="m")]


def test_collection_reused_or_rebuilt(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    queries = np.stack([embedding(rng) for _ in range(3)])
    with Gallery(root, backend="milvus") as g:
        for i in range(6):
            g.enroll(f"s{i}", [sequence(rng, embedding(rng)) for _ in range(2)], model_id="m")
        expected = answers(g, queries)
        alias = g.index_path("default").rsplit("#", 1)[1]

    def reopen(reason_prefix: str | None) -> None:
        with Gallery(root, backend="milvus") as g:
            info = g.status().index
            assert info.loaded_from == ("file" if reason_prefix is None else "rebuilt")
            assert (info.rebuild_reason or "").startswith(reason_prefix or "")
            assert answers(g, queries) == expected
            unreadable = [p for p in g.check() if "unreadable" in p]
            assert g.check() == unreadable and bool(unreadable) == (reason_prefix == "corrupt")

    def set_header(text: str) -> None:
        with milvus_of(root) as client:
            target = client.describe_alias(alias)["collection_name"]
            client.alter_collection_properties(target, properties={"gaitid_header": text})

    reopen(None)
    with milvus_of(root) as client:
        header = json.loads(client.describe_collection(alias)["properties"]["gaitid_header"])
        assert header["ntotal"] == 12 and header["dim"] == 256 * 16 and header["kind"] == "flat"
        client.drop_alias(alias)
    reopen("missing")
    set_header("")  # as a deletion leaves it until the removal reached Milvus
    reopen("missing")
    set_header("{not json")
    reopen("corrupt")
    with milvus_of(root) as client:  # a vector lost behind the gallery's back (the header still says 12)
        client.delete(alias, ids=[3])
    reopen("stale: ids differ from the database")
    with Gallery(root) as g:  # the database moves on without Milvus (as after a crash before the update)
        g.enroll("late", [sequence(rng, embedding(rng))], model_id="m")
        expected = answers(g, queries)
    reopen("stale: generation")
    with milvus_of(root) as client:  # every rebuild replaced the collection and dropped the old one
        assert [c for c in client.list_collections() if c.startswith(alias)] == [
            client.describe_alias(alias)["collection_name"]]


def test_check_reads_what_milvus_holds(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g", backend="milvus") as g:
        g.enroll("a", [sequence(rng, embedding(rng)) for _ in range(3)], model_id="m")
        assert g.check() == []
        from pymilvus import MilvusClient

        other = MilvusClient(uri=str((tmp_path / "g" / "milvus.db").resolve()))  # the same in-process server
        other.delete(g.index_path("default").rsplit("#", 1)[1], ids=[2])
        problems = g.check()
        assert any("the index holds 2 vectors, the store 3" in p for p in problems), problems


def test_namespaces_are_collections_and_reembedding_replaces_one(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g", backend="milvus") as g:
        g.enroll("x", [sequence(rng, embedding(rng))], model_id="m", namespace="t.1_x-y")
        g.enroll("x", [sequence(rng, embedding(rng))], model_id="m", namespace="t_1-x.y")
        aliases = {ns: g.index_path(ns).rsplit("#", 1)[1] for ns in ("t.1_x-y", "t_1-x.y")}
        assert len(set(aliases.values())) == 2  # '.', '_' and '-' are escaped injectively
        g.reembed(ProjectionEmbedder("m2"), namespace="t.1_x-y")
        assert g.status("t.1_x-y").model_id == "m2" and g.check() == []
    with milvus_of(tmp_path / "g") as client:
        collections = client.list_collections()
        for alias in aliases.values():  # one collection per namespace, the re-embedded one replaced
            assert [c for c in collections if c.startswith(alias + "_v")] == [client.describe_alias(alias)["collection_name"]]


def test_a_gallery_moves_between_backends(tmp_path: Path, rng: np.random.Generator) -> None:
    """SQLite is the source of truth: either backend rebuilds its index from it."""
    root = tmp_path / "g"
    queries = np.stack([embedding(rng) for _ in range(3)])
    with Gallery(root) as g:
        for i in range(4):
            g.enroll(f"s{i}", [sequence(rng, embedding(rng))], model_id="m")
        expected = answers(g, queries)
    with Gallery(root, backend="milvus") as g:
        assert g.status().index.rebuild_reason == "missing"
        assert answers(g, queries) == expected
        g.delete_subject("s0")
        expected = answers(g, queries)
    with Gallery(root) as g:  # the FAISS file predates the deletion: stale, rebuilt
        assert g.status().index.rebuild_reason.startswith("stale: generation")
        assert answers(g, queries) == expected


def test_options_of_another_backend_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="backend must be faiss | milvus"):
        Gallery(tmp_path / "a", backend="qdrant")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="index_kind 'fp16' is FAISS's"):
        Gallery(tmp_path / "b", backend="milvus", index_kind="fp16")

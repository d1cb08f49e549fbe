"""The Milvus backend: each namespace's search vectors in a Milvus collection, rebuildable from SQLite.

What Milvus holds. Only the active model's search vectors (gaitid.contract.search_vectors: per-part
L2-normalised, scaled by 1/sqrt(P), so the inner product *is* part-cosine), keyed by sequence id.
Subjects, sequences, embeddings, the audit log and the generation counter stay in SQLite, the one
transaction boundary: an enrollment commits there first and reaches Milvus after, exactly as it
reaches the FAISS index; a Milvus collection that lags (a crash, a failed call) is found stale by
its header and rebuilt from the database.

Layout. One collection per namespace: namespaces may use models of different dimensions (a
collection has one vector dimension), a re-embedding or rebuild replaces one namespace's
collection without touching the others, and dropping a tenant drops its collection. The gallery
reaches it through an alias, `gaitid_<database id>_<namespace>`, over a collection
`<alias>_v<8 hex>`: a rebuild fills a new collection, writes its header and then moves the alias
(Milvus switches it atomically), so searches of another process never see a half-built index.
The header (the FAISS file's, as JSON) is the collection property `gaitid_header`; it is written
after every change, so another process on the same database reuses the collection instead of
rebuilding it. Schema: `id` INT64 primary key, `vector` FLOAT_VECTOR(dim), a FLAT (exact) index
with metric IP, consistency level Strong (a search sees every finished insert and delete).

Deletion. Milvus masks deleted rows at once (a search never returns them again) and removes them
from its files when it compacts the segment; the index asks for a compaction after every removal.
milvus-lite drops them from its write-ahead log when the gallery closes.

URIs. `http://host:19530` (a Milvus server, see docker/compose.milvus.yml) or a path ending in
`.db` (milvus-lite, embedded in this process: tests and single-machine trials). milvus-lite serves
one process: its in-process server is released when the last gallery using the file closes.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pymilvus import DataType, MilvusClient

from gallery.index import IndexFileError
from gallery.types import IndexKind

HEADER_PROPERTY = "gaitid_header"
# Milvus caps top-k (and queries per request) at 16384; larger requests are split or capped.
MAX_TOP_K = 16384
_INSERT_ROWS = 512  # 512 x 4096 float32 = 8 MiB per request, well under gRPC's message limits
_QUERY_ROWS = 256
_ID_PAGE = 16384

_lite_users: Counter = Counter()  # milvus-lite file -> galleries of this process using it
_lite_lock = threading.Lock()


def collection_alias(database_id: str, namespace: str) -> str:
    """Milvus names allow [A-Za-z0-9_]; namespaces also use '.' and '-': escape injectively."""
    escaped = namespace.replace("_", "__").replace(".", "_d").replace("-", "_h")
    return f"gaitid_{database_id[:12]}_{escaped}"


def is_lite_uri(uri: str) -> bool:
    return uri.endswith(".db")


class MilvusIndex:
    """SearchIndex over one Milvus collection (exact inner product, int64 ids)."""

    kind: IndexKind = "flat"
    device: Literal["cpu", "gpu"] = "cpu"  # the server decides; nothing runs on this process's GPU

    def __init__(self, client: MilvusClient, collection: str, dim: int, aliased: bool):
        self.client = client
        self.collection = collection
        self.dim = dim
        self.aliased = aliased  # False for a rebuild's new collection until the store's save moves the alias
        self._ntotal = self._count()

    @property
    def ntotal(self) -> int:
        return self._ntotal

    def _count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        iterator = self.client.query_iterator(self.collection, batch_size=_ID_PAGE, output_fields=["id"])
        found: list[int] = []
        try:
            while batch := iterator.next():
                found.extend(int(row["id"]) for row in batch)
        finally:
            iterator.close()
        return np.array(found, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"need (n, {self.dim}) vectors and n ids, got {vectors.shape} and {ids.shape}")
        for start in range(0, len(ids), _INSERT_ROWS):
            rows = [{"id": int(i), "vector": v} for i, v in
                    zip(ids[start:start + _INSERT_ROWS], vectors[start:start + _INSERT_ROWS])]
            self.client.insert(self.collection, rows)
        if len(ids):
            self._ntotal = self._count()

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        before = self._ntotal
        self.client.delete(self.collection, ids=[int(i) for i in ids])
        # A delete only masks the rows; compaction rewrites the segments without them (a deletion
        # erases the subject's index vectors). The server compacts in the background.
        self.client.compact(self.collection)
        self._ntotal = self._count()
        return before - self._ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"need (n, {self.dim}) queries, got {queries.shape}")
        k = min(int(k), self._ntotal, MAX_TOP_K)
        scores = np.full((len(queries), max(k, 0)), -np.inf, np.float32)
        ids = np.full((len(queries), max(k, 0)), -1, np.int64)
        if k <= 0:
            return scores, ids
        for start in range(0, len(queries), _QUERY_ROWS):
            chunk = queries[start:start + _QUERY_ROWS]
            # output_fields=["id"]: otherwise milvus-lite sends every hit's vector back.
            results = self.client.search(self.collection, data=list(chunk), limit=k, output_fields=["id"],
                                         search_params={"metric_type": "IP"})
            for row, hits in enumerate(results, start):
                for column, hit in enumerate(hits):
                    scores[row, column], ids[row, column] = hit["distance"], hit["id"]
        return scores, ids


class MilvusCollections:
    """IndexStore of one Milvus collection per namespace, behind an alias (see the module docstring)."""

    backend = "milvus"
    write_through = True

    def __init__(self, uri: str, database_id: str):
        self.uri = uri
        self.database_id = database_id
        self._lite_path: str | None = None
        if is_lite_uri(uri):
            self._lite_path = str(Path(uri).resolve())
            Path(self._lite_path).parent.mkdir(parents=True, exist_ok=True)
            with _lite_lock:
                _lite_users[self._lite_path] += 1
        try:
            self.client = MilvusClient(uri=self._lite_path or uri)
        except Exception:
            self._release_lite()
            raise

    def location(self, namespace: str) -> str:
        return f"{self.uri}#{collection_alias(self.database_id, namespace)}"

    def _target(self, namespace: str) -> str | None:
        """The collection the namespace's alias points to, or None."""
        alias = collection_alias(self.database_id, namespace)
        if alias not in self.client.list_aliases().get("aliases", []):
            return None
        return str(self.client.describe_alias(alias)["collection_name"])

    def _collections(self, namespace: str) -> list[str]:
        pattern = re.compile(re.escape(collection_alias(self.database_id, namespace)) + r"_v[0-9a-f]{8}")
        return [c for c in self.client.list_collections() if pattern.fullmatch(c)]

    def read_header(self, namespace: str) -> dict[str, Any] | None:
        target = self._target(namespace)
        if target is None:
            return None
        raw = self.client.describe_collection(target).get("properties", {}).get(HEADER_PROPERTY, "")
        if not raw:
            return None
        try:
            header = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise IndexFileError(f"{self.location(namespace)}: unreadable header ({exc})") from exc
        if not isinstance(header, dict):
            raise IndexFileError(f"{self.location(namespace)}: the header is not an object")
        return header

    def open(self, namespace: str) -> MilvusIndex:
        target = self._target(namespace)
        header = self.read_header(namespace)
        if target is None or header is None:
            raise IndexFileError(f"{self.location(namespace)}: no collection")
        self.client.load_collection(target)  # a restarted server may have released it
        return MilvusIndex(self.client, target, int(header["dim"]), aliased=True)

    def create(self, namespace: str, dim: int) -> MilvusIndex:
        name = f"{collection_alias(self.database_id, namespace)}_v{uuid.uuid4().hex[:8]}"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")
        return MilvusIndex(self.client, name, dim, aliased=False)

    def save(self, namespace: str, index: Any, header: dict[str, Any]) -> None:
        assert isinstance(index, MilvusIndex)
        full = dict(header, kind=index.kind, dim=index.dim, ntotal=index.ntotal)
        self.client.alter_collection_properties(index.collection,
                                                properties={HEADER_PROPERTY: json.dumps(full, sort_keys=True)})
        if index.aliased:  # the usual case, after an enrollment or deletion: the header was all
            return
        alias = collection_alias(self.database_id, namespace)
        target = self._target(namespace)
        if target is None:
            self.client.create_alias(index.collection, alias)
        elif target != index.collection:
            self.client.alter_alias(index.collection, alias)
        index.aliased = True
        for old in self._collections(namespace):  # replaced ones, and any a crashed rebuild left
            if old != index.collection:
                self.client.drop_collection(old)

    def forget(self, namespace: str) -> None:
        target = self._target(namespace)
        if target is not None:
            self.client.alter_collection_properties(target, properties={HEADER_PROPERTY: ""})

    def drop(self, namespace: str) -> None:
        alias = collection_alias(self.database_id, namespace)
        if self._target(namespace) is not None:
            self.client.drop_alias(alias)
        for name in self._collections(namespace):
            self.client.drop_collection(name)

    def close(self) -> None:
        self.client.close()
        self._release_lite()

    def _release_lite(self) -> None:
        """Stop milvus-lite's in-process server when the last gallery using the file closes, so the
        next opening reads the file afresh (another process may have written it meanwhile)."""
        if self._lite_path is None:
            return
        with _lite_lock:
            _lite_users[self._lite_path] -= 1
            last = _lite_users[self._lite_path] <= 0
            if last:
                del _lite_users[self._lite_path]
        if last:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self._lite_path)
        self._lite_path = None

"""GAITID_INDEX_BACKEND=milvus: the service enrolls and identifies through a Milvus collection
(milvus-lite in the gallery folder here; a Milvus server in deployments, docker/compose.milvus.yml)."""

from __future__ import annotations

import pytest

from tests.gallery.conftest import MILVUS_MISSING, MILVUS_SKIP_REASON
from tests.service.conftest import clip, make_settings, serve

pytestmark = pytest.mark.skipif(bool(MILVUS_MISSING), reason=MILVUS_SKIP_REASON)


def test_the_service_searches_milvus_when_told_to(tmp_path, tiny_model, fake):
    milvus_file = tmp_path / "vectors" / "milvus.db"
    milvus_file.parent.mkdir()
    with serve(tmp_path / "data", tiny_model, fake, index_backend="milvus", milvus_uri=str(milvus_file)) as client:
        for name in ("alice", "bob"):
            assert client.post("/enroll", data={"subject_id": name}, files={"video": clip(name)}).status_code == 201
        answer = client.post("/identify", files={"video": clip("alice", "carol")}).json()
        assert [t["subject_id"] for t in answer["tracks"]] == ["alice", None]
        gallery = client.app.state.gaitid.gallery
        assert gallery.backend == "milvus" and gallery.index_path("default").startswith(str(milvus_file) + "#")
        assert gallery.status().index.vectors == 2 and gallery.check() == []
    with pytest.raises(ValueError, match="index_backend"):
        make_settings(tmp_path / "other", tiny_model, index_backend="qdrant")

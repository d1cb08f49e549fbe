"""The shipped reference model (models/), end to end on people it never saw in training.

CASIA-B subjects 001-006 are excluded from its training set. They are enrolled from the CASIA-B
silhouettes of *other* walks (nm-02..04, side view); their raw RGB clips (nm-01) then go through the
whole service: HTTP upload, decoding, background subtraction, tracking, alignment, embedding, search.
"""

import pytest
from fastapi.testclient import TestClient

from gaitid.contract import ModelInput, read_metadata
from gallery import Gallery
from gallery.types import SequenceInput
from model.dataset import load_sequence, trim_to_network_width
from service.app import create_app
from service.pipeline.config import SHIPPED_EMBEDDING_MODEL, PipelineSettings
from service.pipeline.embed import OnnxEmbedder
from service.settings import load_settings

RESERVED = ["001", "002", "003", "004", "005", "006"]
CLIPS = ["002", "003", "004"]


def test_shipped_model_is_the_default_and_describes_itself():
    assert SHIPPED_EMBEDDING_MODEL.exists(), "the reference model must be shipped in models/"
    assert PipelineSettings(_env_file=None).embedding_model == SHIPPED_EMBEDDING_MODEL
    meta = read_metadata(SHIPPED_EMBEDDING_MODEL)  # the current contract: the file was upgraded to v2
    assert meta.variant == "silhouette" and meta.inputs == ["sils"] and not meta.needs_depth
    assert meta.similarity == "part-cosine" and meta.provenance["config"] == "deepgaitv2-sil-casiab-cpu"
    assert "007-074" in meta.training_data  # 001-006 are reserved for these checks
    assert SHIPPED_EMBEDDING_MODEL.stat().st_size < 40e6


@pytest.mark.data
def test_identifies_unseen_casia_b_walkers_from_their_raw_video(tmp_path, casia_root, videos_dir):
    embedder = OnnxEmbedder(SHIPPED_EMBEDDING_MODEL, providers="cpu")
    settings = load_settings(env_file=None, data_dir=tmp_path, providers="cpu",
                             background_clip=videos_dir / "casia-b" / "001-bkgrd-090.avi")
    with Gallery(settings.gallery.gallery_dir) as gallery:
        for subject in RESERVED:
            sequences = []
            for walk in ("nm-02", "nm-03", "nm-04"):
                sils = trim_to_network_width(load_sequence(casia_root / subject / walk / "090"))
                (embedding,) = embedder.embed([ModelInput(sils=sils)])
                sequences.append(SequenceInput(silhouettes=sils, embedding=embedding,
                                               metadata={"source": f"casia-b {subject}/{walk}/090"}))
            gallery.enroll(subject, sequences, model_id=embedder.model_id)

    answers = {}
    with TestClient(create_app(settings)) as client:
        for subject in CLIPS:
            video = (videos_dir / "casia-b" / f"{subject}-nm-01-090.avi").read_bytes()
            response = client.post("/identify", files={"video": (f"{subject}.avi", video)})
            assert response.status_code == 200, response.text
            tracks = response.json()["tracks"]
            assert len(tracks) == 1
            answers[subject] = tracks[0]

    # Measured with the shipped model: 003 and 004 are recognised; 002 comes out "unknown" with 002 a
    # close second (0.99951 vs 0.99952) behind 006. What must hold: nobody is confidently named wrongly,
    # the right person is never far down the list, and most walkers are recognised (chance: 1 in 6).
    for subject, track in answers.items():
        ranked = [c["subject_id"] for c in track["candidates"]]
        assert subject in ranked[:2], (subject, track["candidates"])
        assert track["unknown"] or ranked[0] == subject, (subject, track["candidates"])
    recognised = [s for s, t in answers.items() if not t["unknown"] and t["candidates"][0]["subject_id"] == s]
    assert len(recognised) >= 2, answers

"""The shipped reference model (models/), end to end on people it never saw in training.

CASIA-B subjects 001-006 are excluded from its training set. They are enrolled from the CASIA-B
silhouettes of *other* walks (nm-02..04, side view); their raw RGB clips (nm-01) then go through the
whole service: HTTP upload, decoding, background subtraction, tracking, alignment, embedding, search,
the open-set decision at the model's own calibrated threshold. Measured with the shipped model: 002, 003,
004 score 0.789, 0.851, 0.897 for themselves (threshold 0.779); as strangers (enrollment deleted) their
best match scores 0.590, 0.558, 0.568.
"""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gaitid.contract import ModelInput, read_metadata
from gallery import Gallery
from gallery.types import SequenceInput
from model.config import load_config
from model.dataset import load_sequence, trim_to_network_width
from service.app import create_app
from service.pipeline.config import SHIPPED_EMBEDDING_MODEL, PipelineSettings
from service.pipeline.embed import OnnxEmbedder
from service.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
RESERVED = ["001", "002", "003", "004", "005", "006"]
CLIPS = ["002", "003", "004"]


def test_shipped_model_is_the_default_and_describes_itself():
    assert SHIPPED_EMBEDDING_MODEL.exists(), "the reference model must be shipped in models/"
    assert PipelineSettings(_env_file=None).embedding_model == SHIPPED_EMBEDDING_MODEL
    meta = read_metadata(SHIPPED_EMBEDDING_MODEL)  # the current contract: the file was upgraded to v2
    assert meta.variant == "silhouette" and meta.inputs == ["sils"] and not meta.needs_depth
    recipe = load_config(REPO / "model" / "configs" / "deepgaitv2_sil_casiab_cpu.yaml")
    assert meta.similarity == "part-cosine" and meta.provenance["config"] == recipe.name
    assert meta.embedding_feature == recipe.model.inference_feature
    assert "007-054" in meta.training_data  # 001-006 are reserved for these checks, 055-074 for validation
    # The service's default threshold is the model's own, measured on subjects it never trained on.
    assert meta.open_set_threshold is not None and "055-074" in meta.provenance["calibration"]["dataset"]
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

    with TestClient(create_app(settings)) as client:
        answers = {subject: identify_clip(client, videos_dir, subject) for subject in CLIPS}
        # Every walker is named, at the model's own calibrated threshold (no override in the settings).
        for subject, track in answers.items():
            assert not track["unknown"] and track["subject_id"] == subject, (subject, track["candidates"])
        # No false accept: with a walker's enrollment deleted, their clip is a stranger's and answers unknown.
        for subject in CLIPS:
            assert client.delete(f"/subjects/{subject}").status_code == 200
            stranger = identify_clip(client, videos_dir, subject)
            assert stranger["unknown"] and stranger["subject_id"] is None, (subject, stranger["candidates"])
            assert subject not in [c["subject_id"] for c in stranger["candidates"]]


def identify_clip(client: TestClient, videos_dir, subject: str) -> dict:
    video = (videos_dir / "casia-b" / f"{subject}-nm-01-090.avi").read_bytes()
    response = client.post("/identify", files={"video": (f"{subject}.avi", video)})
    assert response.status_code == 200, response.text
    tracks = response.json()["tracks"]
    assert len(tracks) == 1
    return tracks[0]

"""gallery/subject_ids.py: the one subject-id rule (what every HTTP client can round-trip), enforced on
create, NFC-normalised; ids stored under older rules stay readable, deletable and listed as problems."""

from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery, InvalidSubjectIdError, SubjectNotFoundError, check_new_subject_id
from gallery.subject_ids import subject_id_problem
from tests.gallery.conftest import OpenGallery
from tests.gallery.synthetic import embedding, sequence

VALID = [
    "alice", "Zoë", "user@example.com", "team:blue-7", "a_b.c", "...", ".hidden", "007",
    "نسرین\u200cدخت",  # Persian with a ZWNJ
    "क्षत्रिय",  # Devanagari: letters and combining marks
    "王小明", "Ελένη", "Олег",
    "👩\u200d💻",  # emoji ZWJ sequence (woman technologist)
    "👍🏽",  # emoji with a skin-tone modifier
    "🇮🇷",  # regional-indicator flag
    "1\ufe0f\u20e3",  # keycap
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # subdivision flag (tags)
    "x" * 128,
]

INVALID = [
    "", ".", "..", "a/b/c", "a\\b", "%2e%2e", "a%00b", "a\x00b", "a b", " padded", "tab\t", "line\n",
    "\u200calice", "alice\u200d", "a\u200c\u200db",  # joiners first, last, doubled
    "\u0301e",  # a combining mark first
    "a?b", "a#b", "a&b", "a+b", "<script>", "x" * 129, "\ud800", "\u202eevil",  # bidi override (Cf)
]


@pytest.mark.parametrize("subject_id", VALID)
def test_valid_ids_pass_unchanged(subject_id: str) -> None:
    assert subject_id_problem(subject_id) is None
    assert check_new_subject_id(subject_id) == subject_id


@pytest.mark.parametrize("subject_id", INVALID)
def test_invalid_ids_are_refused_with_the_reason(subject_id: str) -> None:
    with pytest.raises(InvalidSubjectIdError) as raised:
        check_new_subject_id(subject_id)
    assert raised.value.code == "invalid_subject_id" and raised.value.problem


def test_ids_are_stored_nfc(gallery: Gallery, rng: np.random.Generator) -> None:
    decomposed = "Zoe\u0308"
    assert unicodedata.normalize("NFC", decomposed) == "Zo\u00eb" != decomposed
    result = gallery.enroll(decomposed, [sequence(rng, embedding(rng))], model_id="m")
    assert result.subject_id == "Zo\u00eb"
    assert [s.subject_id for s in gallery.list_subjects()] == ["Zo\u00eb"]
    # Either spelling finds it; the new enrollment appends to the same subject.
    assert gallery.get_subject(decomposed).subject_id == "Zo\u00eb"
    assert gallery.enroll("Zo\u00eb", [sequence(rng, embedding(rng))], model_id="m").created is False


def test_invalid_ids_never_reach_the_database(gallery: Gallery, rng: np.random.Generator) -> None:
    for subject_id in INVALID:
        with pytest.raises(InvalidSubjectIdError):
            gallery.enroll(subject_id, [sequence(rng, embedding(rng))], model_id="m")
    assert gallery.status().subjects == 0
    assert gallery.audit_log()[1] == 0


def _plant_legacy_subjects(open_gallery: OpenGallery, root: Path, rng: np.random.Generator, ids: list[str]) -> None:
    """Subjects an older version accepted: enrolled under a valid id, then renamed in SQL."""
    with open_gallery(root) as g:
        for number, _ in enumerate(ids):
            g.enroll(f"tmp{number}", [sequence(rng, embedding(rng))], model_id="m")
    with sqlite3.connect(root / "gallery.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        for number, legacy in enumerate(ids):
            for table in ("subjects", "sequences"):
                conn.execute(f"UPDATE {table} SET subject_id = ? WHERE subject_id = ?", (legacy, f"tmp{number}"))


def test_legacy_ids_are_listed_and_stay_readable_and_deletable(open_gallery: OpenGallery, tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "g"
    legacy = ["a/b/c", "..", "a\x00b", "Zoe\u0308"]
    _plant_legacy_subjects(open_gallery, root, rng, legacy)
    with open_gallery(root) as g:
        problems = {p.subject_id: p.problem for p in g.subject_id_problems()}
        assert set(problems) == set(legacy) and all(problems.values())
        assert g.subject_id_problems("other-namespace") == []
        for subject_id in legacy:
            assert g.get_subject(subject_id).subject_id == subject_id  # exact match first
            assert g.has_subject(subject_id)
        with pytest.raises(InvalidSubjectIdError):  # no new sequences under a broken id
            g.enroll("a/b/c", [sequence(rng, embedding(rng))], model_id="m")
        for subject_id in legacy:
            assert g.delete_subject(subject_id) == 1
        assert g.status().subjects == 0 and g.status().index.vectors == 0
        assert g.subject_id_problems() == []
        with pytest.raises(SubjectNotFoundError):
            g.get_subject("a/b/c")

"""The evaluation protocols: which sequences are probes and which are gallery, per probe set.

The protocol definitions follow OpenGait's evaluator (opengait/evaluation/evaluator.py); the code
here is our own. Labels are (subject, condition, view) triples, as `model.dataset.list_sequences` reads
them from an OpenGait-layout tree ROOT/subject/condition/view/*.pkl. Supported conventions:

CASIA-B (``casia-b``)
    condition ``nm-01``..``nm-06``, ``bg-01``, ``bg-02``, ``cl-01``, ``cl-02``; views ``000``..``180``.
    Gallery nm-01..04 for every probe set; probes NM = nm-05/06, BG = bg-01/02, CL = cl-01/02.

CCPG (``ccpg``)
    condition = the outfit code ``U<upper>_D<lower>`` with ``_BG`` when a bag is carried
    (``U0_D0``, ``U0_D0_BG``, ``U1_D1``, ``U2_D2``, ``U3_D3``, ``U0_D3``, ``U1_D0``); view = the camera,
    everything after the first ``_`` of the view folder name is ignored (``01_2`` -> ``01``), as
    OpenGait does. Four probe/gallery pairs, each with its own gallery:
    CL: probe U0_D0_BG + U0_D0, gallery U1_D1 + U2_D2 + U3_D3 (all clothes changed);
    UP: probe U3_D3, gallery U0_D3 (upper garment changed);
    DN: probe U1_D0, gallery U1_D1 (lower garment changed);
    BG: probe U0_D0_BG, gallery U0_D0 (bag only).
    Besides the per-view rank-1 tables, CCPG is also scored person-re-identification style: every
    probe against the whole gallery of its pair, with the gallery sequences of the same subject and
    the same view removed; rank-1, mAP and mINP over the probes whose subject is still in it.

SUSTech1K (``sustech1k``)
    condition = ``<sequence number>-<attribute>[-<attribute>...]``, e.g. ``00-nm``, ``01-bg``,
    ``02-cl-ub``; attributes nm (normal), bg (bag), cl (clothing), cr (carrying), ub (umbrella),
    uf (uniform), oc (occlusion), nt (night); views ``000``, ``045``, ...
    Gallery: ``00-nm``. Probe sets: Normal = sequence 01 with ``nm``; Bag, Clothing, Carrying,
    Umbrella, Uniform, Occlusion, Night = every sequence carrying that attribute (a sequence with two
    attributes counts in both); Overall = every sequence numbered 01..04. Rank-1 and rank-5.
    (SUSTech1K folders hold several pkl files; point the evaluator at a tree whose first pkl per
    folder is the silhouette sequence.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model.evaluation.errors import EvaluationError

PROTOCOLS = ("casia-b", "ccpg", "sustech1k")


@dataclass(frozen=True)
class ProbeSet:
    """One probe/gallery pairing of a protocol (a row of its result table)."""

    name: str
    is_probe: Callable[[str], bool]  # condition -> is this sequence a probe of the set
    is_gallery: Callable[[str], bool]  # condition -> is it in the set's gallery
    probe_description: str
    gallery_description: str


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    probe_sets: tuple[ProbeSet, ...]
    ranks: tuple[int, ...] = (1,)
    reid: bool = False  # also score re-identification style over all views (CCPG)
    view_of: Callable[[str], str] = str  # view folder name -> the view it stands for
    conditions_hint: str = ""

    def uses(self, condition: str) -> bool:
        return any(s.is_probe(condition) or s.is_gallery(condition) for s in self.probe_sets)


def _one_of(*conditions: str) -> Callable[[str], bool]:
    allowed = frozenset(conditions)
    return lambda condition: condition in allowed


_CASIA_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B = ProtocolSpec(
    name="casia-b",
    probe_sets=tuple(
        ProbeSet(name, _one_of(*probes), _one_of(*_CASIA_GALLERY), ", ".join(probes), "nm-01..04")
        for name, probes in (("NM", ("nm-05", "nm-06")), ("BG", ("bg-01", "bg-02")), ("CL", ("cl-01", "cl-02")))
    ),
    conditions_hint="nm-01..06, bg-01/02, cl-01/02",
)

_CCPG_PAIRS = (
    ("CL", ("U0_D0_BG", "U0_D0"), ("U1_D1", "U2_D2", "U3_D3")),
    ("UP", ("U3_D3",), ("U0_D3",)),
    ("DN", ("U1_D0",), ("U1_D1",)),
    ("BG", ("U0_D0_BG",), ("U0_D0",)),
)
CCPG = ProtocolSpec(
    name="ccpg",
    probe_sets=tuple(
        ProbeSet(name, _one_of(*probes), _one_of(*gallery), ", ".join(probes), ", ".join(gallery))
        for name, probes, gallery in _CCPG_PAIRS
    ),
    reid=True,
    view_of=lambda view: view.split("_")[0],
    conditions_hint="U0_D0, U0_D0_BG, U1_D1, U2_D2, U3_D3, U0_D3, U1_D0",
)


def _sustech_condition(condition: str) -> tuple[str, frozenset[str]]:
    """'02-cl-ub' -> ('02', {'cl', 'ub'})."""
    number, _, attributes = condition.partition("-")
    return number, frozenset(a for a in attributes.split("-") if a)


def _sustech_has(attribute: str, number: str | None = None) -> Callable[[str], bool]:
    def test(condition: str) -> bool:
        seq, attributes = _sustech_condition(condition)
        return attribute in attributes and (number is None or seq == number)

    return test


def _sustech_overall(condition: str) -> bool:
    return _sustech_condition(condition)[0] in {"01", "02", "03", "04"}


_SUSTECH_ATTRIBUTES = (
    ("Bag", "bg"), ("Clothing", "cl"), ("Carrying", "cr"), ("Umbrella", "ub"),
    ("Uniform", "uf"), ("Occlusion", "oc"), ("Night", "nt"),
)
_SUSTECH_GALLERY = _sustech_has("nm", number="00")
SUSTECH1K = ProtocolSpec(
    name="sustech1k",
    probe_sets=(
        ProbeSet("Normal", _sustech_has("nm", number="01"), _SUSTECH_GALLERY, "01-nm", "00-nm"),
        *(ProbeSet(name, _sustech_has(code), _SUSTECH_GALLERY, f"*-{code}*", "00-nm")
          for name, code in _SUSTECH_ATTRIBUTES),
        ProbeSet("Overall", _sustech_overall, _SUSTECH_GALLERY, "01..04-*", "00-nm"),
    ),
    ranks=(1, 5),
    conditions_hint="00-nm, 01-nm, 01-bg, 02-cl-ub, ...",
)

_PROTOCOLS = {"casiab": CASIA_B, "ccpg": CCPG, "sustech1k": SUSTECH1K}


def get_protocol(name: str) -> ProtocolSpec:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _PROTOCOLS:
        raise EvaluationError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOLS)}")
    return _PROTOCOLS[key]

"""`gaitid rescore-report`: a small self-contained HTML page from a results file.

Per subject: every sighting (video, camera, time, frame range, similarity) with a thumbnail strip of
the track's aligned silhouettes, inlined as a base64 PNG (the strips are stored in the state file
next to the results at re-scoring time, so the report needs no video). Then the unknown tracks and
the videos without a track (corrupt, nobody walking). One file, no external assets: it can be
mailed or attached to a case file. The state records each report built with it, so that erasing
a subject builds the report again without them (service.rescore.redact); copies sent away are
beyond its reach.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from service.rescore.results import read_results
from service.rescore.store import ReportSource, RescoreState, default_state_path

_TEMPLATE = """{% macro sightings(rows, best=False) %}
<table><tr><th>video</th><th>camera</th><th>time</th><th>frames</th><th class="num">similarity</th>
{% if best %}<th>closest subject</th>{% endif %}<th>track</th></tr>
{% for s in rows %}<tr><td>{{ s.video }} <span class="muted">#{{ s.track_id }}</span></td>
<td>{{ s.camera or '' }}</td><td>{{ s.start_time or '' }}</td>
<td>{{ s.first_frame }}&ndash;{{ s.last_frame }}{% if s.start_s is not none %} <span class="muted">({{
 '%.1f'|format(s.start_s) }}&ndash;{{ '%.1f'|format(s.end_s) }} s)</span>{% endif %}</td>
<td class="num">{{ '%.3f'|format(s.similarity) if s.similarity is not none else '' }}</td>
{% if best %}<td>{{ s.closest or '' }}</td>{% endif %}
<td>{% if s.strip %}<img class="strip" alt="aligned silhouettes of track {{ s.track_id }}"
 src="data:image/png;base64,{{ s.strip }}">{% endif %}</td></tr>{% endfor %}</table>
{% endmacro -%}
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>gaitid re-scoring report</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
 h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
 table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 3px 8px; text-align: left;
 vertical-align: middle; border-bottom: 1px solid #eee; } th { background: #f4f4f4; }
 img.strip { height: 64px; image-rendering: pixelated; background: #000; }
 .num { text-align: right; font-variant-numeric: tabular-nums; } .muted { color: #777; }
</style></head><body>
<h1>Re-scoring report</h1>
<p>{{ results }}: {{ totals.videos }} videos, {{ totals.tracks }} tracks, {{ totals.matches }} matched to
{{ subjects|length }} subject{{ '' if subjects|length == 1 else 's' }}, {{ totals.unknown }} unknown, {{ totals.errors }} videos without a track.<br>
<span class="muted">namespace {{ namespace }}, threshold {{ threshold }}, model {{ models }},
gallery generation {{ generations }}; generated {{ generated }}{% if not strips %}; no state file found,
so no thumbnails{% endif %}.</span></p>
{% for subject in subjects %}
<h2 id="subject-{{ loop.index }}">{{ subject.name }}{% if subject.name != subject.id %}
 <span class="muted">({{ subject.id }})</span>{% endif %} &mdash; {{ subject.sightings|length }} sighting{{
 '' if subject.sightings|length == 1 else 's' }}</h2>
{{ sightings(subject.sightings) }}
{% endfor %}
{% if unknown %}<h2>Unknown tracks ({{ totals.unknown }}{% if unknown|length < totals.unknown %}, first
{{ unknown|length }} shown{% endif %})</h2>{{ sightings(unknown, best=True) }}{% endif %}
{% if errors %}<h2>Videos without a track ({{ errors|length }})</h2>
<table><tr><th>video</th><th>camera</th><th>recorded</th><th>why</th></tr>
{% for e in errors %}<tr><td>{{ e.video }}</td><td>{{ e.camera or '' }}</td><td>{{ e.recorded_at or '' }}</td>
<td>{{ e.error_code }}: {{ e.error }}</td></tr>{% endfor %}</table>{% endif %}
</body></html>
"""


@dataclass(frozen=True)
class ReportSummary:
    out: Path
    subjects: int
    sightings: int
    unknown: int
    errors: int


def build_report(results: str | Path, out: str | Path, *, state: str | Path | None = None, fmt: str | None = None,
                 unknown_limit: int = 100) -> ReportSummary:
    """Write the HTML report of `results` (JSONL, CSV or Parquet) to `out`."""
    results = Path(results)
    records = read_results(results, fmt)
    state_path = Path(state) if state is not None else default_state_path(results)
    store = RescoreState(state_path) if state_path.exists() else None
    out = Path(out)
    try:
        page, summary = _render(records, results, store, unknown_limit)
        if store is not None:  # so that erasing a subject builds it again (service.rescore.redact)
            store.note_report(ReportSource(out, results, fmt, unknown_limit))
    finally:
        if store is not None:
            store.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return ReportSummary(out, **summary)


def _render(records: list[dict], results: Path, store: RescoreState | None, unknown_limit: int) -> tuple[str, dict]:
    tracks = [r for r in records if r.get("decision") != "error"]
    errors = [r for r in records if r.get("decision") == "error"]
    by_subject: dict[str, list[dict]] = defaultdict(list)
    names: dict[str, str] = {}
    for record in tracks:
        if record.get("decision") == "match" and record.get("subject_id"):
            by_subject[record["subject_id"]].append(_sighting(record, store))
            names[record["subject_id"]] = _display_name(record)
    unknown_records = [r for r in tracks if r.get("decision") != "match"]
    unknown = [_sighting(r, store) for r in sorted(unknown_records, key=_when)[:unknown_limit]]
    subjects = [{"id": sid, "name": names[sid], "sightings": sorted(rows, key=_when)}
                for sid, rows in sorted(by_subject.items(), key=lambda kv: names[kv[0]].lower())]
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = environment.from_string(_TEMPLATE).render(
        results=results.name, subjects=subjects, unknown=unknown, errors=errors, strips=store is not None,
        totals={"videos": len({r["video"] for r in records}), "tracks": len(tracks),
                "matches": sum(len(s["sightings"]) for s in subjects), "unknown": len(unknown_records),
                "errors": len(errors)},
        namespace=_distinct(records, "namespace"), threshold=_distinct(records, "threshold"),
        models=_distinct(records, "model_id"), generations=_distinct(records, "gallery_generation"),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    summary = {"subjects": len(subjects), "sightings": sum(len(s["sightings"]) for s in subjects),
               "unknown": len(unknown_records), "errors": len(errors)}
    return page, summary


def _sighting(record: dict, store: RescoreState | None) -> dict[str, Any]:
    strip = None
    if store is not None and record.get("sha256") and record.get("track_id") is not None:
        png = store.strip(record["sha256"], record["model_id"], int(record["track_id"]))
        strip = base64.b64encode(png).decode("ascii") if png else None
    candidates = record.get("candidates") or []
    closest = f"{candidates[0]['display_name']} ({candidates[0]['similarity']:.3f})" if candidates else None
    return {**record, "strip": strip, "closest": closest}


def _display_name(record: dict) -> str:
    for candidate in record.get("candidates") or []:
        if candidate.get("subject_id") == record["subject_id"]:
            return candidate.get("display_name") or record["subject_id"]
    return record["subject_id"]


def _when(record: dict) -> tuple:
    return (record.get("start_time") or "", record.get("video") or "", record.get("first_frame") or 0)


def _distinct(records: list[dict], key: str) -> str:
    values = sorted({str(r.get(key)) for r in records if r.get(key) is not None})
    return ", ".join(values) if values else "n/a"

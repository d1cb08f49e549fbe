"""Crash safety, measured: `kill -9` the real server at random moments of enrollments, deletions and
re-embeddings, restart it, and check that store, index and audit log agree and that nothing
acknowledged was lost or half-written.

Each round starts the service (uvicorn subprocess on 127.0.0.1, one data directory for the whole run,
the real clip pipeline with background subtraction, a tiny ONNX embedding model, a keys file with an
admin key), checks that the restarted server reports what the client knows, does a few acknowledged
operations, then sends the round's target operation and SIGKILLs the server at a random moment within
that operation's usual duration (measured on the acknowledged ones), or -- half of the kills -- right
when the gallery database is written (its WAL file changes), 0-1.5 ms later. Targets alternate
between enrollment (new subject, append or replace) and deletion; every few rounds the server starts
on the other of two tiny models, so the gallery must be re-embedded (POST /gallery/reembed) and that
is the target of the first round on the new model (later rounds finish an interrupted re-embedding
first). After each kill, with the server down, the gallery is opened directly and checked:
- `Gallery.check()`: SQLite integrity, no half-written rows, the index holds exactly the stored
  sequences, the audit log replays to the store (gallery/consistency.py);
- nothing acknowledged was lost: the store is exactly what the acknowledged answers say, with the
  killed operation either wholly applied or not at all;
- every acknowledged change has its audit entry under the request id its answer carried.

    python bench/soak_kill.py                  # 50 kills (about 2-3 minutes on 2 cores)
    python bench/soak_kill.py --kills 5 --seed 3 --clip ../shared/data/videos/some.avi

Prints one line per kill and the figures; exit status 1 when any check failed.
tests/service/test_soak_kill.py runs a small version (5 kills).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.service_process import ServiceProcess
from gaitid.contract import model_id as model_id_of
from gallery import Gallery, hash_secret
from gallery.audit import DELETED, ENROLLED, REEMBEDDED

ADMIN_KEY = "soak-admin-secret"
GALLERY = "soak"
SWITCH_MODEL_EVERY = 4  # rounds on one model before the server starts on the other
TYPICAL_S = {"enroll": 0.3, "delete": 0.03, "reembed": 0.1}  # first guesses; then measured
REEMBED_BATCH = 16  # sequences per transaction of POST /gallery/reembed (Gallery.reembed's default)


@dataclass
class Operation:
    kind: str  # enroll | delete | reembed
    subject: str | None = None
    if_exists: str = "append"
    status: int | None = None  # None: no answer (the server died)
    request_id: str | None = None
    body: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Known:
    """What the client knows from acknowledged answers: subject -> sequence ids, and the model."""

    subjects: dict[str, set[int]] = field(default_factory=dict)
    model_id: str | None = None

    def copy(self) -> Known:
        return Known({s: set(ids) for s, ids in self.subjects.items()}, self.model_id)

    def apply(self, op: Operation) -> None:
        if op.kind == "enroll":
            new = {int(op.body["sequence_id"])}
            kept = set() if op.if_exists == "replace" else self.subjects.get(op.subject, set())
            self.subjects[op.subject] = kept | new
            self.model_id = op.body["model_id"]
        elif op.kind == "delete":
            self.subjects.pop(op.subject, None)
        elif op.kind == "reembed":
            self.model_id = op.body["new_model_id"]


@dataclass
class Report:
    kills: int = 0
    kills_by_kind: Counter = field(default_factory=Counter)
    in_flight_by_kind: Counter = field(default_factory=Counter)  # killed while the answer was awaited
    applied_in_flight: Counter = field(default_factory=Counter)  # of those: committed before the kill
    acknowledged: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    final_subjects: int = 0
    final_sequences: int = 0

    def summary(self) -> str:
        kinds = ("enroll", "delete", "reembed")
        lines = [
            f"kills: {self.kills} ({', '.join(f'{k} {self.kills_by_kind[k]}' for k in kinds)})",
            "killed with the answer still awaited: " + ", ".join(
                f"{k} {self.in_flight_by_kind[k]} ({self.applied_in_flight[k]} of them committed)" for k in kinds),
            "acknowledged operations: " + ", ".join(f"{k} {self.acknowledged[k]}" for k in kinds),
            (f"acknowledged but lost: {sum('lost' in p for p in self.problems)}; half-written or disagreeing: "
             f"{sum('lost' not in p for p in self.problems)}"),
            f"restart to ready: mean {np.mean(self.restart_s):.1f} s, max {np.max(self.restart_s):.1f} s"
            if self.restart_s else "restart to ready: -",
            f"final gallery: {self.final_subjects} subjects, {self.final_sequences} sequences; total {self.seconds:.0f} s",
        ]
        return "\n".join(lines)


# -- the client ----------------------------------------------------------------------------------------
def perform(client: httpx.Client, op: Operation, clip: tuple[str, bytes]) -> Operation:
    """Send the operation; fills status/body/request id, or leaves status None when the server died."""
    started = time.perf_counter()
    try:
        if op.kind == "enroll":
            response = client.post("/enroll", data={"subject_id": op.subject, "if_exists": op.if_exists},
                                   files={"video": (clip[0], clip[1], "video/x-msvideo")})
        elif op.kind == "delete":
            response = client.delete(f"/subjects/{op.subject}")
        else:
            response = client.post("/gallery/reembed")
    except httpx.TransportError:
        return op
    op.seconds = time.perf_counter() - started
    op.status, op.request_id = response.status_code, response.headers.get("X-Request-ID")
    op.body = response.json()
    return op


def acknowledge(client: httpx.Client, op: Operation, clip: tuple[str, bytes], known: Known) -> Operation:
    """A warm-up operation, which must be answered 2xx; the client's knowledge follows it."""
    done = perform(client, op, clip)
    if not done.acknowledged:
        raise RuntimeError(f"warm-up {done.kind} {done.subject} answered {done.status}: {done.body}")
    known.apply(done)
    return done


def kill(rng: np.random.Generator, server: ServiceProcess, client: httpx.Client, target: Operation,
         clip: tuple[str, bytes], done: list[Operation], wal: Path, sequences: int) -> float:
    """Send `target` and SIGKILL the server during it: half the time at a random moment of its usual
    duration (median of the acknowledged ones), half the time right when the gallery database is
    written (the WAL file changes: the transaction is being committed), 0-1.5 ms later. Returns the
    seconds from sending to the kill."""
    recent = done[-10:]
    duration = float(np.median([op.seconds for op in recent])) if recent else TYPICAL_S[target.kind]
    at_write = rng.random() < 0.5
    delay = float(rng.uniform(0.0, 1.2 * duration))
    before = _stat(wal)
    worker = threading.Thread(target=perform, args=(client, target, clip))
    sent = time.perf_counter()
    worker.start()
    if at_write:
        # A re-embedding writes one batch of embeddings per transaction, then switches models in a last
        # one: kill at any of these writes, the switch included.
        writes = int(rng.integers(1, math.ceil(sequences / REEMBED_BATCH) + 2)) if target.kind == "reembed" else 1
        deadline = sent + 2.0 * duration + 0.05
        while writes and time.perf_counter() < deadline and worker.is_alive():
            if (now := _stat(wal)) != before:
                before, writes = now, writes - 1
            else:
                time.sleep(0.0002)
        time.sleep(float(rng.uniform(0.0, 0.0015)))
    else:
        time.sleep(delay)
    killed_after = time.perf_counter() - sent
    server.kill()
    worker.join(60)
    return killed_after


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_size, info.st_mtime_ns


def next_operation(rng: np.random.Generator, known: Known, kind: str, counter: int,
                   planned: list[Operation] = ()) -> Operation:
    """An enrollment (new subject, or another walk of a known one) or a deletion of a known subject,
    among the subjects the client knows once the `planned` operations are done."""
    subjects = set(known.subjects)
    for op in planned:
        if op.kind == "enroll":
            subjects.add(op.subject)
        elif op.kind == "delete":
            subjects.discard(op.subject)
    subjects = sorted(subjects)
    if kind == "delete" and subjects:
        return Operation("delete", subjects[int(rng.integers(len(subjects)))])
    if subjects and rng.random() < 0.4:  # another walk of a known subject: append or replace
        return Operation("enroll", subjects[int(rng.integers(len(subjects)))],
                         "replace" if rng.random() < 0.4 else "append")
    return Operation("enroll", f"subject-{counter:04d}")


# -- the checks -----------------------------------------------------------------------------------------
def observe(gallery_dir: Path) -> tuple[Known, list[str], dict[str, tuple[str, str | None]]]:
    """The gallery as stored (server down): subjects and model, Gallery.check's problems, and the
    audit entries by request id (action, subject)."""
    with Gallery(gallery_dir) as gallery:
        problems = gallery.check()
        subjects = {s.subject_id: {q.sequence_id for q in gallery.get_subject(s.subject_id, namespace=GALLERY).sequences}
                    for s in gallery.list_subjects(namespace=GALLERY, limit=None)}
        model = gallery.status(GALLERY).model_id if GALLERY in gallery.namespaces() else None
        entries, _ = gallery.audit_log(namespace=GALLERY, limit=None)
    audited = {e.request_id: (e.action, e.subject_id) for e in entries if e.request_id}
    return Known(subjects, model), problems, audited


def applied(before: Known, op: Operation, new_ids: set[int], model_ids: set[str]) -> list[Known]:
    """The states `op` leaves when it was wholly applied without an answer reaching the client (an
    enrollment's new sequence id is the one the store gained)."""
    if op.kind == "enroll" and len(new_ids) == 1:
        after = before.copy()
        after.apply(Operation("enroll", op.subject, op.if_exists, 201, body={"sequence_id": next(iter(new_ids)),
                                                                              "model_id": before.model_id}))
        return [after]
    if op.kind == "delete":
        after = before.copy()
        after.subjects.pop(op.subject, None)
        return [after]
    if op.kind == "reembed":
        return [Known(before.subjects, m) for m in model_ids - {before.model_id}]
    return []


def check_round(gallery_dir: Path, known: Known, acknowledged: list[Operation], target: Operation,
                model_ids: set[str]) -> tuple[Known, list[str], bool]:
    """Problems after a kill; returns the observed state (the client's knowledge from now on), the
    problems, and whether an unanswered target had been committed."""
    observed, problems, audited = observe(gallery_dir)
    for op in acknowledged:
        expected = {"enroll": ENROLLED, "delete": DELETED, "reembed": REEMBEDDED}[op.kind]
        no_op = op.kind == "reembed" and op.body.get("old_model_id") == op.body.get("new_model_id")
        if not no_op and audited.get(op.request_id, (None,))[0] != expected:
            problems.append(f"acknowledged {op.kind} {op.subject or ''} (request {op.request_id}) lost from the audit log")
    committed = False
    if target.acknowledged:
        if observed.subjects != known.subjects or observed.model_id != known.model_id:
            problems.append(f"acknowledged {target.kind} {target.subject or ''} lost: the store differs from the answers")
    else:
        def same(state: Known) -> bool:
            return state.subjects == observed.subjects and state.model_id == observed.model_id

        new_ids = _ids(observed) - _ids(known)
        committed = any(same(state) for state in applied(known, target, new_ids, model_ids))
        if not committed and not same(known):
            problems.append(f"killed {target.kind} {target.subject or ''} left a state that is neither before nor "
                            f"after it (lost acknowledged data or half-written)")
    return observed, problems, committed


def _ids(state: Known) -> set[int]:
    return set().union(*state.subjects.values()) if state.subjects else set()


def check_server_view(client: httpx.Client, known: Known) -> list[str]:
    status = client.get("/gallery").json()
    counted = (status["subjects"], status["sequences"], status["model_id"])
    expected = (len(known.subjects), sum(len(s) for s in known.subjects.values()), known.model_id)
    if known.model_id is None:
        expected = (0, 0, counted[2])
    return [] if counted == expected else [f"the restarted server reports {counted}, the store holds {expected}"]


# -- the soak -------------------------------------------------------------------------------------------
def prepare(workdir: Path, clip_path: Path | None) -> tuple[list[Path], list[tuple[str, bytes]], Path]:
    from tests.conftest import build_tiny_embedding_model

    models = [build_tiny_embedding_model(workdir / f"tiny-{seed}.onnx", seed=seed) for seed in (0, 1)]
    if clip_path is not None:
        clips = [(clip_path.name, clip_path.read_bytes())]
    else:
        from tests.service.conftest import walking_clip

        clips = [(f"walk-{frames}.avi", walking_clip(frames=frames)) for frames in (30, 38, 46)]
    keys = workdir / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "soak-admin"\ngallery = "{GALLERY}"\nrole = "admin"\n'
                    f'sha256 = "{hash_secret(ADMIN_KEY)}"\n')
    return models, clips, keys


def soak(kills: int, seed: int = 0, workdir: Path | None = None, clip_path: Path | None = None,
         log: bool = True) -> Report:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="gaitid-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    models, clips, keys = prepare(workdir, clip_path)
    model_ids = {model_id_of(m) for m in models}
    data_dir = workdir / "data"
    report = Report()
    known = Known()
    history: dict[str, list[Operation]] = {k: [] for k in TYPICAL_S}  # acknowledged ops, for their timing
    subject_counter = 0
    targets = 0
    started = time.perf_counter()
    for number in range(kills):
        model = models[(number // SWITCH_MODEL_EVERY) % 2]
        env = {"GAITID_DATA_DIR": str(data_dir), "GAITID_EMBEDDING_MODEL": str(model), "GAITID_SEGMENTER": "bgsub",
               "GAITID_KEYS_FILE": str(keys), "GAITID_PROVIDERS": "cpu", "GAITID_THREADS": "1",
               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        launched = time.perf_counter()
        server = ServiceProcess(env, workdir / "server.log", append=True)
        try:
            server.wait_ready()
            report.restart_s.append(time.perf_counter() - launched)
            client = httpx.Client(base_url=server.url, headers={"X-API-Key": ADMIN_KEY}, timeout=60.0)
            report.problems += [f"kill {number}: {p}" for p in check_server_view(client, known)]
            needs_reembed = known.model_id is not None and known.model_id != model_id_of(model)
            warm_ups: list[Operation] = []
            if needs_reembed and number % SWITCH_MODEL_EVERY == 0:  # the first round on the other model
                target = Operation("reembed")
            else:
                if needs_reembed:  # an earlier round's re-embedding was killed: finish it first
                    warm_ups.append(Operation("reembed"))
                for _ in range(int(rng.integers(1, 6))):  # acknowledged changes; the gallery grows
                    subject_counter += 1
                    warm_ups.append(next_operation(rng, known, "enroll" if rng.random() < 0.9 else "delete",
                                                   subject_counter, planned=warm_ups))
                subject_counter += 1
                targets += 1
                target = next_operation(rng, known, "delete" if targets % 2 == 0 else "enroll", subject_counter,
                                        planned=warm_ups)
            acknowledged = [acknowledge(client, op, clips[int(rng.integers(len(clips)))], known) for op in warm_ups]
            for op in acknowledged:
                history[op.kind].append(op)
            delay = kill(rng, server, client, target, clips[int(rng.integers(len(clips)))], history[target.kind],
                         data_dir / "gallery" / "gallery.db-wal", sum(len(s) for s in known.subjects.values()))
            client.close()
        finally:
            server.kill()
        report.kills += 1
        report.kills_by_kind[target.kind] += 1
        if target.acknowledged:
            history[target.kind].append(target)
            known_after = known.copy()
            known_after.apply(target)
            acknowledged.append(target)
        else:
            report.in_flight_by_kind[target.kind] += 1
            known_after = known
        for op in acknowledged:
            report.acknowledged[op.kind] += 1
        observed, problems, committed = check_round(data_dir / "gallery", known_after, acknowledged, target, model_ids)
        if committed:
            report.applied_in_flight[target.kind] += 1
        report.problems += [f"kill {number}: {p}" for p in problems]
        known = observed
        if log:
            outcome = "answered before the kill" if target.acknowledged else (
                "killed in flight, " + ("committed" if committed else "not committed"))
            print(f"kill {number + 1:3d}: {target.kind:7s} {target.subject or '':14s} after {delay * 1000:6.1f} ms, "
                  f"{outcome}; {len(known.subjects)} subjects, {sum(len(s) for s in known.subjects.values())} "
                  f"sequences; {'OK' if not problems else '; '.join(problems)}", flush=True)
    report.seconds = time.perf_counter() - started
    report.final_subjects = len(known.subjects)
    report.final_sequences = sum(len(s) for s in known.subjects.values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--clip", type=Path, default=None, help="a real short clip of one walker (default: synthetic)")
    args = parser.parse_args()
    report = soak(args.kills, args.seed, args.workdir, args.clip)
    print(report.summary())
    for problem in report.problems:
        print("PROBLEM:", problem)
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()

"""service/rescore/sightings.py and sources.py on a synthetic state (no video decoded): which tracks
pass the filters and the threshold, which `limit` are kept, their time order, and the camera/time rules."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gaitid.contract import similarities
from gallery import Gallery, SequenceInput, SubjectNotFoundError
from gallery.compact_index import CompactIndex, CompactSpec
from service.rescore import OptionError, RescoreState
from service.rescore.archive import FileStat, PathInfo
from service.rescore.errors import GalleryMismatchError, StateError
from service.rescore.extract import FileOutcome, TrackOutcome
from service.rescore.sightings import (
    MAX_LIMIT,
    ArchiveTracks,
    SightingFilter,
    SubjectWalks,
    find_sightings,
    sighting_record,
    sightings_index_path,
    subject_walks,
)
from service.rescore.sources import CameraMap, ContainerFacts, SourceFacts, probe_container, recording_start

MODEL = "m" * 16
C, P = 8, 4
RNG = np.random.default_rng(7)
ALICE = RNG.normal(size=(C, P)).astype(np.float32)
BOB = RNG.normal(size=(C, P)).astype(np.float32)


def near(base: np.ndarray, noise: float) -> np.ndarray:
    return (base + noise * RNG.normal(size=base.shape)).astype(np.float32)


def outcome(sha: str, embeddings: list[np.ndarray], fps: float = 25.0, first: int = 10) -> FileOutcome:
    tracks = [TrackOutcome(track_id=i, frame_indices=np.arange(first + 5 * i, first + 5 * i + 30, dtype=np.int64),
                           boxes=np.tile(np.array([[10, 20, 50, 120]], np.float32), (30, 1)) + i,
                           embedding=e, strip_png=b"png") for i, e in enumerate(embeddings)]
    return FileOutcome(path=f"/archive/{sha}.avi", model_id=MODEL, status="done", sha256=sha,
                       stat=FileStat(1, 1), tracks=tracks, fps=fps, frame_count=100, size=(320, 240))


T0 = datetime(2024, 1, 2, 10, 0, 0)


@pytest.fixture
def state(tmp_path) -> RescoreState:
    """Five videos: alice at camA 10:00, camB 11:00, camA 12:00 (UTC, from a container), a copy of the
    10:00 video without a time, and bob at camB 10:30; one video also holds a second walker (bob)."""
    with RescoreState(tmp_path / "r.state.sqlite") as state:
        state.save(outcome("a1", [near(ALICE, 0.05), near(BOB, 0.05)]))
        state.save(outcome("a2", [near(ALICE, 0.15)]))
        state.save(outcome("a3", [near(ALICE, 0.10)], fps=10.0, first=0))
        state.save(outcome("b1", [near(BOB, 0.05)]))
        state.replace_sources([
            SourceFacts("/archive/camA/10.avi", "a1", "camA", T0, "path"),
            SourceFacts("/archive/camB/11.avi", "a2", "camB", T0 + timedelta(hours=1), "path"),
            SourceFacts("/archive/phone/12.mp4", "a3", "camA", datetime(2024, 1, 2, 12, tzinfo=UTC), "container"),
            SourceFacts("/archive/copies/10.avi", "a1", None, None, None),
            SourceFacts("/archive/camB/1030.avi", "b1", "camB", T0 + timedelta(minutes=30), "path"),
            SourceFacts("/archive/unreadable.avi", None, None, None, None),
        ])
        yield state


def alice(threshold_walks: int = 1) -> SubjectWalks:
    return SubjectWalks("alice", "Alice", MODEL, np.arange(threshold_walks, dtype=np.int64) + 100,
                        np.stack([ALICE] + [near(ALICE, 0.3) for _ in range(threshold_walks - 1)]))


def videos(found) -> list[str]:
    return [s.track.video for s in found]


def test_sightings_pass_the_threshold_and_come_in_time_order_untimed_last(state):
    archive = ArchiveTracks.load(state, MODEL)
    assert len(archive.tracks) == 7 and len({t.row for t in archive.tracks}) == 5  # the copy shares two tracks
    found = find_sightings(archive, alice(), threshold=0.8)
    assert videos(found) == ["/archive/camA/10.avi", "/archive/camB/11.avi", "/archive/phone/12.mp4",
                             "/archive/copies/10.avi"]
    assert all(s.track.track_id == 0 and s.similarity >= 0.8 for s in found)  # bob's tracks are not alice
    first = found[0].track
    assert first.start_time == T0 + timedelta(seconds=10 / 25) and first.end_time == T0 + timedelta(seconds=39 / 25)
    assert (first.first_frame, first.last_frame, first.frames, first.box) == (10, 39, 30, (10.0, 20.0, 50.0, 120.0))
    assert found[2].track.start_time == datetime(2024, 1, 2, 12, tzinfo=UTC)
    assert found[3].track.start_time is None and found[3].track.camera is None
    assert found[0].similarity > found[2].similarity > found[1].similarity  # by noise: 0.05 < 0.10 < 0.15
    record = sighting_record(found[0])
    assert record["start_time"] == "2024-01-02T10:00:00.400" and record["camera"] == "camA"
    assert record["time_source"] == "path" and record["sequence_id"] == 100 and record["start_s"] == 0.4


def test_the_threshold_drops_weak_tracks(state):
    archive = ArchiveTracks.load(state, MODEL)
    similarities = sorted(s.similarity for s in find_sightings(archive, alice(), threshold=-1.0))
    assert len(similarities) == 7  # every track at threshold -1
    middle = (similarities[-4] + similarities[-3]) / 2
    assert len(find_sightings(archive, alice(), threshold=middle)) == 3


def test_the_limit_keeps_the_most_similar_then_orders_by_time(state):
    archive = ArchiveTracks.load(state, MODEL)
    found = find_sightings(archive, alice(), threshold=0.8, limit=2)
    # the two closest: a1 (10:00 and its untimed copy, equal similarity); 11:00 and 12:00 are weaker
    assert videos(found) == ["/archive/camA/10.avi", "/archive/copies/10.avi"]
    with pytest.raises(OptionError):
        find_sightings(archive, alice(), threshold=0.8, limit=0)


def test_camera_and_time_filters(state):
    archive = ArchiveTracks.load(state, MODEL)
    only_a = find_sightings(archive, alice(), SightingFilter(cameras=frozenset({"camA"})), threshold=0.8)
    assert videos(only_a) == ["/archive/camA/10.avi", "/archive/phone/12.mp4"]
    window = SightingFilter(since=T0 + timedelta(minutes=1), until=datetime(2024, 1, 2, 12, 0, 0, tzinfo=UTC))
    assert videos(find_sightings(archive, alice(), window, threshold=0.8)) == [
        "/archive/camB/11.avi", "/archive/phone/12.mp4"]  # bounds included; untimed never in a time range
    until = SightingFilter(until=T0 + timedelta(seconds=0.4))
    assert videos(find_sightings(archive, alice(), until, threshold=0.8)) == ["/archive/camA/10.avi"]
    nowhere = SightingFilter(cameras=frozenset({"camZ"}))
    assert find_sightings(archive, alice(), nowhere, threshold=0.8) == []
    with pytest.raises(OptionError, match="empty"):
        SightingFilter(since=T0, until=T0 - timedelta(seconds=1))


def test_best_walk_counts_and_other_models_are_refused(state):
    archive = ArchiveTracks.load(state, MODEL)
    walks = SubjectWalks("bob", "Bob", MODEL, np.array([7, 8]), np.stack([near(ALICE, 2.0), BOB]))
    found = find_sightings(archive, walks, threshold=0.8)
    assert [s.sequence_id for s in found] == [8, 8, 8]  # matched by bob's real walk, not the far one
    assert sorted(videos(found)) == ["/archive/camA/10.avi", "/archive/camB/1030.avi", "/archive/copies/10.avi"]
    with pytest.raises(GalleryMismatchError):
        find_sightings(archive, SubjectWalks("x", "", "other", np.array([1]), ALICE[None]), threshold=0.5)
    with pytest.raises(GalleryMismatchError, match="re-score"):
        ArchiveTracks.load(state, "another-model")


def test_an_unlisted_state_is_refused(tmp_path):
    with RescoreState(tmp_path / "empty.state.sqlite") as state, pytest.raises(StateError, match="gaitid rescore"):
        ArchiveTracks.load(state, MODEL)


def test_subject_walks_from_the_gallery(tmp_path):
    with Gallery(tmp_path / "g") as gallery:
        sils = np.zeros((20, 64, 44), np.uint8)
        gallery.enroll("alice", [SequenceInput(sils, ALICE), SequenceInput(sils, near(ALICE, 0.1))], model_id=MODEL,
                       display_name="Alice")
        gallery.enroll("bob", [SequenceInput(sils, BOB)], model_id=MODEL)
        walks = subject_walks(gallery, "alice")
        assert (walks.subject_id, walks.display_name, walks.model_id) == ("alice", "Alice", MODEL)
        assert walks.embeddings.shape == (2, C, P) and np.allclose(walks.embeddings[0], ALICE)
        with pytest.raises(SubjectNotFoundError):
            subject_walks(gallery, "carol")


# -- sources: the camera and time rules ---------------------------------------------------------


def test_camera_map_takes_the_deepest_folder(tmp_path):
    cameras = CameraMap.parse(["site=camS", "site/gate=camG", f"{tmp_path / 'abs'}=camX"], base=tmp_path)
    assert cameras.camera_of(tmp_path / "site/gate/2024/a.avi") == "camG"
    assert cameras.camera_of(tmp_path / "site/hall/a.avi") == "camS"
    assert cameras.camera_of(tmp_path / "abs/a.avi") == "camX"
    assert cameras.camera_of(tmp_path / "sites/a.avi") is None  # a prefix of a name is not a folder
    for bad in ("nofolder", "=cam", "site="):
        with pytest.raises(OptionError):
            CameraMap.parse([bad])


def test_recording_start_prefers_path_then_container_then_mtime():
    container = ContainerFacts(datetime(2022, 12, 16, 2, 22, 23, tzinfo=UTC), 4.0)
    mtime_ns = int(datetime(2024, 5, 1, 8, 0, 10, tzinfo=UTC).timestamp() * 1e9)
    assert recording_start(PathInfo("c", T0), container, mtime_ns) == (T0, "path")
    assert recording_start(PathInfo("c", None), container, mtime_ns) == (container.creation_time, "container")
    # a recorder's mtime is the end of the recording: the start is its duration earlier
    untagged = ContainerFacts(None, 10.0)
    assert recording_start(PathInfo("c", None), untagged, mtime_ns) == (datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC), "mtime")
    assert recording_start(PathInfo("c", None), None, None) == (None, None)


def test_probe_container_reads_the_creation_tag(tmp_path):
    import av

    path = tmp_path / "tagged.mp4"
    with av.open(str(path), "w") as out:
        out.metadata["creation_time"] = "2022-12-16T02:22:23.000000Z"
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(10):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    facts = probe_container(path)
    assert facts.creation_time == datetime(2022, 12, 16, 2, 22, 23, tzinfo=UTC)
    assert facts.duration_s == pytest.approx(1.0, abs=0.2)
    (tmp_path / "junk.mp4").write_bytes(os.urandom(256))
    assert probe_container(tmp_path / "junk.mp4") == ContainerFacts(None, None)
    assert probe_container(tmp_path / "missing.mp4") == ContainerFacts(None, None)


def test_tracks_are_read_in_pages(state):
    everything = [(sha, t.track_id) for sha, t in state.iter_tracks(MODEL)]
    assert everything == [("a1", 0), ("a1", 1), ("a2", 0), ("a3", 0), ("b1", 0)]
    assert [(sha, t.track_id) for sha, t in state.iter_tracks(MODEL, chunk=2)] == everything
    listed = [t for _, t in state.iter_tracks(MODEL, embeddings=False)]
    assert all(t.embedding.size == 0 and len(t.frame_indices) == 30 for t in listed)


# -- the compact index over a larger archive ------------------------------------------------------

# 16 PCA dimensions, 4 bits each: coarse enough to need the margin, fine enough for a stable test
SMALL_SPEC = CompactSpec(reduced_dim=16, subquantizers=16, prefilter=0, shortlist=4, train_size=1024)
PEOPLE = RNG.normal(size=(60, C, P)).astype(np.float32)


def crowd_file(sha: str, people: np.ndarray) -> FileOutcome:
    """A video with a track of each of `people` (indices into PEOPLE), each a noisy walk of theirs."""
    noise = np.random.default_rng(abs(hash(sha)) % 2**32)
    return outcome(sha, [(PEOPLE[p] + 0.25 * noise.normal(size=(C, P))).astype(np.float32) for p in people])


@pytest.fixture
def crowd(tmp_path) -> RescoreState:
    """12 videos x 100 tracks (1,200: enough for the index to learn its compression), each at its own hour."""
    picks = np.random.default_rng(11)
    with RescoreState(tmp_path / "crowd.state.sqlite") as state:
        for n in range(12):
            state.save(crowd_file(f"c{n:02d}", picks.integers(0, len(PEOPLE), 100)))
        state.replace_sources([SourceFacts(f"/crowd/{n:02d}.avi", f"c{n:02d}", f"cam{n % 3}", T0 + timedelta(hours=n),
                                           "path") for n in range(12)])
        yield state


def exhaustive(state: RescoreState, walks: SubjectWalks, threshold: float) -> set[tuple[str, int]]:
    """Every (video, track) at or above the threshold, by the contract's similarity over all tracks."""
    keys, embeddings = zip(*[((sha, t.track_id), t.embedding) for sha, t in state.iter_tracks(MODEL)])
    best = similarities(np.stack(embeddings), walks.embeddings).max(axis=1)
    videos_of = {s.sha256: s.path for s in state.sources()}
    return {(videos_of[sha], track) for (sha, track), score in zip(keys, best) if score >= threshold}


def found_keys(found) -> set[tuple[str, int]]:
    return {(s.track.video, s.track.track_id) for s in found}


def test_the_compact_index_finds_what_exhaustive_search_finds(crowd):
    archive = ArchiveTracks.load(crowd, MODEL, SMALL_SPEC)
    index = archive.search.index
    assert index.trained and index.ntotal == 1200 and index.memory_bytes() < 1200 * C * P * 4
    for person in range(5):
        walks = SubjectWalks(f"p{person}", "", MODEL, np.array([person]), PEOPLE[person][None])
        for threshold in (0.6, 0.8):
            expected = exhaustive(crowd, walks, threshold)
            found = find_sightings(archive, walks, threshold=threshold, limit=MAX_LIMIT)
            assert found_keys(found) == expected  # far more than the shortlist of 4: it grew
            assert [s.track.start_time for s in found] == sorted(s.track.start_time for s in found)
        assert len(expected) > SMALL_SPEC.shortlist


def test_the_index_follows_the_state(crowd):
    ArchiveTracks.load(crowd, MODEL, SMALL_SPEC)
    path = sightings_index_path(crowd, MODEL)
    assert path.is_file()
    walks = SubjectWalks("p0", "", MODEL, np.array([0]), PEOPLE[0][None])
    crowd.save(crowd_file("new", np.array([0, 0, 1])))  # a new video with two walks of person 0: added
    crowd.replace_sources([*crowd.sources(), SourceFacts("/crowd/new.avi", "new", "cam9", T0, "path")])
    archive = ArchiveTracks.load(crowd, MODEL, SMALL_SPEC)
    assert archive.search.index.ntotal == 1203 and CompactIndex.load(path)[0].ntotal == 1203  # saved again
    found = found_keys(find_sightings(archive, walks, threshold=0.6, limit=MAX_LIMIT))
    assert {("/crowd/new.avi", 0), ("/crowd/new.avi", 1)} <= found == exhaustive(crowd, walks, 0.6)
    crowd.save(crowd_file("c00", np.array([2, 3])))  # c00 processed again: its 100 tracks are now two
    archive = ArchiveTracks.load(crowd, MODEL, SMALL_SPEC)
    assert archive.search.index.ntotal == 1203 - 100 + 2  # the 100 gone are removed, the 2 new added
    assert CompactIndex.load(path)[0].ntotal == 1203 - 100 + 2 and archive.search.index.trained  # not rebuilt
    assert found_keys(find_sightings(archive, walks, threshold=0.6, limit=MAX_LIMIT)) == exhaustive(crowd, walks, 0.6)
    for n in range(1, 4):  # three more videos processed again: 300 more removed, each tracked by 1
        crowd.save(crowd_file(f"c{n:02d}", np.array([0])))
    archive = ArchiveTracks.load(crowd, MODEL, SMALL_SPEC)
    assert archive.search.index.ntotal == 1203 - 400 + 2 + 3
    assert sorted(archive.search.index.ids().tolist()) == sorted(t.rowid for _, t in crowd.iter_tracks(MODEL))
    assert found_keys(find_sightings(archive, walks, threshold=0.6, limit=MAX_LIMIT)) == exhaustive(crowd, walks, 0.6)
    # A file of the time removals were kept as dead entries: a reprocessed track's old vector stayed
    # under its reused id. Plain removal cannot see such a duplicate, so the file is rebuilt once.
    stale, header = CompactIndex.load(path)
    stale.add(stale.ids()[:1], np.zeros((1, C * P), np.float32))
    stale.save(path, {**header, "dead": 1})
    assert ArchiveTracks.load(crowd, MODEL, SMALL_SPEC).search.index.ntotal == 1203 - 400 + 2 + 3
    path.write_bytes(b"torn")
    rebuilt = ArchiveTracks.load(crowd, MODEL, SMALL_SPEC)
    assert rebuilt.search.index.ntotal == archive.search.index.ntotal
    assert found_keys(find_sightings(rebuilt, walks, threshold=0.6, limit=MAX_LIMIT)) == exhaustive(crowd, walks, 0.6)


def test_the_service_reloads_a_changed_archive_at_most_every_reload_s(state, monkeypatch):
    from service.rescore import sightings

    clock = [1000.0]
    monkeypatch.setattr(sightings.time, "monotonic", lambda: clock[0])
    archive = sightings.SightingsArchive(state.path, reload_s=30)
    first = archive.tracks(MODEL)
    assert archive.tracks(MODEL) is first  # unchanged: the same
    with RescoreState(state.path) as writer:  # another connection commits, as a running job does
        writer.save(outcome("a4", [near(ALICE, 0.05)]))
        writer.replace_sources([*writer.sources(), SourceFacts("/archive/camC/13.avi", "a4", "camC", T0, "path")])
    clock[0] += 10
    assert archive.tracks(MODEL) is first  # changed, but loaded 10 s ago
    clock[0] += 25
    reloaded = archive.tracks(MODEL)
    assert reloaded is not first and len(reloaded.tracks) == len(first.tracks) + 1
    archive.close()

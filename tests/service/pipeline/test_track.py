"""Tracking detections into people with supervision's ByteTrack (synthetic walkers)."""

from __future__ import annotations

import numpy as np
import pytest

from service.pipeline.config import TrackerConfig
from service.pipeline.track import associate, filter_tracks, track_people
from service.pipeline.types import FrameDetections

H, W = 240, 320


def frame_with(people: list[tuple[float, float, float, float]], score: float = 0.9) -> FrameDetections:
    """Detections for boxes (x0, y0, x1, y1), each mask filling its box exactly."""
    if not people:
        return FrameDetections.empty(H, W)
    boxes = np.asarray(people, np.float32)
    masks = np.zeros((len(people), H, W), bool)
    for i, (x0, y0, x1, y1) in enumerate(people):
        masks[i, int(y0):int(y1), int(x0):int(x1)] = True
    return FrameDetections(boxes, np.full(len(people), score, np.float32), masks)


def walk(t: int, start_x: float, speed: float, y: float = 60, height: float = 120, width: float = 40):
    x = start_x + speed * t
    return (x, y, x + width, y + height)


def test_two_walkers_become_two_tracks_with_their_own_masks():
    frames = [frame_with([walk(t, 10, 4), walk(t, 270, -3, y=80, height=100)]) for t in range(40)]
    tracks = track_people(frames, fps=25)
    assert len(tracks) == 2
    for track in tracks:
        assert len(track.positions) >= 38  # ByteTrack confirms a new track on its second frame
        xs = track.boxes[:, 0]
        speeds = np.diff(xs) / np.diff(track.positions)
        assert np.allclose(speeds, speeds[0])  # one walker per track, no identity swap
        for position, box, mask in zip(track.positions, track.boxes, np.asarray(track.masks)):
            x0, y0, x1, y1 = box.astype(int)
            assert mask[y0:y1, x0:x1].all() and mask.sum() == (x1 - x0) * (y1 - y0)
            assert any(np.array_equal(box, b) for b in frames[position].boxes)
    assert {round(float(np.diff(t.boxes[:, 0]).mean())) for t in tracks} == {4, -3}


def test_crossing_walkers_keep_their_identity():
    frames = [frame_with([walk(t, 20, 5), walk(t, 250, -5, y=70)]) for t in range(50)]
    tracks = track_people(frames, fps=25)
    assert len(tracks) == 2
    for track in tracks:
        steps = np.diff(track.boxes[:, 0]) / np.diff(track.positions)
        assert np.allclose(steps, steps[0])


def test_short_gap_keeps_the_same_track():
    """A person hidden for 5 frames (0.2 s at 25 fps) comes back under the same id."""
    frames = [frame_with([] if 20 <= t < 25 else [walk(t, 10, 4)]) for t in range(45)]
    tracks = track_people(frames, fps=25)
    assert len(tracks) == 1
    positions = tracks[0].positions
    assert not np.isin(np.arange(20, 25), positions).any()
    assert positions[-1] == 44 and len(positions) >= 38


def test_short_and_small_tracks_are_dropped():
    config = TrackerConfig(min_track_frames=15, min_person_height=40)
    frames = []
    for t in range(30):
        people = [walk(t, 10, 3)]  # kept: 30 frames, 120 px tall
        if t < 10:
            people.append(walk(t, 200, 2, y=20, height=100))  # only 10 frames
        people.append(walk(t, 150, -2, y=180, height=30, width=12))  # 30 frames but 30 px tall
        frames.append(frame_with(people))
    everything = associate(frames, fps=25, config=config)
    assert len(everything) == 3
    kept = filter_tracks(everything, config)
    assert len(kept) == 1
    assert np.median(kept[0].boxes[:, 3] - kept[0].boxes[:, 1]) == pytest.approx(120)


def test_sampled_clips_report_source_frame_indices():
    frames = [frame_with([walk(t, 10, 6)]) for t in range(30)]
    source_indices = np.arange(30, dtype=np.int64) * 4 + 100  # every 4th frame from 100
    (track,) = track_people(frames, source_indices, fps=25 / 4)
    np.testing.assert_array_equal(track.frame_indices, source_indices[track.positions])


def test_low_score_detections_only_extend_tracks():
    """ByteTrack's second association: weak boxes continue a track but never start one."""
    frames = [frame_with([walk(t, 10, 4)], score=0.9 if t < 10 else 0.2) for t in range(30)]
    frames += [frame_with([walk(t, 200, -4)], score=0.2) for t in range(30)]
    tracks = track_people(frames, fps=25)
    assert len(tracks) == 1
    assert tracks[0].positions.max() == 29  # carried through the weak frames, then nothing new


def test_nobody():
    assert track_people([FrameDetections.empty(H, W) for _ in range(20)]) == []


def test_lengths_must_match():
    with pytest.raises(ValueError):
        track_people([FrameDetections.empty(H, W)] * 3, np.arange(4))


def test_tracks_are_those_supervision_reports_through_its_detections_api():
    """The tensor entry point plus matching back to rows gives what `update_with_detections` reports:
    crossing walkers, a late entrant, gaps, jittered boxes, low scores and a spurious box."""
    import supervision as sv

    from service.pipeline.track import make_byte_tracker

    rng = np.random.default_rng(7)
    frames = []
    for t in range(60):
        people = [walk(t, 10, 4), walk(t, 270, -3, y=80, height=100)]
        if t >= 20:
            people.append(walk(t - 20, 150, 1, y=40, height=90))
        if t % 17 == 5:
            people = people[1:]  # a missed detection
        if t % 11 == 3:
            people.append((200.0, 10.0, 215.0, 40.0))  # noise
        boxes = np.asarray(people, np.float32) + rng.normal(0, 1.5, (len(people), 4)).astype(np.float32)
        scores = rng.uniform(0.15, 0.95, len(people)).astype(np.float32)
        frames.append(FrameDetections(boxes, scores, np.zeros((len(people), H, W), bool)))
    config = TrackerConfig()
    expected: dict[int, list[tuple[int, int]]] = {}
    tracker = make_byte_tracker(config, 25.0)
    for position, frame in enumerate(frames):
        detections = sv.Detections(xyxy=frame.boxes, confidence=frame.scores, class_id=np.zeros(len(frame.boxes), int),
                                   data={"row": np.arange(len(frame.boxes))})
        tracked = tracker.update_with_detections(detections)
        for row, track_id in zip(tracked.data.get("row", []), tracked.tracker_id if len(tracked) else []):
            expected.setdefault(int(track_id), []).append((position, int(row)))
    tracks = associate(frames, fps=25.0, config=config)
    assert len(expected) >= 3
    assert {t.track_id for t in tracks} == set(expected)
    for track in tracks:
        rows = expected[track.track_id]
        np.testing.assert_array_equal(track.positions, [p for p, _ in rows])
        np.testing.assert_array_equal(track.boxes, np.stack([frames[p].boxes[r] for p, r in rows]))


def grid_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """Boxes on a coarse integer grid, so that equal IoUs and IoUs of exactly 0.5 are common."""
    x0, y0 = rng.integers(0, 6, (2, count))
    w, h = rng.integers(1, 5, (2, count))
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)


def test_direct_matching_gives_the_assignment_rows():
    """The plain-Python matching of small frames picks exactly the pairs of supervision's assignment:
    grid boxes (ties, IoU exactly 0.5), duplicate tracks, and tracks stretched to an IoU a few float32
    steps either side of 0.5 (where the float32 cost, not the IoU, decides)."""
    from service.pipeline.track import _SMALL_PAIRS, _matches_general, _matches_small

    rng = np.random.default_rng(11)
    answered = matched = 0
    for _ in range(4000):
        dets = grid_boxes(rng, int(rng.integers(1, 6)))
        tracks = grid_boxes(rng, int(rng.integers(1, 6))).astype(np.float64)
        kind = rng.integers(3)
        if kind == 1:  # near the 0.5 threshold: a detection's box with twice its height, give or take
            picks = dets[rng.integers(len(dets), size=len(tracks))].astype(np.float64)
            stretch = 1 + rng.choice([-1, 0, 1], len(tracks)) * 2.0 ** -rng.integers(18, 28, len(tracks))
            picks[:, 3] = picks[:, 1] + 2 * (picks[:, 3] - picks[:, 1]) * stretch
            tracks = picks
        elif kind == 2:  # a duplicated track: equal costs in a detection's row
            tracks = np.concatenate([tracks, tracks[:1]])
        if len(dets) * len(tracks) > _SMALL_PAIRS:
            continue
        track_boxes = tracks.tolist()
        small = _matches_small(dets, track_boxes)
        if small is not None:
            answered += 1
            matched += bool(small)
            assert sorted(small) == sorted(_matches_general(dets, track_boxes)), (dets, tracks)
    assert answered > 2500 and matched > 600


def test_direct_matching_leaves_ambiguous_frames_to_the_assignment():
    from service.pipeline.track import _matches_small

    box = [10.0, 10.0, 50.0, 110.0]
    assert _matches_small(np.asarray([box], np.float32), [box, box]) is None  # one detection, two tracks
    assert _matches_small(np.asarray([box, box], np.float32), [box]) is None  # two detections, one track
    assert _matches_small(np.asarray([box], np.float32), [[np.nan, 10.0, 50.0, 110.0]]) is None
    assert _matches_small(np.asarray([box], np.float32), [[10.0, 10.0, 50.0, 210.0]]) == [(0, 0)]  # IoU 0.5


def test_tracks_do_not_depend_on_the_direct_matching(monkeypatch):
    """Crossing walkers, a box covering both of them, duplicates, noise, empty frames: associate gives
    the same tracks (ids, rows, the very masks) with the direct matching as with the assignment alone."""
    import service.pipeline.track as track_module

    rng = np.random.default_rng(5)
    frames = []
    for t in range(70):
        people = [walk(t, 10, 4), walk(t, 270, -4, y=62)]
        if t >= 15:
            people.append(walk(t - 15, 120, 0.5, y=40, height=100))
        if 28 <= t < 40 and t % 3 == 0:  # one box over both crossing walkers
            a, b = people[0], people[1]
            people.append((min(a[0], b[0]), 60, max(a[2], b[2]), 182))
        if t % 7 == 2:
            people.append((200.0, 10.0, 230.0, 60.0))
        if t % 13 == 6:
            people = []
        boxes = np.asarray(people, np.float32).reshape(-1, 4)
        boxes += rng.normal(0, 1.0, boxes.shape).astype(np.float32)
        if t % 9 == 4 and len(boxes):
            boxes = np.concatenate([boxes, boxes[:1]])  # an exact duplicate: tied costs
        scores = rng.uniform(0.05, 0.95, len(boxes)).astype(np.float32)
        frames.append(FrameDetections(boxes, scores, np.zeros((len(boxes), H, W), bool)))
    direct = associate(frames, fps=25.0)
    monkeypatch.setattr(track_module, "_SMALL_PAIRS", 0)
    general = associate(frames, fps=25.0)
    assert len(direct) == len(general) >= 3
    for a, b in zip(direct, general):
        assert a.track_id == b.track_id
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert all(m is n for m, n in zip(a.masks, b.masks))

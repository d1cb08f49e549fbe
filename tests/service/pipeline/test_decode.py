"""Video decoding: containers, rotation, size/length limits, even sampling, typed errors."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from service.errors import status_of
from service.pipeline.config import DecodeLimits
from service.pipeline.decode import decode_video, even_sample, scaled_size
from service.pipeline.errors import ClipTooLongError, InvalidVideoError, PipelineError

ALL_FRAMES = DecodeLimits(max_frames=10_000, max_duration_s=3_600.0, max_side=4096)


@pytest.fixture(scope="module")
def casia_clip(videos_dir) -> Path:
    return videos_dir / "casia-b" / "002-nm-01-090.avi"


@pytest.fixture(scope="module")
def casia_frames(casia_clip) -> np.ndarray:
    return decode_video(casia_clip, ALL_FRAMES).frames


def remux(source: Path, target: Path, max_packets: int | None = None, rotation_ccw: int | None = None) -> Path:
    """Copy the video packets into another container (no re-encoding), optionally with a display matrix."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        in_stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        if rotation_ccw is not None:
            out_stream.set_display_rotation(rotation_ccw)
        count = 0
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
            count += 1
            if max_packets and count >= max_packets:
                break
    return target


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.data
def test_casia_clip_decodes_whole(casia_clip, casia_frames):
    clip = decode_video(casia_clip, ALL_FRAMES)
    assert clip.frames.shape == (127, 240, 320, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_array_equal(clip.frame_indices, np.arange(127))
    assert clip.fps == pytest.approx(25.0)
    assert clip.source_size == (320, 240) and clip.size == (320, 240) and clip.rotation == 0
    # RGB, not BGR: CASIA-B's wall is green, so G is the largest channel on average.
    means = clip.frames.reshape(-1, 3).mean(axis=0)
    assert means[1] > means[0] and means[1] > means[2]


@pytest.mark.data
def test_bytes_and_file_objects_decode_like_paths(casia_clip, casia_frames):
    data = casia_clip.read_bytes()
    np.testing.assert_array_equal(decode_video(data, ALL_FRAMES).frames, casia_frames)
    np.testing.assert_array_equal(decode_video(io.BytesIO(data), ALL_FRAMES).frames, casia_frames)


@pytest.mark.data
@pytest.mark.parametrize("suffix", [".mov", ".mkv", ".mp4"])
def test_other_containers(casia_clip, casia_frames, tmp_path, suffix):
    moved = remux(casia_clip, tmp_path / f"clip{suffix}")
    np.testing.assert_array_equal(decode_video(moved, ALL_FRAMES).frames, casia_frames)


@pytest.mark.data
def test_h264_mp4_and_msmpeg4_avi(videos_dir):
    phone = decode_video(videos_dir / "phone" / "demo2.mp4", DecodeLimits(max_frames=10, max_side=640))
    assert phone.frames.shape == (10, 640, 360, 3)  # portrait, scaled to a 640 long side
    assert phone.source_size == (720, 1280)
    street = decode_video(videos_dir / "street" / "vtest.avi", DecodeLimits(max_frames=5))
    assert street.frames.shape == (5, 576, 768, 3) and street.fps == pytest.approx(10.0)


# --- sampling and limits ---------------------------------------------------------------------


@pytest.mark.data
def test_long_clips_are_sampled_evenly_and_keep_source_indices(casia_clip, casia_frames):
    clip = decode_video(casia_clip, DecodeLimits(max_frames=20))
    assert len(clip.frames) == 20
    assert clip.frame_indices[0] == 0 and clip.frame_indices[-1] == 126
    steps = np.diff(clip.frame_indices)
    assert steps.min() >= 6 and steps.max() <= 7  # 126 / 19 = 6.6
    # Each kept frame is the source frame its index names.
    np.testing.assert_array_equal(clip.frames, casia_frames[clip.frame_indices])


def test_even_sample():
    np.testing.assert_array_equal(even_sample(5, 10), np.arange(5))
    np.testing.assert_array_equal(even_sample(10, 10), np.arange(10))
    picked = even_sample(1000, 7)
    assert picked[0] == 0 and picked[-1] == 999 and len(picked) == 7
    assert np.all(np.abs(np.diff(picked) - 999 / 6) <= 1)  # evenly spaced up to rounding
    assert len(even_sample(301, 300)) == 300  # dense sampling still gives distinct frames
    assert len(np.unique(even_sample(301, 300))) == 300


def test_scaled_size():
    assert scaled_size(320, 240, 1280) == (320, 240)
    assert scaled_size(1920, 1080, 1280) == (1280, 720)
    assert scaled_size(720, 1280, 640) == (360, 640)


@pytest.mark.data
def test_too_long_clip_is_refused_or_truncated(videos_dir):
    street = videos_dir / "street" / "vtest.avi"  # 79.5 s at 10 fps
    with pytest.raises(ClipTooLongError) as info:
        decode_video(street, DecodeLimits(max_duration_s=10))
    assert info.value.details["duration_s"] == pytest.approx(79.5)
    assert "79.5 s" in info.value.message
    clip = decode_video(street, DecodeLimits(max_frames=20, max_duration_s=10, on_too_long="truncate"))
    assert len(clip.frames) == 20
    assert clip.frame_indices[-1] <= 100  # only the first 10 s (100 frames at 10 fps)


# --- rotation ---------------------------------------------------------------------------------


@pytest.mark.data
def test_rotation_metadata_is_honoured_on_demo5(videos_dir, tmp_path):
    """demo5.mp4 is a portrait walk stored landscape. The shared copy carries no display matrix (its
    tkhd matrix is the identity; PyAV 18 reports frame.rotation == 0), so it needs an override;
    remuxed with the matrix a phone writes (-90: display rotated 90 degrees clockwise) it must
    come out upright by itself, identical to the override."""
    demo5 = videos_dir / "phone" / "demo5.mp4"
    limits = DecodeLimits(max_frames=8, max_side=640)
    stored = decode_video(demo5, limits)
    assert stored.rotation == 0 and stored.frames.shape[1:] == (360, 640, 3)

    overridden = decode_video(demo5, limits, rotation=90)
    assert overridden.rotation == 90 and overridden.frames.shape[1:] == (640, 360, 3)
    assert overridden.source_size == (720, 1280)
    np.testing.assert_array_equal(overridden.frames, np.rot90(stored.frames, k=-1, axes=(1, 2)))

    tagged = remux(demo5, tmp_path / "demo5_rotated.mp4", max_packets=60, rotation_ccw=-90)
    upright = decode_video(tagged, limits)
    assert upright.rotation == 90 and upright.source_size == (720, 1280)
    reference = decode_video(tagged, limits, rotation=0)
    np.testing.assert_array_equal(upright.frames, np.rot90(reference.frames, k=-1, axes=(1, 2)))


@pytest.mark.parametrize("ccw, clockwise", [(-90, 90), (90, 270), (180, 180)])
def test_display_matrix_direction(tmp_path, ccw, clockwise):
    """An encoded frame with a bright top-left corner; after decoding it must sit where a player
    shows it: rotating the picture clockwise by 90 moves top-left to top-right."""
    path = tmp_path / "marker.mp4"
    image = np.zeros((64, 96, 3), np.uint8)
    image[:16, :16] = 255
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(ccw)
        for _ in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    clip = decode_video(path)
    assert clip.rotation == clockwise
    frame = clip.frames[0].mean(axis=2)
    h, w = frame.shape
    corners = {"tl": frame[: h // 4, : w // 4], "tr": frame[: h // 4, -w // 4:],
               "bl": frame[-h // 4:, : w // 4], "br": frame[-h // 4:, -w // 4:]}
    brightest = max(corners, key=lambda k: corners[k].mean())
    assert brightest == {90: "tr", 180: "br", 270: "bl"}[clockwise]
    assert (w, h) == ((64, 96) if clockwise in (90, 270) else (96, 64))


# --- errors -----------------------------------------------------------------------------------


def _assert_typed_failure(source) -> InvalidVideoError:
    with pytest.raises(InvalidVideoError) as info:
        decode_video(source)
    assert isinstance(info.value, PipelineError)
    assert info.value.message and "Traceback" not in info.value.message
    assert status_of(info.value) == 415 and info.value.to_dict()["error"] == "invalid_video"
    return info.value


def test_text_file_is_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    _assert_typed_failure(text)


def test_random_bytes_and_empty_upload():
    _assert_typed_failure(np.random.default_rng(0).bytes(50_000))
    error = _assert_typed_failure(b"")
    assert "empty" in error.message


def test_missing_file(tmp_path):
    error = _assert_typed_failure(tmp_path / "nope.mp4")
    assert "does not exist" in error.message
    assert str(tmp_path) not in str(error.to_dict())  # server paths never reach a client


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        samples = (np.sin(np.arange(8000) / 10) * 3000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    assert "no video stream" in _assert_typed_failure(path).message


@pytest.mark.data
def test_corrupt_video_data(casia_clip, videos_dir, tmp_path):
    data = casia_clip.read_bytes()
    _assert_typed_failure(data[:4000])  # the header and nothing else
    header_only_mp4 = (videos_dir / "phone" / "demo1.mp4").read_bytes()[:30_000]
    _assert_typed_failure(header_only_mp4)


@pytest.mark.data
def test_truncated_upload_keeps_the_frames_that_decode(casia_clip):
    data = casia_clip.read_bytes()
    clip = decode_video(data[: len(data) // 2], ALL_FRAMES)
    assert 10 <= len(clip.frames) < 127
    np.testing.assert_array_equal(clip.frame_indices, np.arange(len(clip.frames)))


def test_bad_arguments_are_programming_errors():
    with pytest.raises(TypeError):
        decode_video(12345)
    with pytest.raises(ValueError):
        decode_video(b"x", DecodeLimits(max_frames=0))
    with pytest.raises(ValueError):
        decode_video(b"x", rotation=45)

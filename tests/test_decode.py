"""decord decoding of real video bytes, the frame transform, images, and corrupt data."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import torch
from conftest import ASSETS, VFR_PTS_MS, audio_only_mp4, encode_frames, frame_ids, numbered_frames
from PIL import Image

from longvivit.config import CLIP_MEAN, CLIP_STD, PreprocessConfig
from longvivit.data.decode import (
    DecodeError,
    OtherMediaError,
    SampleError,
    decode_image,
    decode_video,
    parse_sample,
    preprocess_frames,
    read_frames,
)
from longvivit.data.sampling import frame_indices


def pyav_frames(data: bytes) -> np.ndarray:
    """Every frame of a video decoded by PyAV: an independent reference for decord's output."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_read_frames_matches_an_independent_decoder_at_the_sampled_indices(make_video):
    # 40 frames at 8 FPS (5 s), 4 frames at 2 FPS: source frames 0, 4, 8, 12.
    data = make_video(num_frames=40, fps=8.0, height=48, width=64).read_bytes()
    frames, valid = read_frames(data, num_frames=4, fps=2.0)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8 and valid == 4
    ref = pyav_frames(data)
    assert len(ref) == 40
    for got, i in zip(frames, [0, 4, 8, 12], strict=True):
        diff = np.abs(got.astype(int) - ref[i].astype(int))
        assert diff.mean() < 2.0, f"frame {i} differs from the reference (mean abs diff {diff.mean():.2f})"
        # The square moves ~1.3 px per frame: a neighbouring frame is clearly further away.
        neighbour = np.abs(got.astype(int) - ref[i + 1].astype(int)).mean()
        assert neighbour > diff.mean() + 0.5


def test_decode_video_shape_padding_and_transform(make_video):
    data = make_video(num_frames=20, fps=10.0, height=48, width=64).read_bytes()  # 2 s
    cfg = PreprocessConfig(num_frames=6, fps=2.0, image_size=32)
    video, valid = decode_video(data, cfg)
    assert video.shape == (6, 3, 32, 32) and video.dtype == torch.float32
    assert valid == 4  # frames at 0, 0.5, 1.0, 1.5 s; 2.0 s is past the end
    assert torch.equal(video[4], video[3]) and torch.equal(video[5], video[3])
    # Same frames through the public pieces: sampling + independent decode + transform.
    idx, _ = frame_indices(20, 10.0, 6, fps=2.0)
    ref = preprocess_frames(pyav_frames(data)[idx], 32, CLIP_MEAN, CLIP_STD)
    assert (video - ref).abs().mean() < 0.05  # colour-conversion rounding only


def test_uniform_sampling_through_the_decoder(make_video):
    data = make_video(num_frames=24, fps=8.0).read_bytes()
    frames, valid = read_frames(data, num_frames=3, sampling="uniform")
    ref = pyav_frames(data)
    for got, i in zip(frames, [4, 12, 20], strict=True):
        assert np.abs(got.astype(int) - ref[i].astype(int)).mean() < 2.0
    assert valid == 3


def test_preprocess_resizes_short_side_and_centre_crops():
    # 40 x 80 frame: red border columns 0-11 and 68-79, green in between.
    frame = np.zeros((1, 40, 80, 3), np.uint8)
    frame[:, :, :12, 0] = 255
    frame[:, :, 68:, 0] = 255
    frame[:, :, 12:68, 1] = 255
    out = preprocess_frames(frame, 20, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (1, 3, 20, 20)
    # Short side 40 -> 20 (80 -> 40): the centre 20 columns (24-55 of the source) are all green; a crop
    # off centre or a resize of the long side to 20 would bring red in.
    assert torch.allclose(out[0, 1], torch.ones(20, 20), atol=1e-3)
    assert out[0, 0].abs().max() < 1e-3 and out[0, 2].abs().max() < 1e-3
    # Portrait input: the same rule on the other axis.
    out = preprocess_frames(frame.transpose(0, 2, 1, 3), 20, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert torch.allclose(out[0, 1], torch.ones(20, 20), atol=1e-3) and out[0, 0].abs().max() < 1e-3


def test_preprocess_matches_pil_antialiased_resize():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    out = preprocess_frames(frame[None], 30, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))[0]  # (3, 30, 30)
    # PIL: short side 90 -> 30 (120 -> 40), then centre crop columns 5..35.
    ref = np.asarray(Image.fromarray(frame).resize((40, 30), Image.BILINEAR), dtype=np.float32)[:, 5:35] / 255
    got = out.permute(1, 2, 0).numpy()
    assert np.abs(got - ref).mean() < 0.01  # antialiased: a plain bilinear resize of noise is far off
    plain = (
        torch.nn.functional.interpolate(
            torch.from_numpy(frame).permute(2, 0, 1)[None].float(),
            size=(30, 40),
            mode="bilinear",
            antialias=False,
        )[0, :, :, 5:35]
        / 255
    )
    assert np.abs(plain.permute(1, 2, 0).numpy() - ref).mean() > 0.03


def test_normalisation_uses_config_mean_and_std():
    frame = np.full((2, 16, 16, 3), 128, np.uint8)
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    out = preprocess_frames(frame, 8, mean, std)
    expect = [(128 / 255 - m) / s for m, s in zip(mean, std, strict=True)]
    for c in range(3):
        assert torch.allclose(out[:, c], torch.full((2, 8, 8), expect[c]), atol=1e-5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_decode_image(fmt):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    out = decode_image(buf.getvalue(), PreprocessConfig(image_size=16))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert torch.allclose(out, preprocess_frames(decoded[None], 16, CLIP_MEAN, CLIP_STD)[0])


def test_decode_image_converts_grey_and_rgba():
    for mode, shape in (("L", (20, 20)), ("RGBA", (20, 20, 4))):
        buf = io.BytesIO()
        Image.fromarray(np.full(shape, 200, np.uint8), mode=mode).save(buf, format="PNG")
        assert decode_image(buf.getvalue(), PreprocessConfig(image_size=8)).shape == (3, 8, 8)


def test_caption_sources_in_order_json_captions_then_txt_then_json_caption():
    def captions(**members):
        raw = {"__key__": "k", "mp4": b"video bytes", **{k: v.encode() for k, v in members.items()}}
        return parse_sample(raw, "video")[1]

    assert captions(json='{"captions": ["a", "b"]}', txt="c") == ["a", "b"]
    assert captions(json='{"caption": "from json"}', txt="from txt") == ["from txt"]
    # img2dataset / video2dataset shards without a .txt keep the caption in the json
    assert captions(json='{"caption": "from json", "url": "x"}') == ["from json"]
    assert captions(json='{"caption": ["one", " ", "two"]}') == ["one", "two"]
    # an empty .txt (video2dataset writes one when the caption column is empty) falls through to the json's
    assert captions(json='{"caption": "from json"}', txt=" \n") == ["from json"]
    # an empty or blank "captions" list falls through too: the sample was skipped as uncaptioned
    assert captions(json='{"captions": [], "caption": "from json"}', txt="from txt") == ["from txt"]
    assert captions(json='{"captions": [" "]}', txt="from txt") == ["from txt"]
    with pytest.raises(SampleError, match="no caption"):
        captions(json='{"captions": [], "caption": " "}', txt="")


def test_a_broken_sample_of_the_other_modality_is_passed_over_not_counted_as_a_failure():
    # In a mixed shard, a video without caption is the video loader's failure, not also the image loader's.
    with pytest.raises(OtherMediaError):
        parse_sample({"__key__": "k", "mp4": b"video bytes"}, "image")
    with pytest.raises(SampleError, match="no caption"):
        parse_sample({"__key__": "k", "mp4": b"video bytes"}, "video")


def test_webp_members_are_images():
    raw = {"__key__": "k", "webp": b"...", "txt": b"a cat"}
    assert parse_sample(raw, "image")[0] == b"..."


def test_corrupt_videos_raise_decode_error(make_video):
    data = make_video(num_frames=16).read_bytes()
    cfg = PreprocessConfig(num_frames=2, image_size=16)
    for bad in (b"", b"this is a caption, not a video" * 4, data[: len(data) // 2], data[200:]):
        with pytest.raises(DecodeError):
            decode_video(bad, cfg)


def test_corrupt_images_raise_decode_error():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="JPEG")
    for bad in (b"", b"not an image", buf.getvalue()[:100]):
        with pytest.raises(DecodeError):
            decode_image(bad, PreprocessConfig(image_size=16))


@pytest.mark.parametrize(
    ("name", "frames", "fps"), [("bigbuckbunny.mp4", 132, 25.0), ("cityCC0.mpg", 190, 25.0)]
)
def test_real_clips(name, frames, fps):
    path = ASSETS / name
    if not path.exists():
        pytest.skip(f"{name} not in tests/assets")
    data = path.read_bytes()
    video, valid = decode_video(data, PreprocessConfig(num_frames=8, fps=1.0, image_size=32))
    assert video.shape == (8, 3, 32, 32) and torch.isfinite(video).all()
    # 1 FPS over a 5-8 s clip: every whole second is real, the rest padding.
    assert valid == (frames - 1) // int(fps) + 1
    assert video[:valid].std() > 0.1  # real content, not a blank frame
    if name.endswith(".mp4"):
        # decord's frame 25 is PyAV's frame 25. Not asserted for the MPEG-PS clip: there decord's frame 0
        # is PyAV's frame 12 (it starts ~0.5 s later and repeats the last frame at the end).
        raw, _ = read_frames(data, num_frames=2, fps=1.0)
        ref = pyav_frames(data)
        assert np.abs(raw[1].astype(int) - ref[25].astype(int)).mean() < 3.0


def test_real_image_asset():
    path = ASSETS / "cityCC0.png"
    if not path.exists():
        pytest.skip("cityCC0.png not in tests/assets")
    out = decode_image(path.read_bytes(), PreprocessConfig(image_size=32))
    assert out.shape == (3, 32, 32) and out.std() > 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"fps": 0.0}, "fps"),
        ({"image_size": 0}, "image_size"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
        ({"sampling": "random"}, "sampling"),
    ],
)
def test_preprocess_config_rejects_settings_that_would_skip_every_sample(kwargs, message):
    # image_size=0 used to pass here and then fail per sample: every clip skipped, none read.
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- timing
@pytest.mark.parametrize("fmt", ["matroska", "mp4"])
def test_variable_frame_rate_videos_are_sampled_at_their_frame_times(fmt):
    # Sampled by index at the average rate, the mkv gave frames 0 and 10 and ended after 2 s (9 of its 11 s
    # lost), the mp4 frames 0, 2, 4, 7...: the frames at 1 s, 2 s... are 9, 10, 11...
    data = encode_frames(numbered_frames(20), fmt, pts_ms=VFR_PTS_MS)
    frames, valid = read_frames(data, num_frames=16, fps=1.0)
    assert valid == 12 and frame_ids(frames[:valid]) == [0, *range(9, 20)]
    frames, valid = read_frames(data, num_frames=4, sampling="uniform")  # centres of 4 equal time segments
    assert valid == 4 and frame_ids(frames) == [10, 13, 16, 19]


@pytest.mark.parametrize(("fmt", "codec"), [("mpeg", "mpeg2video"), ("mpegts", "mpeg2video"), ("mpegts", "libx264")])
def test_mpeg_streams_give_the_frames_asked_for(fmt, codec):
    # decord read these from the wrong place: frames 0, 1, 2 for 0, 25, 50 of an MPEG-PS, frame i + 32 of an
    # H.264 transport stream. They are read with PyAV.
    data = encode_frames(numbered_frames(150, 64, 64), fmt, codec, rate=25)
    frames, valid = read_frames(data, num_frames=8, fps=1.0)
    assert valid == 6 and frame_ids(frames[:valid]) == [0, 25, 50, 75, 100, 125]


def test_what_decord_cannot_read_is_read_with_pyav(tmp_path):
    # An animated GIF (decord: "Failed to measure duration/frame-count") and a 16-pixel-wide H.264 clip (decord
    # returns (16, 16, 6) arrays: garbage) decode to the right frames.
    frames = numbered_frames(30, 16, 16)
    gif = io.BytesIO()
    Image.fromarray(frames[0]).save(gif, format="GIF", save_all=True, duration=100, loop=0,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    for data in (gif.getvalue(), encode_frames(frames, "mp4")):
        got, valid = read_frames(data, num_frames=4, fps=1.0)
        assert got.shape == (4, 16, 16, 3) and valid == 3 and frame_ids(got[:valid]) == [0, 10, 20]


def test_bad_video_bytes_say_what_they_are():
    # An HTML error page saved as .mp4 was printed in full to stderr by decord, and the reason named nothing.
    page = b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n" * 50
    with pytest.raises(DecodeError, match=r"not a video: the 2750 bytes are text \('<!DOCTYPE html>"):
        read_frames(page, num_frames=2)
    with pytest.raises(DecodeError, match=r"no video stream \(audio only\?\)"):
        read_frames(audio_only_mp4(), num_frames=2)


# ---------------------------------------------------------------------------------------------- images
def _raw_rgb(image: torch.Tensor) -> np.ndarray:
    """decode_image output (3, H, W) normalised -> (H, W, 3) values in [0, 255]."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    return ((image * std + mean) * 255).permute(1, 2, 0).numpy()


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_images_decode_as_they_are_shown():
    cfg = PreprocessConfig(image_size=32)
    # A phone photo: stored landscape (red left, blue right), EXIF orientation 6 = turn 90 degrees clockwise
    # to show it: red on top. It was decoded in sensor orientation.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32, 0], stored[:, 32:, 2] = 255, 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    # shown 32 wide, 64 high; the centre 32x32 crop holds the bottom of the red half and the top of the blue one
    rgb = _raw_rgb(decode_image(buf.getvalue(), cfg))
    assert rgb[:8, :, 0].mean() > 200 and rgb[:8, :, 2].mean() < 50
    assert rgb[-8:, :, 2].mean() > 200 and rgb[-8:, :, 0].mean() < 50
    # 16-bit grey at half scale (32768) was clipped to white.
    grey16 = Image.fromarray(np.full((32, 32), 32768, np.uint16))
    assert grey16.mode.startswith("I")
    assert np.allclose(_raw_rgb(decode_image(_png(grey16), cfg)), 127.5, atol=2)
    # A transparent pixel shows white (img2dataset's matting), not the colour it happens to hold.
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere...
    rgba[16:, :, 3] = 255  # ...opaque in the bottom half only
    got = _raw_rgb(decode_image(_png(Image.fromarray(rgba, "RGBA")), cfg))
    assert np.allclose(got[:12], 255, atol=2) and np.allclose(got[20:], [200, 0, 0], atol=2)


def test_a_still_image_is_not_a_video():
    # FFmpeg reads a PNG as a one-frame video: a thumbnail saved as .mp4 in a scraped shard became a "clip".
    buf = io.BytesIO()
    Image.fromarray(numbered_frames(1)[0]).save(buf, format="PNG")
    with pytest.raises(DecodeError, match=r"a still image \(PNG\), not a video"):
        read_frames(buf.getvalue(), num_frames=4)

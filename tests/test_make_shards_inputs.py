"""make_shards on real-world inputs: sources decord misreads, photos as shown, repeated inputs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import VFR_PTS_MS, audio_only_mp4, encode_frames, frame_ids, moving_square_frames, numbered_frames
from PIL import Image
from test_make_shards import _media, _read_samples

from longvivit.config import CLIP_MEAN, CLIP_STD
from longvivit.data.decode import rgb_image
from longvivit.data.make_shards import main
from longvivit.data.video_io import encode_video


def test_sources_decord_misreads_are_reencoded_or_rejected_with_what_they_are(tmp_path):
    # Stored as they were, a variable-frame-rate mkv was read as a 2 s clip (9 of its 11 s lost) and an animated
    # GIF or a live WebM without a duration were "unreadable"; a PNG listed as a video, an audio-only file and an
    # HTML page saved as .mp4 had decord's raw messages as reasons.
    from longvivit.data import load_clips

    frames = numbered_frames(20, 32, 32)
    (tmp_path / "vfr.mkv").write_bytes(encode_frames(frames, "matroska", pts_ms=VFR_PTS_MS))
    Image.fromarray(frames[0]).save(tmp_path / "anim.gif", save_all=True, duration=500, loop=0,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    Image.fromarray(frames[0]).save(tmp_path / "still.png")
    (tmp_path / "page.mp4").write_text("<!DOCTYPE html><html>404</html>\n")
    (tmp_path / "audio.mp4").write_bytes(audio_only_mp4())
    names = ["vfr.mkv", "anim.gif", "still.png", "page.mp4", "audio.mp4"]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"video": n, "caption": n}) + "\n" for n in names))
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "out")]) == 0
    rejects = {r["source"]: r for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines())}
    assert rejects["still.png"]["detail"].endswith('a still image (PNG), not a video: list it as {"image": ...}')
    assert rejects["page.mp4"]["detail"] == (
        "cannot read it as a video: the file is text ('<!DOCTYPE html><html>404</html>\\n'...)")
    audio = rejects["audio.mp4"]
    assert (audio["reason"], audio["detail"]) == ("zero_frames", "no video stream (audio only?)")
    infos = {json.loads(s["json"])["source"]: json.loads(s["json"]) for s in _read_samples(tmp_path / "out")}
    assert infos["vfr.mkv"]["reencoded_because"] == "variable frame rate"
    assert infos["vfr.mkv"]["duration"] == pytest.approx(11.0, abs=0.5)
    assert infos["anim.gif"]["reencoded_because"] == "decord cannot read it" and infos["anim.gif"]["num_frames"] == 20
    clips = {c["captions"][0]: c for c in load_clips(tmp_path / "out", num_frames=16, fps=1.0, image_size=32)}
    vfr = clips["vfr.mkv"]
    # decoded back from the stored bytes by decord: the frames shown at 0, 1, 2... s
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    raw = (vfr["video"] * std + mean) * 255  # (T, 3, H, W)
    ids = frame_ids(raw.permute(0, 2, 3, 1).numpy()[: vfr["num_valid_frames"]])
    assert ids[:11] == [0, *range(9, 19)] and vfr["num_valid_frames"] >= 11
    assert clips["anim.gif"]["num_valid_frames"] == 10  # 20 frames of 0.5 s


def test_image_sizes_are_as_shown(tmp_path):
    # An EXIF-rotated phone photo was recorded with its stored (sensor) size; resized, it was also stored turned.
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "phone.jpg", "caption": "a photo"}) + "\n")
    for flags, size in (([], (40, 80)), (["--short-side", "20"], (20, 40))):
        out = tmp_path / f"out{len(flags)}"
        assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), *flags]) == 0
        (sample,) = _read_samples(out)
        info = json.loads(sample["json"])
        assert (info["width"], info["height"]) == size
        with Image.open(io.BytesIO(_media(sample)[1])) as im:
            assert rgb_image(im).size == size


def test_repeated_inputs_and_other_shards_in_the_folder_are_said(tmp_path, capsys):
    # The same clip listed twice became two samples silently (double weight in training, ties in retrieval), and
    # shards of an earlier run with another --prefix stayed in the folder, read again by anyone given the folder.
    clip = tmp_path / "a.mp4"
    encode_video(moving_square_frames(8, 32, 32), fps=4.0, out=clip)
    Image.fromarray(moving_square_frames(1, 32, 32)[0]).save(tmp_path / "a.gif")
    lines = [{"video": "a.mp4", "caption": "one"}, {"video": str(clip), "caption": "again"},
             {"video": "a.mp4", "caption": "a part", "start": 0.0, "end": 1.0},
             {"image": "a.gif", "caption": "as an image"}, {"video": "a.gif", "caption": "as a video"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--prefix", "old"]) == 0
    capsys.readouterr()
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--prefix", "new"]) == 0
    err = capsys.readouterr().err
    assert "1 inputs repeat an earlier one (same file and segment; lines 2 = 1): each copy is a sample" in err
    assert "also holds 1 other .tar files (old-000000.tar; an earlier run with another --prefix?)" in err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["repeated_inputs"] == 1 and stats["other_tars_in_out"] == ["old-000000.tar"]
    assert stats["written"] == 5  # kept: a repeat may be meant; a file as an image and as a video is no repeat

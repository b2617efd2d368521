"""``longvivit caption`` on video files and QA sets as a user runs it: videos longer than the sampled window, several
files and folders in one call; a tiny random Llama with open gates, real mp4 files."""

from __future__ import annotations

import json
import logging

import pytest
from captioning_helpers import build_tiny_captioner

from longvivit.captioning import cli
from longvivit.captioning.model import VideoToText
from longvivit.captioning.qa import QAItem, evaluate_qa
from longvivit.config import PreprocessConfig


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioning_cli")
    m = build_tiny_captioner(root)
    # the saved preprocessing: 4 frames at 1 FPS, a 4 s window from the first frame
    return {"model": m, "folder": m.save_pretrained(root / "captioner", PreprocessConfig(num_frames=4, image_size=32))}


def test_videos_longer_than_the_window_are_warned_and_listed(model, make_video, tmp_path, caplog):
    # A 10-minute file (or a 3-minute EgoSchema clip) was captioned from its first 16 s at 1 FPS without a word: the
    # caption read as one about the whole video. Now: a count, the list in --out, and how to cover more.
    short = str(make_video("short.mp4", num_frames=16, fps=8.0))  # 2 s
    long = str(make_video("long.mp4", num_frames=80, fps=8.0))  # 10 s
    out = tmp_path / "captions.json"
    with caplog.at_level(logging.WARNING):
        assert cli.main(["--model", str(model["folder"]), "--video", short, long, "--max-new-tokens", "4",
                         "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["captions"]) == {short, long}
    assert result["cut"] == {long: pytest.approx(10.0)}
    warned = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert warned == ["1 of 2 videos are longer than 4 frames at 1 FPS: only their first 4 s are seen "
                      "(--sampling uniform spreads the frames over the whole video; --num-frames or --fps cover more)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cli.main(["--model", str(model["folder"]), "--video", short, long, "--max-new-tokens", "4",
                         "--sampling", "uniform", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["cut"] == {}
    assert not [r for r in caplog.records if "longer than" in r.getMessage()]


def test_qa_on_videos_longer_than_the_window_lists_them(model, make_video, caplog):
    long = str(make_video("long.mp4", num_frames=80, fps=8.0))
    short = str(make_video("short.mp4", num_frames=16, fps=8.0))
    items = [QAItem(key=str(i), video=v, question="what moves?", options=["a square", "a rabbit"])
             for i, v in enumerate([long, long, short])]
    pre = PreprocessConfig(num_frames=4, fps=1.0, image_size=32)
    with caplog.at_level(logging.WARNING, logger="longvivit.captioning.qa"):
        result = evaluate_qa(model["model"], items, pre)
    assert result["cut"] == {long: pytest.approx(10.0)}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["1 of 2 videos are longer than 4 frames at 1 FPS"]


def test_files_are_captioned_in_batches_once_each_with_the_same_captions(model, make_video, tmp_path, monkeypatch,
                                                                          capsys):
    # Files were captioned one generate() call each (--batch-size applied to shards only: a folder of 1000 videos
    # ran the LM 1000 times), and a file named twice (`--video clips/ clips/a.mp4`) was captioned and printed twice.
    import shutil

    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        shutil.move(make_video(f"{i}.mp4", num_frames=16, fps=8.0, seed=i), folder / f"{i}.mp4")
    batches = []
    real = VideoToText.generate

    def counted(self, video, *args, **kwargs):
        batches.append(video.shape[0])
        return real(self, video, *args, **kwargs)

    monkeypatch.setattr(VideoToText, "generate", counted)
    sample = ["--do-sample", "--temperature", "1.5", "--top-k", "0", "--max-new-tokens", "8"]
    runs = {}
    for size in ("1", "2"):
        out = tmp_path / f"captions{size}.json"
        assert cli.main(["--model", str(model["folder"]), "--video", str(folder), str(folder / "1.mp4"), *sample,
                         "--batch-size", size, "--out", str(out)]) == 0
        runs[size] = (capsys.readouterr().out, json.loads(out.read_text()))
    assert batches == [1, 1, 1, 2, 1]
    assert runs["1"] == runs["2"], "a video's caption does not depend on the batch"
    printed, result = runs["2"]
    assert [line.split("\t")[0] for line in printed.splitlines()] == [str(folder / f"{i}.mp4") for i in range(3)]
    assert result["skipped"] == [[str(folder / "1.mp4"), f"the same file as {folder / '1.mp4'}, captioned once"]]


def test_caption_refuses_an_out_it_cannot_write_before_it_runs(model, make_video, tmp_path, capsys):
    # `--out runs/` (a folder) ended in IsADirectoryError after the LM had loaded and every video was captioned, as
    # eval's --out did before 616a005.
    video = make_video("clip.mp4", num_frames=8, fps=4)
    (tmp_path / "a_file").write_text("x")
    for out, said in ((tmp_path, "is a folder; name the file to write"),
                      (tmp_path / "a_file" / "c.json", "a_file is a file, not a folder")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["--model", str(model["folder"]), "--video", str(video), "--out", str(out)])
        assert exc.value.code == 2 and said in capsys.readouterr().err

"""The evaluation builders under data/ (ActivityNet Captions, VATEX, DiDeMo, EgoSchema, NExT-QA) on small fixtures
hand-written in each dataset's published format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builder_helpers import FIX, read_manifest, resolve, touch

from data import activitynet, didemo, egoschema, nextqa, vatex

# ---------------------------------------------------------------- ActivityNet Captions


def test_activitynet_paragraphs_join_events_in_time_order_with_or_without_the_v_prefix(tmp_path, capsys):
    videos = tmp_path / "anet"
    # the ActivityNet download keeps the v_ prefix, a youtube-dl download does not; v_K6Tm5xHkJ5c is missing
    touch(videos, "v1-3/train_val/v_uqiMw7tQ1Cc.mp4", "bXdq2zI1Ms0.mkv", "FsS_NCZEfaI.webm")
    out = tmp_path / "para.jsonl"
    rc = activitynet.main(["--annotations", str(FIX / "activitynet/val_1.json"), "--videos", str(videos),
                           "--out", str(out)])
    assert rc == 0
    entries = {e["id"]: e for e in read_manifest(out)}
    assert list(entries) == ["v_uqiMw7tQ1Cc", "v_bXdq2zI1Ms0", "v_FsS_NCZEfaI"]
    assert entries["v_bXdq2zI1Ms0"]["video"] == "anet/bXdq2zI1Ms0.mkv"
    assert entries["v_uqiMw7tQ1Cc"]["video"] == "anet/v1-3/train_val/v_uqiMw7tQ1Cc.mp4"
    mow = entries["v_FsS_NCZEfaI"]
    # events out of order in the file, padded with spaces, one ending after the video, one without length
    assert mow["caption"] == mow["summary"] == ("A man is seen speaking to the camera in his yard. A man is cutting "
                                                "the grass with a lawn mower. He finishes mowing and walks back to "
                                                "the house.")
    assert mow["segments"] == [[0.0, 64.51], [64.51, 159.48], [159.48, 226.23]]
    assert mow["steps"][0] == "A man is seen speaking to the camera in his yard."
    assert mow["split"] == "val_1" and mow["duration"] == 226.23 and "start" not in mow
    err = capsys.readouterr().err
    assert "1 events without a length" in err and "v_K6Tm5xHkJ5c" in err


def test_activitynet_two_annotation_passes_give_one_video_two_paragraphs(tmp_path):
    videos = tmp_path / "anet"
    touch(videos, "v_uqiMw7tQ1Cc.mp4", "v_bXdq2zI1Ms0.mp4", "v_FsS_NCZEfaI.mp4", "v_K6Tm5xHkJ5c.mp4")
    out = tmp_path / "para.jsonl"
    activitynet.main(["--annotations", str(FIX / "activitynet/val_1.json"), str(FIX / "activitynet/val_2.json"),
                      "--videos", str(videos), "--out", str(out)])
    entries = {e["id"]: e for e in read_manifest(out)}
    assert len(entries) == 4  # one entry per video: retrieval must not see a video twice
    assert entries["v_bXdq2zI1Ms0"]["caption"] == [
        "Three men are standing on a mat. The man in front begins to do karate on the mat. He gets down on the "
        "ground and flips around.",
        "Three men practice karate moves on a blue mat.",
    ]
    assert isinstance(entries["v_K6Tm5xHkJ5c"]["caption"], str)


def test_activitynet_segments_one_clip_per_event(tmp_path):
    videos = tmp_path / "anet"
    touch(videos, "v_uqiMw7tQ1Cc.mp4", "v_FsS_NCZEfaI.mp4")
    out = tmp_path / "seg.jsonl"
    rc = activitynet.main(["--annotations", str(FIX / "activitynet/val_1.json"), str(FIX / "activitynet/val_2.json"),
                           "--mode", "segments", "--videos", str(videos), "--out", str(out), "--strict"])
    assert rc == 1  # two videos missing
    entries = read_manifest(out)
    got = [(e["id"], e["start"], e["end"], e["split"]) for e in entries]
    assert got == [("v_uqiMw7tQ1Cc_0", 0.28, 55.15, "val_1"), ("v_uqiMw7tQ1Cc_1", 13.79, 54.32, "val_1"),
                   ("v_FsS_NCZEfaI_0", 0.0, 64.51, "val_1"), ("v_FsS_NCZEfaI_1", 64.51, 159.48, "val_1"),
                   ("v_FsS_NCZEfaI_2", 159.48, 226.23, "val_1"), ("v_uqiMw7tQ1Cc_2", 0.0, 54.0, "val_2")]
    assert entries[1]["caption"] == ("The coach helps the guy in red with the proper body placement and lifting "
                                     "technique.")
    assert list(entries[0])[:4] == ["video", "caption", "start", "end"]
    assert all(resolve(out, e).is_file() for e in entries)


def test_activitynet_keep_missing_and_a_file_in_another_format(tmp_path):
    videos = tmp_path / "anet"
    videos.mkdir()
    out = tmp_path / "m.jsonl"
    activitynet.main(["--annotations", str(FIX / "activitynet/val_2.json"), "--videos", str(videos), "--out",
                      str(out), "--keep-missing", "--limit", "1"])
    (entry,) = read_manifest(out)
    assert entry["video"] == "anet/v_uqiMw7tQ1Cc.mp4"
    with pytest.raises(SystemExit):
        activitynet.main(["--annotations", str(FIX / "youcook2/youcookii_annotations_trainval.json"),
                          "--videos", str(videos), "--out", str(out)])


# ---------------------------------------------------------------- VATEX


def test_vatex_trimmed_clips_or_full_videos_cut_by_start_end(tmp_path, capsys):
    videos = tmp_path / "vatex"
    # a trimmed clip named by videoID, a full YouTube video named by its id; k_x9LbD2S6c is missing
    touch(videos, "val/Ptf_2VRj-V0_000122_000132.mp4", "full/-_hbPLsZvvo.webm")
    out = tmp_path / "vatex_val.jsonl"
    rc = vatex.main(["--annotations", str(FIX / "vatex/vatex_validation_v1.0.json"), "--videos", str(videos),
                     "--out", str(out)])
    assert rc == 0
    clip, full = read_manifest(out)
    assert clip["id"] == "Ptf_2VRj-V0_000122_000132" and clip["video"] == "vatex/val/Ptf_2VRj-V0_000122_000132.mp4"
    assert len(clip["caption"]) == 9 and clip["caption"][8] == "A man plays guitar for a crowd of people."
    assert all(c.isascii() for c in clip["caption"])  # English only
    assert "start" not in clip and clip["split"] == "val" and clip["youtube_id"] == "Ptf_2VRj-V0"
    assert full["video"] == "vatex/full/-_hbPLsZvvo.webm"
    assert (full["start"], full["end"]) == (19.0, 29.0)
    assert list(full)[:4] == ["video", "caption", "start", "end"]
    assert "k_x9LbD2S6c_000000_000010" in capsys.readouterr().err


def test_vatex_test_files_english_only_and_private_test_without_captions(tmp_path, capsys):
    videos = tmp_path / "vatex"
    touch(videos, "0lh_UWF9ZP4_000062_000072.mp4", "zRkRWQ3X9Zk_000030_000040.mp4")
    out = tmp_path / "t.jsonl"
    rc = vatex.main(["--annotations", str(FIX / "vatex/vatex_public_test_english_v1.1.json"),
                     str(FIX / "vatex/vatex_private_test_without_annotations.json"), "--videos", str(videos),
                     "--out", str(out), "--strict"])
    assert rc == 0
    (entry,) = read_manifest(out)
    assert entry["split"] == "test" and len(entry["caption"]) == 10
    assert "2 clips without English captions skipped" in capsys.readouterr().err


@pytest.mark.parametrize(("video_id", "parsed"), [("Ptf_2VRj-V0_000122_000132", ("Ptf_2VRj-V0", 122.0, 132.0)),
                                                  ("--33Lscn6sk_000004_000014", ("--33Lscn6sk", 4.0, 14.0)),
                                                  ("a_b_c", None), ("x_000010_000005", None), ("noclip", None)])
def test_vatex_clip_ids(video_id, parsed):
    assert vatex.parse_clip_id(video_id) == parsed


# ---------------------------------------------------------------- DiDeMo


def test_didemo_paragraphs_in_moment_order_whatever_the_video_file_is_called(tmp_path, capsys):
    videos = tmp_path / "didemo"
    # the AWS download script appends .mp4 to the Flickr name; a Flickr download keeps the original .avi
    touch(videos, "54445519@N00_2495737481_9cf5b6e23f.mov.mp4", "flickr/10298573@N06_6530945397_1a153ab3e7.avi")
    out = tmp_path / "para.jsonl"
    rc = didemo.main(["--annotations", str(FIX / "didemo/test_data.json"), "--videos", str(videos), "--out", str(out)])
    assert rc == 0
    girl, dog = read_manifest(out)
    assert girl["id"] == "54445519@N00_2495737481_9cf5b6e23f" and girl["split"] == "test"
    assert girl["video"] == "didemo/54445519@N00_2495737481_9cf5b6e23f.mov.mp4"
    assert girl["caption"] == ("a girl climbs onto the bed. the girl jumps off the bed. the camera pans to the "
                               "window.")
    assert girl["segments"] == [[0.0, 10.0], [15.0, 20.0], [25.0, 30.0]]  # the pair most annotators chose
    assert dog["video"] == "didemo/flickr/10298573@N06_6530945397_1a153ab3e7.avi"
    assert dog["caption"] == "a dog runs across the yard." and dog["segments"] == [[5.0, 15.0]]  # a tie: the first
    err = capsys.readouterr().err
    assert "1 annotations without a video, description or valid times" in err
    assert "24662369@N07_4505539716_acafca9298.mp4" in err


def test_didemo_segments_keep_the_annotators_times(tmp_path):
    videos = tmp_path / "didemo"
    videos.mkdir()
    out = tmp_path / "seg.jsonl"
    didemo.main(["--annotations", str(FIX / "didemo/test_data.json"), "--mode", "segments", "--videos", str(videos),
                 "--out", str(out), "--keep-missing"])
    entries = read_manifest(out)
    assert [(e["id"], e["start"], e["end"]) for e in entries] == [
        ("3170", 15.0, 20.0), ("3171", 0.0, 10.0), ("3172", 25.0, 30.0), ("4410", 5.0, 15.0), ("5120", 0.0, 5.0)]
    assert entries[0]["times"] == [[3, 3], [3, 3], [2, 3], [3, 3]]
    assert entries[3]["video"] == "didemo/10298573@N06_6530945397_1a153ab3e7.avi"


def test_didemo_videos_in_phone_and_camcorder_formats(tmp_path):
    annotations = tmp_path / "val_data.json"
    annotations.write_text(json.dumps([
        {"annotation_id": 1, "description": "a boat passes", "video": "36721326@N00_3253225426_1ea0f3a3cb.3gp",
         "times": [[0, 1]] * 4, "download_link": "", "num_segments": 6},
        {"annotation_id": 2, "description": "kids wave", "video": "51035553780@N01_3860274631_9a419b7b8b.MTS",
         "times": [[2, 2]] * 4, "download_link": "", "num_segments": 6}]), encoding="utf-8")
    videos = tmp_path / "v"
    touch(videos, "36721326@N00_3253225426_1ea0f3a3cb.3gp", "51035553780@N01_3860274631_9a419b7b8b.MTS")
    out = tmp_path / "m.jsonl"
    assert didemo.main(["--annotations", str(annotations), "--videos", str(videos), "--out", str(out), "--strict"]) == 0
    assert [e["split"] for e in read_manifest(out)] == ["val", "val"]


@pytest.mark.parametrize(("times", "span"), [([[3, 3], [3, 3], [2, 3], [3, 3]], (15.0, 20.0)),
                                             ([[1, 2], [0, 2], [0, 2], [1, 2]], (5.0, 15.0)),
                                             ([[2, 1], [4, 4]], (20.0, 25.0)), ([], None), ([["a", 1]], None)])
def test_didemo_moment_of_the_annotators(times, span):
    assert didemo.moment(times) == span


# ---------------------------------------------------------------- EgoSchema (multiple-choice QA)


def test_egoschema_questions_with_the_public_answers_read_back_by_the_qa_reader(tmp_path, capsys):
    from longvivit.captioning.qa import read_qa_jsonl

    videos = tmp_path / "egoschema" / "videos"
    touch(videos, "0074f737-11cb-497d-8d07-77c3a8127391.mp4", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e.mp4",
          "001934bb-81bd-4cd8-a574-0472ef3f6678.mp4")
    out = tmp_path / "egoschema" / "all.jsonl"
    rc = egoschema.main(["--questions", str(FIX / "egoschema/questions.json"), "--answers",
                         str(FIX / "egoschema/subset_answers.json"), "--videos", str(videos), "--out", str(out)])
    assert rc == 0
    lines = read_manifest(out)
    assert [line.get("answer") for line in lines] == [3, 4, None]  # outside the public subset: no answer
    assert lines[0] == {"video": "videos/0074f737-11cb-497d-8d07-77c3a8127391.mp4",
                        "question": "Taking into account all the actions performed by c, what can you deduce "
                                    "about the primary objective and focus within the video content?",
                        "options": ["C is cooking.", "C is doing laundry.", "C is cleaning the kitchen.",
                                    "C is cleaning dishes.", "C is cleaning the bathroom."],
                        "id": "0074f737-11cb-497d-8d07-77c3a8127391", "answer": 3}
    assert "005651d6-f710-4909-b76d-acf7306fb72a: no question; skipped" in capsys.readouterr().err
    items = read_qa_jsonl(out)
    assert [i.answer for i in items] == [3, 4, None] and len(items[1].options) == 5
    assert all(Path(i.video).is_file() for i in items) and items[2].key == "001934bb-81bd-4cd8-a574-0472ef3f6678"


def test_egoschema_subset_keeps_the_answered_questions(tmp_path):
    videos = tmp_path / "v"
    touch(videos, "0074f737-11cb-497d-8d07-77c3a8127391.mp4")
    out = tmp_path / "subset.jsonl"
    rc = egoschema.main(["--questions", str(FIX / "egoschema/questions.json"), "--answers",
                         str(FIX / "egoschema/subset_answers.json"), "--subset", "--videos", str(videos),
                         "--out", str(out), "--keep-missing", "--strict"])
    assert rc == 1
    lines = read_manifest(out)
    assert [line["id"] for line in lines] == ["0074f737-11cb-497d-8d07-77c3a8127391",
                                             "00b9a0de-c59e-49cb-a127-6081e2fb8c8e"]
    assert lines[1]["video"] == "v/00b9a0de-c59e-49cb-a127-6081e2fb8c8e.mp4"
    with pytest.raises(SystemExit):
        egoschema.main(["--questions", str(FIX / "egoschema/questions.json"), "--subset", "--videos", str(videos),
                        "--out", str(out)])


# ---------------------------------------------------------------- NExT-QA (multiple-choice QA)


def test_nextqa_multiple_choice_with_the_video_map(tmp_path, capsys):
    from longvivit.captioning.qa import read_qa_jsonl

    videos = tmp_path / "NExTVideo"
    touch(videos, "1025/4010069381.mp4", "0030/4882821564.mp4", "1101/7508439506.mp4")
    out = tmp_path / "nextqa_val.jsonl"
    rc = nextqa.main(["--annotations", str(FIX / "nextqa/val.csv"), "--map", str(FIX / "nextqa/map_vid_vidorID.json"),
                      "--videos", str(videos), "--out", str(out)])
    assert rc == 0
    lines = read_manifest(out)
    assert [(line["id"], line["answer"], line["type"]) for line in lines] == [
        ("4010069381_6", 2, "CH"), ("4010069381_3", 0, "CW"), ("4882821564_1", 1, "TN"), ("7508439506_4", 4, "DL")]
    assert lines[0]["video"] == "NExTVideo/1025/4010069381.mp4"
    assert lines[2]["options"][1] == "walk to the sofa, then sit"  # a quoted comma stays in its option
    assert lines[0]["video_id"] == "4010069381" and lines[0]["qid"] == "6"
    err = capsys.readouterr().err
    assert "7508439506_5: answer '7' is not an index into 5 options" in err
    assert "6018490041_6: needs 2 or more non-blank options" in err
    assert len(read_qa_jsonl(out)) == 4


def test_nextqa_answers_given_as_text_and_keep_missing_at_the_mapped_path(tmp_path):
    # NExT-GQA's CSVs give the answer as the option's text
    gqa = tmp_path / "train.csv"
    gqa.write_text("video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
                   "4882821564,2697,640,480,why did the boy pick up the present,Unwrap  it,1,CW,share with the girl,"
                   "approach the lady,unwrap it,play with the train,gesture\n", encoding="utf-8")
    videos = tmp_path / "NExTVideo"
    videos.mkdir()
    out = tmp_path / "q.jsonl"
    nextqa.main(["--annotations", str(gqa), "--map", str(FIX / "nextqa/map_vid_vidorID.json"), "--videos",
                 str(videos), "--out", str(out), "--keep-missing"])
    (line,) = read_manifest(out)
    assert line["answer"] == 2 and line["video"] == "NExTVideo/0030/4882821564.mp4"

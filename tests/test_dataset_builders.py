"""Manifest builders under data/ on fixtures that reproduce the official annotation formats.

The video folders hold placeholder files: the builders only check that a video exists, they never decode
(tests/test_dataset_builders_more.py covers the evaluation builders).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from builder_helpers import FIX, ROOT, read_manifest, resolve, touch

from data import howto100m, msrvtt, webvid, youcook2

# ---------------------------------------------------------------- MSR-VTT


def test_msrvtt_1ka_takes_all_20_json_captions_in_sen_id_order(tmp_path, capsys):
    videos = tmp_path / "videos"
    touch(videos, "video9770.mp4", "video7579.mp4", "sub/video7725.webm")  # video8938 missing
    out = tmp_path / "out" / "msrvtt_1ka.jsonl"
    rc = msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_JSFUSION_test.csv"),
                      str(FIX / "msrvtt/MSRVTT_data.json"), "--videos", str(videos), "--out", str(out)])
    assert rc == 0
    entries = read_manifest(out)
    assert [e["id"] for e in entries] == ["video9770", "video7579", "video7725"]  # CSV order, missing skipped
    first = entries[0]
    assert list(first)[:2] == ["video", "caption"]
    assert first["caption"] == [f"a person plugs a cable into a computer take {k}" for k in range(20)]
    assert first["jsfusion_sentence"] == "a person is connecting something to system"
    assert first["split"] == "test"
    assert resolve(out, entries[2]) == (videos / "sub/video7725.webm").resolve()
    for e in entries:
        assert resolve(out, e).is_file()
    err = capsys.readouterr().err
    assert "1 videos missing" in err and "video8938" in err


def test_msrvtt_csv_only_uses_the_single_sentence_and_strict_fails_on_missing(tmp_path):
    videos = tmp_path / "videos"
    touch(videos, "video9770.mp4", "video7579.mp4", "video7725.mp4")
    out = tmp_path / "m.jsonl"
    rc = msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_JSFUSION_test.csv"), "--videos", str(videos),
                      "--out", str(out), "--strict"])
    assert rc == 1
    entries = read_manifest(out)
    assert [e["caption"] for e in entries] == ["a person is connecting something to system",
                                               "a little girl does gymnastics",
                                               "a group of people are dancing in a club"]


def test_msrvtt_keep_missing_writes_the_expected_path(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    out = tmp_path / "m.jsonl"
    msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_JSFUSION_test.csv"), "--videos", str(videos),
                 "--out", str(out), "--keep-missing"])
    entries = read_manifest(out)
    assert len(entries) == 4
    assert resolve(out, entries[3]) == (videos / "video8938.mp4").resolve()


@pytest.mark.parametrize(("split", "expected"), [("train", ["video0"]), ("validate", ["video6513"]),
                                                 ("test", ["video9770", "video7579", "video7725", "video8938"])])
def test_msrvtt_json_only_selects_the_official_split(tmp_path, split, expected):
    videos = tmp_path / "videos"
    touch(videos, *(f"{v}.mp4" for v in ["video0", "video6513", "video9770", "video7579", "video7725", "video8938"]))
    out = tmp_path / "m.jsonl"
    msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_data.json"), "--split", split,
                 "--videos", str(videos), "--out", str(out)])
    entries = read_manifest(out)
    assert [e["id"] for e in entries] == expected
    assert all(len(e["caption"]) == 20 and e["split"] == split for e in entries)


def test_msrvtt_train_csv_selects_videos_once(tmp_path):
    videos = tmp_path / "videos"
    touch(videos, "video0.mp4", "video6513.mp4")
    out = tmp_path / "m.jsonl"
    msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_train.9k.csv"), str(FIX / "msrvtt/MSRVTT_data.json"),
                 "--split", "train", "--videos", str(videos), "--out", str(out)])
    entries = read_manifest(out)
    assert [e["id"] for e in entries] == ["video0", "video6513"]
    assert entries[1]["caption"][0] == "a man talks about a car take 0"


# ---------------------------------------------------------------- YouCook2


def test_youcook2_segments_of_the_validation_split(tmp_path, capsys):
    videos = tmp_path / "raw_videos"
    touch(videos, "validation/212/9GX8f5EwwE4.mkv", "validation/101/xHr8X2Wpmno.mp4",
          "training/113/GLd3aX16zBg.mp4")  # V53XmPeyjIU missing
    out = tmp_path / "yc2.jsonl"
    rc = youcook2.main(["--annotations", str(FIX / "youcook2/youcookii_annotations_trainval.json"),
                        "--videos", str(videos), "--out", str(out), "--split", "val"])
    assert rc == 0
    entries = read_manifest(out)
    assert [e["id"] for e in entries] == ["9GX8f5EwwE4_0", "9GX8f5EwwE4_1", "9GX8f5EwwE4_2",
                                          "xHr8X2Wpmno_0", "xHr8X2Wpmno_1"]
    assert entries[1] == {"video": "raw_videos/validation/212/9GX8f5EwwE4.mkv",
                          "caption": "peel and chop the carrots into pieces", "start": 37.0, "end": 50.0,
                          "id": "9GX8f5EwwE4_1", "video_id": "9GX8f5EwwE4", "split": "validation",
                          "recipe_type": "212", "duration": 241.64}
    assert all(e["split"] == "validation" for e in entries)
    assert "V53XmPeyjIU" in capsys.readouterr().err


def test_youcook2_full_videos_join_steps_in_time_order(tmp_path):
    videos = tmp_path / "flat"
    touch(videos, "9GX8f5EwwE4.mp4", "xHr8X2Wpmno.webm", "V53XmPeyjIU.mp4", "GLd3aX16zBg.mp4")
    out = tmp_path / "yc2_full.jsonl"
    youcook2.main(["--annotations", str(FIX / "youcook2/youcookii_annotations_trainval.json"), "--videos",
                   str(videos), "--out", str(out), "--mode", "full", "--split", "all"])
    entries = {e["id"]: e for e in read_manifest(out)}
    assert set(entries) == {"9GX8f5EwwE4", "xHr8X2Wpmno", "V53XmPeyjIU", "GLd3aX16zBg"}
    e = entries["9GX8f5EwwE4"]
    assert e["summary"] == e["caption"] == ("cut the onion in half and dice. peel and chop the carrots into "
                                            "pieces. add oil onions and carrots to the pot.")
    assert e["segments"] == [[25.0, 37.0], [37.0, 50.0], [54.0, 64.0]]
    assert "start" not in e  # full video
    assert entries["xHr8X2Wpmno"]["caption"] == "whisk the eggs in a bowl. pour the eggs into a hot pan."
    assert entries["xHr8X2Wpmno"]["video"] == "flat/xHr8X2Wpmno.webm"


# ---------------------------------------------------------------- WebVid


def test_webvid_page_dir_and_flat_layouts(tmp_path, capsys):
    videos = tmp_path / "webvid"
    touch(videos, "1053841541_1053841550/1053841541.mp4", "21179416.mp4", "1009457551_1009457600/1009457597.mp4")
    out = tmp_path / "webvid.jsonl"
    rc = webvid.main(["--annotations", str(FIX / "webvid/results_2M_val.csv"), "--videos", str(videos),
                      "--out", str(out), "--split", "val"])
    assert rc == 0
    entries = read_manifest(out)
    assert [e["id"] for e in entries] == ["1053841541", "21179416", "1009457597"]
    assert entries[1]["caption"] == "Aerial shot winter forest"  # first of the duplicated id wins
    assert entries[2]["caption"] == "Businessman, smiling, walks along the street"
    assert [e["duration"] for e in entries] == [17.0, 11.0, 65.0]
    assert entries[0]["video"] == "webvid/1053841541_1053841550/1053841541.mp4"
    assert all(e["split"] == "val" for e in entries)
    assert "31353427" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("PT00H00M11S", 11.0), ("PT01H02M03S", 3723.0), ("PT0.5S", 0.5),
                                               ("12.5", 12.5), ("P1DT1S", 86401.0), ("", None), ("soon", None)])
def test_webvid_iso_durations(text, seconds):
    assert webvid.parse_duration(text) == seconds


# ---------------------------------------------------------------- HowTo100M


def test_howto100m_asr_segments_merged_to_a_minimum_duration(tmp_path, capsys):
    videos = tmp_path / "ht"
    touch(videos, "a/-0AtVtZxX3g.mp4", "1MUXWj2PqGo.webm")
    out = tmp_path / "asr.jsonl"
    rc = howto100m.main(["--captions", str(FIX / "howto100m/caption.json"), "--videos", str(videos),
                         "--out", str(out), "--min-duration", "4"])
    assert rc == 0
    entries = read_manifest(out)
    got = [(e["video_id"], e["start"], e["end"], e["caption"]) for e in entries]
    assert got == [
        ("-0AtVtZxX3g", 0.5, 9.8, "hi everyone today we make a birdhouse out of scrap wood"),
        ("-0AtVtZxX3g", 9.8, 16.0, "first cut the roof now glue it"),  # the 1.5 s tail joins its predecessor
        ("1MUXWj2PqGo", 1.0, 8.0, "take the paint roller roll it evenly"),  # empty ASR line dropped
    ]
    assert all(e["end"] - e["start"] >= 3.0 for e in entries)
    assert "zz_missing1" in capsys.readouterr().err


def test_howto100m_raw_segments_without_merging(tmp_path):
    videos = tmp_path / "ht"
    touch(videos, "-0AtVtZxX3g.mp4")
    out = tmp_path / "asr.jsonl"
    howto100m.main(["--captions", str(FIX / "howto100m/caption.json"), "--videos", str(videos), "--out", str(out)])
    entries = read_manifest(out)
    assert [e["caption"] for e in entries] == ["hi everyone", "today we make", "a birdhouse out of scrap wood",
                                               "first cut", "the roof", "now", "glue it"]
    assert len({e["id"] for e in entries}) == 7


def test_merge_segments_tail_joins_previous_clip():
    segs = [(0.0, 5.0, "a"), (5.0, 6.0, "b")]
    assert howto100m.merge_segments(segs, 4.0) == [(0.0, 6.0, "a b")]
    assert howto100m.merge_segments([(0.0, 1.0, "only")], 4.0) == [(0.0, 1.0, "only")]


@pytest.mark.parametrize("name", ["summaries.jsonl", "summaries.json"])
def test_howto100m_full_videos_with_summaries(tmp_path, name):
    videos = tmp_path / "ht"
    touch(videos, "-0AtVtZxX3g.mp4", "1MUXWj2PqGo.mp4")
    out = tmp_path / "full.jsonl"
    howto100m.main(["--summaries", str(FIX / "howto100m" / name), "--videos", str(videos), "--out", str(out),
                    "--split", "train"])
    entries = read_manifest(out)
    assert [e["id"] for e in entries] == ["-0AtVtZxX3g", "1MUXWj2PqGo"]
    for e in entries:
        assert e["caption"] == e["summary"] and len(e["summary"]) > 10
        assert "start" not in e and e["split"] == "train"
        assert resolve(out, e).is_file()


# ---------------------------------------------------------------- as scripts


def test_builder_runs_as_a_script_from_any_folder(tmp_path):
    videos = tmp_path / "v"
    touch(videos, "21179416.mp4")
    out = tmp_path / "w.jsonl"
    proc = subprocess.run([sys.executable, str(ROOT / "data/webvid.py"), "--annotations",
                           str(FIX / "webvid/results_2M_val.csv"), "--videos", str(videos), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "webvid: wrote 1 entries" in proc.stderr
    assert read_manifest(out)[0]["video"] == "v/21179416.mp4"


def test_real_world_annotation_files_bom_short_rows_other_layouts_nested_summaries(tmp_path, capsys):
    # A CSV saved with a BOM failed ("expected a 'video_id' column, got ['\ufeffvideo_id']"), a short row was an
    # AttributeError traceback, a WebVid .mkv in a sub-folder was "missing", a nested summary record vanished, a
    # missing --videos folder wrote an empty manifest with exit 0, and uneven ASR lists were cut silently.
    videos = tmp_path / "videos"
    touch(videos, "video9770.mp4", "video7579.mp4", "sub/video7725.webm", "any/where/1009457597.mkv")
    csv_text = (FIX / "msrvtt/MSRVTT_JSFUSION_test.csv").read_text(encoding="utf-8")
    bom = tmp_path / "jsf.csv"
    bom.write_text("\ufeff" + csv_text.rstrip("\n") + "\nshort_row_only\n", encoding="utf-8")
    out = tmp_path / "m.jsonl"
    assert msrvtt.main(["--annotations", str(bom), str(FIX / "msrvtt/MSRVTT_data.json"), "--videos", str(videos),
                        "--out", str(out)]) == 0
    assert [e["id"] for e in read_manifest(out)] == ["video9770", "video7579", "video7725"]
    assert "jsf.csv: line 6: no video_id, row skipped" in capsys.readouterr().err
    wv = tmp_path / "wv.csv"
    wv.write_text("\ufeff" + (FIX / "webvid/results_2M_val.csv").read_text(encoding="utf-8"), encoding="utf-8")
    assert webvid.main(["--annotations", str(wv), "--videos", str(videos), "--out", str(out)]) == 0
    assert [e["id"] for e in read_manifest(out)] == ["1009457597"]
    assert resolve(out, read_manifest(out)[0]) == (videos / "any/where/1009457597.mkv").resolve()
    with pytest.raises(SystemExit, match="--videos .*nowhere: no such folder"):
        webvid.main(["--annotations", str(wv), "--videos", str(tmp_path / "nowhere"), "--out", str(out)])

    nested = tmp_path / "s.json"
    nested.write_text(json.dumps({"-0AtVtZxX3g": {"summary": "cut the onion"}, "1MUXWj2PqGo": "plain"}))
    assert howto100m.read_summaries(nested) == {"-0AtVtZxX3g": "cut the onion", "1MUXWj2PqGo": "plain"}
    uneven = {"v1": {"start": [0, 5, 9], "end": [4, 8], "text": ["a", "b", "c"]},
              "v2": {"start": [0], "end": [4], "text": ["fine"]}}
    entries = howto100m.build_asr_entries(uneven, 0)
    assert [e["video_id"] for e in entries] == ["v2"]
    assert "v1: start, end and text lists of different lengths" in capsys.readouterr().err


def test_videos_behind_symlinks_keep_their_names_and_are_found(tmp_path, capsys):
    # Hugging Face snapshots and git-annex store each video as a link to an extension-less blob, and clusters link
    # split folders in from other disks: the linked folder was never walked (every video "missing") and the manifest
    # named the blob ("../blobs/3f2a...", no extension, so make_shards re-encoded every clip) instead of the video.
    blobs = tmp_path / "blobs"
    touch(blobs, "3f2a9c", "77b0e1")
    other_disk = tmp_path / "disk2" / "test_videos"
    touch(other_disk, "video7725.webm")
    videos = tmp_path / "ds" / "videos"
    videos.mkdir(parents=True)
    (videos / "video9770.mp4").symlink_to(blobs / "3f2a9c")
    (videos / "video7579.mp4").symlink_to(blobs / "77b0e1")
    (videos / "linked_split").symlink_to(other_disk, target_is_directory=True)
    (videos / "loop").symlink_to(videos, target_is_directory=True)  # a link cycle must not hang the walk
    (videos / "video8938.mp4").symlink_to(blobs / "not_fetched_yet")  # git-annex before `get`: no video
    out = tmp_path / "ds" / "m.jsonl"
    rc = msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_JSFUSION_test.csv"), "--videos", str(videos),
                      "--out", str(out)])
    assert rc == 0
    assert [e["video"] for e in read_manifest(out)] == ["videos/video9770.mp4", "videos/video7579.mp4",
                                                        "videos/linked_split/video7725.webm"]
    assert "1 videos missing (skipped): video8938" in capsys.readouterr().err


def test_msrvtt_overlapping_annotation_files_do_not_repeat_captions(tmp_path):
    # MSRVTT_data.json is train_val_videodatainfo.json + test_videodatainfo.json: giving it next to one of them
    # (the README invites several JSONs) listed every caption of those videos twice (40 "captions" per video).
    data = json.loads((FIX / "msrvtt/MSRVTT_data.json").read_text(encoding="utf-8"))
    test_ids = {v["video_id"] for v in data["videos"] if v["split"] == "test"}
    test_only = {"info": data["info"], "videos": [v for v in data["videos"] if v["video_id"] in test_ids],
                 "sentences": [s for s in data["sentences"] if s["video_id"] in test_ids]}
    test_json = tmp_path / "test_videodatainfo.json"
    test_json.write_text(json.dumps(test_only), encoding="utf-8")
    videos = tmp_path / "videos"
    touch(videos, "video9770.mp4")
    out = tmp_path / "m.jsonl"
    msrvtt.main(["--annotations", str(FIX / "msrvtt/MSRVTT_JSFUSION_test.csv"), str(FIX / "msrvtt/MSRVTT_data.json"),
                 str(test_json), "--videos", str(videos), "--out", str(out)])
    (entry,) = read_manifest(out)
    assert entry["caption"] == [f"a person plugs a cable into a computer take {k}" for k in range(20)]


def test_howto100m_captions_are_streamed_not_loaded(tmp_path, monkeypatch):
    # raw_caption.json holds 1.2M videos (GBs of text, tens of GB once json.load made Python objects of it): the
    # builder loaded it whole. Streamed, the peak stays a fraction of the file's own size (pieces of 16k
    # characters here, 1M by default, so a small file shows it).
    import tracemalloc

    import data

    monkeypatch.setattr(data, "JSON_CHUNK_CHARS", 1 << 14)
    captions = tmp_path / "raw_caption.json"
    with captions.open("w", encoding="utf-8") as f:
        f.write("{")
        for v in range(300):
            times = [round(i * 2.5, 2) for i in range(101)]
            record = {"start": times[:-1], "end": times[1:], "text": [f"step {i} of video {v}" for i in range(100)]}
            f.write(("," if v else "") + json.dumps(f"vid{v:05d}") + ":" + json.dumps(record))
        f.write("}")
    size = captions.stat().st_size
    videos = tmp_path / "ht"
    touch(videos, "vid00007.mp4")
    out = tmp_path / "asr.jsonl"
    tracemalloc.start()
    try:
        rc = howto100m.main(["--captions", str(captions), "--videos", str(videos), "--out", str(out),
                             "--min-duration", "10"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 0
    entries = read_manifest(out)
    assert len(entries) == 25 and {e["video_id"] for e in entries} == {"vid00007"}
    assert peak < size / 4, (peak, size)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 1 << 20])
def test_iter_json_object_matches_json_load_whatever_the_pieces(tmp_path, chunk):
    from data import iter_json_object

    doc = {"-0AtVtZxX3g": {"start": [0.5, 1e5, -2.25e-3, 12], "end": [1, 2.0, 3, 4],
                           "text": ['a "quoted" } {, ', "é漢字\n", "", None]},
           "empty": {}, "list": [], "t": True, "n": None, "big": 1.5e10, "last": "tail"}
    path = tmp_path / "c.json"
    path.write_text("\ufeff \n" + json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    assert list(iter_json_object(path, chunk_chars=chunk)) == list(doc.items())
    path.write_text("{ }", encoding="utf-8")
    assert list(iter_json_object(path, chunk_chars=chunk)) == []


@pytest.mark.parametrize(("text", "message"), [('[{"a": 1}]', "expected '{'"), ('{"a": [1, 2}', "not a JSON object"),
                                               ('{"a": 1 "b": 2}', "expected ','"), ('{"a": 1', "expected ','"),
                                               ("", "expected '{'")])
def test_iter_json_object_names_the_file_when_it_is_not_one_object(tmp_path, text, message):
    from data import iter_json_object

    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as err:
        list(iter_json_object(path, chunk_chars=4))
    assert "bad.json" in str(err.value)


def test_iter_json_object_stops_at_a_malformed_record_instead_of_reading_the_rest(tmp_path, monkeypatch):
    # An error inside the text read so far was retried with twice the text until the end of the file: a bad record
    # near the start of a multi-GB caption.json loaded all of it before the error, which named no position.
    import data

    record = json.dumps({"start": [0.0], "end": [1.0], "text": ["hello"]})
    path = tmp_path / "caption.json"
    path.write_text('{"ok": ' + record + ', "bad": [1, 2,, 3], ' + ", ".join(f'"v{i}": {record}' for i in range(20000))
                    + "}", encoding="utf-8")
    longest = []
    fill = data._JsonReader._fill
    monkeypatch.setattr(data._JsonReader, "_fill", lambda self, n: (fill(self, n), longest.append(len(self.buf)))[0])
    with pytest.raises(ValueError, match="Expecting value at character 71 of the file"):
        list(data.iter_json_object(path, chunk_chars=64))
    assert max(longest) < 1000, max(longest)


def test_a_build_that_fails_half_way_leaves_no_manifest(tmp_path):
    from data import write_jsonl

    def entries():
        yield {"video": "a.mp4", "caption": "a"}
        raise RuntimeError("broken record")

    out = tmp_path / "m.jsonl"
    with pytest.raises(RuntimeError):
        write_jsonl(entries(), out)
    assert list(tmp_path.iterdir()) == []


def test_youcook2_names_a_file_of_another_dataset(tmp_path, capsys):
    """An ActivityNet file (or any JSON without YouCook2's "database") is a usage error, not a bare KeyError."""
    other = tmp_path / "val_1.json"
    other.write_text(json.dumps({"v_x": {"duration": 3.0, "timestamps": [[0, 1]], "sentences": ["a"]}}))
    with pytest.raises(SystemExit) as exit_info:
        youcook2.main(["--annotations", str(other), "--videos", str(tmp_path), "--out", str(tmp_path / "m.jsonl")])
    assert exit_info.value.code == 2 and "not the YouCook2 format" in capsys.readouterr().err

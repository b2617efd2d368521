"""Manifest parsing: JSONL and CSV, captions, segments, relative paths, and bad lines reported by number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longvivit.data.manifest import (
    BAD_SEGMENT,
    EMPTY_CAPTION,
    MALFORMED,
    ManifestEntry,
    ManifestReadError,
    read_manifest,
    write_manifest,
)

ASSETS = Path(__file__).parent / "assets"


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_entries_fields_and_relative_paths(tmp_path):
    abs_clip = tmp_path / "elsewhere" / "abs.mp4"
    manifest = _write_lines(tmp_path / "lists" / "m.jsonl", [
        json.dumps({"video": "clips/a.mp4", "caption": "a dog runs", "start": 3.0, "end": 19}),
        "",  # blank lines are skipped, not errors
        json.dumps({"video": str(abs_clip), "caption": ["first", " second ", ""], "id": "b",
                    "summary": "long text", "split": "val"}),
        json.dumps({"image": "imgs/c.jpg", "captions": "a red car", "key": 7}),
    ])
    entries, errors = read_manifest(manifest)
    assert errors == []
    a, b, c = entries
    assert (a.media, a.captions, a.start, a.end, a.line) == ("video", ["a dog runs"], 3.0, 19.0, 1)
    assert a.resolved_path == (tmp_path / "lists" / "clips" / "a.mp4").resolve()
    assert a.path == "clips/a.mp4"  # kept as written: it is the sample's "source"
    assert b.captions == ["first", "second"] and b.line == 3
    assert b.resolved_path == abs_clip
    assert b.id == "b" and b.meta == {"summary": "long text", "split": "val"}
    assert (c.media, c.captions, c.id, c.start, c.end) == ("image", ["a red car"], "7", None, None)
    assert c.resolved_path == (tmp_path / "lists" / "imgs" / "c.jpg").resolve()


def test_malformed_lines_are_reported_with_their_number(tmp_path):
    good = json.dumps({"video": "a.mp4", "caption": "ok"})
    manifest = _write_lines(tmp_path / "m.jsonl", [
        good,                                                             # 1
        '{"video": "b.mp4", "caption": "unterminated',                    # 2 invalid JSON
        json.dumps(["not", "an", "object"]),                              # 3
        json.dumps({"caption": "no media"}),                              # 4
        json.dumps({"video": "c.mp4", "image": "c.jpg", "caption": "x"}),  # 5 both kinds
        json.dumps({"video": "d.mp4", "caption": "   "}),                 # 6 empty caption
        json.dumps({"video": "e.mp4"}),                                   # 7 no caption
        json.dumps({"video": "f.mp4", "caption": "x", "start": 5, "end": 5}),  # 8 start >= end
        json.dumps({"video": "g.mp4", "caption": "x", "start": "soon"}),  # 9 not a number
        json.dumps({"video": "h.mp4", "caption": ["x", 3]}),              # 10 non-string caption
        json.dumps({"image": "i.jpg", "caption": "x", "start": 1.0}),     # 11 segment on an image
        json.dumps({"video": "j.mp4", "caption": "x", "start": -1}),      # 12 negative time
        good,                                                             # 13
    ])
    entries, errors = read_manifest(manifest)
    assert [e.line for e in entries] == [1, 13]
    got = {e.line: e.reason for e in errors}
    assert got == {
        2: MALFORMED, 3: MALFORMED, 4: MALFORMED, 5: MALFORMED, 6: EMPTY_CAPTION, 7: EMPTY_CAPTION,
        8: BAD_SEGMENT, 9: MALFORMED, 10: MALFORMED, 11: MALFORMED, 12: BAD_SEGMENT,
    }
    by_line = {e.line: e for e in errors}
    assert by_line[6].source == "d.mp4" and "empty" in by_line[6].detail
    assert "JSON" in by_line[2].detail and by_line[2].source is None


def test_csv_same_columns_json_list_captions_and_line_numbers(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,image,caption,start,end,id,split\n"
        'clips/a.mp4,,"[""first caption"", ""second, with comma""]",1.5,4,a1,train\n'
        "\n"
        ',imgs/b.png,[music] a caption that starts with a bracket,,,,val\n'
        'clips/c.mp4,,"a caption\nspanning two lines",,,,\n'
        "clips/d.mp4,,,,,,\n"
        "clips/e.mp4,,x,9,2,,\n"
        "clips/f.mp4,,x,,,,,surplus\n"
    )
    entries, errors = read_manifest(manifest)
    a, b, c = entries
    assert a.captions == ["first caption", "second, with comma"]
    assert (a.start, a.end, a.id, a.meta, a.line) == (1.5, 4.0, "a1", {"split": "train"}, 2)
    assert (b.media, b.captions, b.line) == ("image", ["[music] a caption that starts with a bracket"], 4)
    assert b.resolved_path == (tmp_path / "imgs" / "b.png").resolve()
    assert (c.captions, c.line) == (["a caption\nspanning two lines"], 5)
    assert [(e.line, e.reason) for e in errors] == [(7, EMPTY_CAPTION), (8, BAD_SEGMENT), (9, MALFORMED)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_write_then_read_round_trips_and_keeps_paths_valid(tmp_path, suffix):
    src = _write_lines(tmp_path / "a" / "m.jsonl", [
        json.dumps({"video": "clips/x.mp4", "caption": ["one", "two"], "start": 1.0, "end": 2.5, "id": "x",
                    "split": "val"}),
        json.dumps({"image": "/abs/y.jpg", "caption": "[not a list] y"}),
    ])
    entries, _ = read_manifest(src)
    built = ManifestEntry(path="z.mp4", captions=["zed"])  # built in code: written as given
    out = write_manifest([*entries, built], tmp_path / "b" / "sub" / f"copy{suffix}")
    again, errors = read_manifest(out)
    assert errors == []
    assert [e.resolved_path.resolve() for e in again[:2]] == [e.resolved_path.resolve() for e in entries]
    assert again[0].path == "../../a/clips/x.mp4"
    assert again[2].path == "z.mp4" and again[2].resolved_path == out.resolve().parent / "z.mp4"
    for old, new in zip(entries, again, strict=False):
        assert (new.media, new.captions, new.start, new.end, new.id, new.meta) == (
            old.media, old.captions, old.start, old.end, old.id, old.meta)
    assert not list(out.parent.glob("*.tmp"))


def test_unreadable_manifest_raises(tmp_path):
    with pytest.raises(ManifestReadError):
        read_manifest(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage\x81")
    with pytest.raises(ManifestReadError):
        read_manifest(tmp_path / "bin.jsonl")
    (tmp_path / "nohead.csv").write_text("caption,start\nx,1\n")
    with pytest.raises(ManifestReadError, match="header"):
        read_manifest(tmp_path / "nohead.csv")


def test_committed_asset_manifest_is_valid():
    entries, errors = read_manifest(ASSETS / "manifest.jsonl")
    assert errors == [] and len(entries) >= 3
    assert all(e.resolved_path.is_file() for e in entries)
    assert {e.media for e in entries} == {"video", "image"}
    assert any(e.start is not None and e.end is not None for e in entries)

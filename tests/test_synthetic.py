"""The synthetic order-sensitive set: determinism, real decodable media, captions that match the pixels, and
order-only pairs that a bag-of-frames model cannot tell apart."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from longvivit.data import synthetic as S

SIZE = 64
# Short "long" videos keep the suite fast; they still hold 6-10 events.
TINY = {"num_images": (3, 2, 2), "num_clips": (4, 4, 6), "num_long": (1, 2, 2), "long_seconds": 40.0,
        "train_pair_fraction": 0.5,
        "size": SIZE}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    S.generate(out, seed=3, workers=1, **TINY)
    return out


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def media_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def decode(path: Path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def colour_mask(frame: np.ndarray, colour: str, tol: int = 45) -> np.ndarray:
    diff = np.abs(frame.astype(np.int16) - np.array(S.COLOURS[colour], dtype=np.int16))
    return diff.max(axis=-1) < tol


def test_same_seed_same_data_other_seed_other_data(synth, tmp_path):
    again = tmp_path / "again"
    S.generate(again, seed=3, workers=2, **TINY)  # the process pool must not change the data
    first, second = media_bytes(synth), media_bytes(again)
    assert first.keys() == second.keys()
    for rel, data in first.items():
        assert data == second[rel], rel  # mp4 and PNG bytes, manifests, stats.json
    replan = S.plan(3, num_images=TINY["num_images"], num_clips=TINY["num_clips"], num_long=TINY["num_long"],
                    long_seconds=TINY["long_seconds"])
    for it in replan["clips"]["train"][:2] + replan["long"]["test"][:1]:
        assert np.array_equal(S.render_frames(it.scene, SIZE), S.render_frames(it.scene, SIZE))
    other = tmp_path / "other"
    S.generate(other, seed=4, workers=1, **TINY)
    for name in S.SETS:
        caps = {e["caption"] for e in read(synth / name / "test.jsonl")}
        assert caps.isdisjoint({e["caption"] for e in read(other / name / "test.jsonl")})


def test_plan_is_stable_when_the_training_set_grows():
    small = S.plan(7, num_images=(2, 2, 2), num_clips=(2, 2, 4), num_long=0)
    large = S.plan(7, num_images=(9, 2, 2), num_clips=(9, 2, 4), num_long=0)
    for name in ("images", "clips"):
        for split in ("val", "test"):
            assert [i.caption for i in small[name][split]] == [i.caption for i in large[name][split]]


def test_media_decode_to_the_declared_frames(synth):
    from PIL import Image

    for name in ("clips", "long"):
        for split in S.SPLITS:
            for e in read(synth / name / f"{split}.jsonl"):
                frames = decode(synth / name / e["video"])
                assert frames.shape == (e["num_frames"], SIZE, SIZE, 3)
                assert e["duration"] == e["num_frames"] / e["fps"]
    clip = read(synth / "clips/train.jsonl")[0]
    assert clip["num_frames"] == 64 and clip["fps"] == 4.0  # 16 s: 16 frames at 1 FPS
    for e in read(synth / "images/val.jsonl"):
        img = np.asarray(Image.open(synth / "images" / e["image"]))
        assert img.shape == (SIZE, SIZE, 3)


def test_image_captions_name_what_is_drawn(synth):
    from PIL import Image

    for split in S.SPLITS:
        for e in read(synth / "images" / f"{split}.jsonl"):
            img = np.asarray(Image.open(synth / "images" / e["image"]))
            areas = {o["colour"]: colour_mask(img, o["colour"], tol=20).sum() for o in e["objects"]}
            for o in e["objects"]:
                assert f"a {o['size']} {o['colour']} {o['shape']}" in e["caption"]
                assert areas[o["colour"]] > (80 if o["size"] == "big" else 15)
            assert f"{e['background']} background" in e["caption"]
            unused = set(S.COLOURS) - set(areas)
            assert all(colour_mask(img, c, tol=20).sum() == 0 for c in unused)


_PHRASE = re.compile(r"^the (\w+) (circle|square|triangle) (?:moves (left|right|up|down)|turns (\w+)|(\w+)s)$")
_VERBS = {"grow": "grow", "shrink": "shrink", "appear": "appear", "disappear": "disappear"}


def parse_phrase(text: str) -> dict:
    """What an event phrase claims, read from the words alone (so a wrong word fails the pixel check)."""
    colour, _shape, direction, new_colour, verb = _PHRASE.match(text).groups()
    if direction:
        return {"kind": "move", "arg": direction, "colour": colour}
    if new_colour:
        return {"kind": "recolour", "arg": new_colour, "colour": colour}
    return {"kind": _VERBS[verb], "arg": "", "colour": colour}


def _effect_holds(before: np.ndarray, after: np.ndarray, ev: dict) -> bool:
    cell = SIZE / S.GRID
    # Look only inside the object's cell(s) (from the metadata): anti-aliased edges of a blue square on gray
    # can pass for purple. Everything else comes from the caption's words.
    ev = {**parse_phrase(ev["text"]), "cell": ev["cell"], "cell_after": ev["cell_after"]}
    window = np.zeros((SIZE, SIZE, 1), dtype=bool)
    for col, row in (ev["cell"], ev["cell_after"]):
        window[round(row * cell) : round((row + 1) * cell), round(col * cell) : round((col + 1) * cell)] = True
    before, after = before * window, after * window
    old = colour_mask(before, ev["colour"])
    new_colour = ev["arg"] if ev["kind"] == "recolour" else ev["colour"]
    new = colour_mask(after, new_colour)
    if ev["kind"] == "move":
        (y0, x0), (y1, x1) = (np.argwhere(m).mean(axis=0) for m in (old, new))
        dx, dy = S.DIRECTIONS[ev["arg"]]
        moved = np.array([x1 - x0, y1 - y0])
        return float(moved @ np.array([dx, dy])) > 0.6 * cell and abs(float(moved @ np.array([dy, dx]))) < 3
    if ev["kind"] == "grow":
        return new.sum() > 1.8 * old.sum() > 0
    if ev["kind"] == "shrink":
        return 0 < 1.8 * new.sum() < old.sum()
    if ev["kind"] == "appear":
        return new.sum() >= 12 and old.sum() <= 0.2 * new.sum()
    if ev["kind"] == "disappear":
        return old.sum() >= 12 and new.sum() <= 0.2 * old.sum()
    # recolour: the old colour (nearly) vanishes where the new one (nearly) was not
    old_after, new_before = colour_mask(after, ev["colour"]).sum(), colour_mask(before, new_colour).sum()
    return min(old.sum(), new.sum()) >= 12 and old_after <= 0.25 * old.sum() and new_before <= 0.25 * new.sum()


def test_captions_match_the_decoded_pixels(synth):
    checked: dict[str, int] = {}
    for name in ("clips", "long"):
        for split in S.SPLITS:
            for e in read(synth / name / f"{split}.jsonl"):
                frames = decode(synth / name / e["video"])
                pos = 0
                for ev in e["events"]:  # mentioned in the order they happen (ValueError otherwise)
                    pos = e["caption"].index(ev["text"], pos) + len(ev["text"])
                for ev in e["events"]:
                    before = frames[max(ev["start_frame"] - 1, 0)]
                    after = frames[min(ev["end_frame"], e["num_frames"] - 1)]
                    assert _effect_holds(before, after, ev), (e["id"], ev)
                    kind = parse_phrase(ev["text"])["kind"]
                    checked[kind] = checked.get(kind, 0) + 1
    assert set(checked) == set(S.KINDS), checked  # every verb was exercised


def test_reverse_pairs_have_identical_frame_multisets_and_different_captions():
    planned = S.plan(11, num_images=0, num_clips=(0, 0, 8), num_long=(0, 0, 8), long_seconds=40.0)
    pairs: dict[str, list[S.Item]] = {}
    for name in ("clips", "long"):
        for it in planned[name]["test"]:
            if it.extra["order_only"]:
                pairs.setdefault(it.extra["pair_id"], []).append(it)
    kinds = [p[0].extra["pair_kind"] for p in pairs.values()]
    assert kinds.count("reverse") >= 2 and kinds.count("swap") >= 2
    for a, b in pairs.values():
        assert a.caption != b.caption
        fa, fb = S.render_frames(a.scene, SIZE), S.render_frames(b.scene, SIZE)
        hashes = [sorted(hashlib.sha1(f.tobytes()).hexdigest() for f in frames) for frames in (fa, fb)]
        if a.extra["pair_kind"] == "reverse":
            assert hashes[0] == hashes[1]  # a bag of frames sees the same clip
            assert np.array_equal(fa[::-1], fb)
        else:
            key = lambda ev: (ev.obj, ev.kind, ev.arg)  # noqa: E731
            assert a.scene.objects == b.scene.objects
            assert sorted(map(key, a.scene.events)) == sorted(map(key, b.scene.events))
            assert list(map(key, a.scene.events)) != list(map(key, b.scene.events))
            assert hashes[0] != hashes[1]


def test_reversal_inverts_and_reorders_the_caption():
    objs = (S.Obj("circle", "red", "small", 0, 1), S.Obj("square", "blue", "big", 2, 0))
    events = (S.Event(0, "move", "right", 2, 10), S.Event(1, "recolour", "green", 12, 20),
              S.Event(0, "grow", "", 22, 30))
    scene = S.Scene(objs, S.Background("gray", "noise", 0, 5), events, num_frames=32, fps=2.0, template=0)
    assert S.caption(scene) == "the red circle moves right, then the blue square turns green, then the red circle grows"
    back = S.reverse_scene(scene)
    assert S.caption(back) == ("the red circle shrinks, then the green square turns blue, "
                               "then the red circle moves left")
    assert S.states(back)[-1] == objs
    assert np.array_equal(S.render_frames(back, 32), S.render_frames(scene, 32)[::-1])


def test_splits_are_disjoint_and_captions_unique(synth):
    for name in S.SETS:
        entries = {split: read(synth / name / f"{split}.jsonl") for split in S.SPLITS}
        captions = [e["caption"] for split in S.SPLITS for e in entries[split]]
        assert len(captions) == len(set(captions))
        media = [e.get("video") or e["image"] for split in S.SPLITS for e in entries[split]]
        assert len(media) == len(set(media))
        assert all(Path(synth / name / m).is_file() for m in media)
        for split in S.SPLITS:
            assert all(e["split"] == split for e in entries[split])
            pair_ids = [e["pair_id"] for e in entries[split] if e.get("order_only")]
            if name == "images":
                assert not pair_ids
            else:
                assert (pair_ids or len(entries[split]) < 2) and all(pair_ids.count(p) == 2 for p in pair_ids)
                # partners are adjacent: the training loader's group_by keeps them in one batch
                ids = [e.get("pair_id") for e in entries[split]]
                assert all(ids[ids.index(p) + 1] == p for p in pair_ids)
    long_entry = read(synth / "long/test.jsonl")[0]
    assert long_entry["summary"] == long_entry["caption"] and 6 <= len(long_entry["events"]) <= 10


def test_cli_writes_manifests_and_stats(tmp_path):
    out = tmp_path / "cli"
    rc = S.main(["--out", str(out), "--seed", "1", "--size", "32", "--num-images", "2", "--num-clips", "0,0,4",
                 "--num-long", "0", "--workers", "1"])
    assert rc == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["clips"] == {"train": 0, "val": 0, "test": 4}
    assert stats["counts"]["images"] == {"train": 2, "val": 2, "test": 2}
    assert stats["order_only_pairs_total"] == 1
    words = {w for e in read(out / "clips/test.jsonl") for w in e["caption"].replace(",", " ").split()}
    assert {"the", "background"} | {w.strip(".;") for w in words} <= set(stats["vocab"])
    frames = decode(out / "clips" / read(out / "clips/test.jsonl")[0]["video"])
    assert frames.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "17"], "size must be even"),
        (["--num-clips", "2,-1,2"], "num_clips must be >= 0"),
        (["--pair-fraction", "1.5"], r"pair_fraction must be in \[0, 1\]"),
        (["--crf", "99"], "crf must be in"),
        (["--clip-seconds", "1"], "do not fit in 4 frames"),
    ],
)
def test_cli_rejects_settings_it_cannot_render_in_one_line(tmp_path, capsys, args, message):
    # --pair-fraction 1.5 used to write twice the clips asked for, --num-clips -1 none, without a word.
    with pytest.raises(SystemExit) as exit_info:
        S.main(["--out", str(tmp_path / "x"), "--size", "32", "--num-images", "0", "--num-clips", "2",
                "--num-long", "0", "--workers", "1", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert not (tmp_path / "x" / "stats.json").exists()


def test_demo_preset_counts():
    planned = S.plan(0, num_images=0, num_clips=S.PRESETS["demo"]["num_clips"], num_long=0)
    assert len(planned["clips"]["test"]) == 128
    assert sum(it.extra["order_only"] for it in planned["clips"]["test"]) == 64  # 32 order-only pairs
    assert not any(it.extra["order_only"] for it in planned["clips"]["train"])
    paired = S.plan(0, num_images=0, num_clips=S.PRESETS["demo"]["num_clips"], num_long=0, train_pair_fraction=0.5)
    train = paired["clips"]["train"]
    assert sum(it.extra["order_only"] for it in train) == 256  # half the training clips: 128 hard-negative pairs
    kinds = [it.extra["pair_kind"] for it in train if it.extra["order_only"]]
    assert kinds.count("reverse") == kinds.count("swap") == 128
    assert [i.caption for i in paired["clips"]["test"]] == [i.caption for i in planned["clips"]["test"]]

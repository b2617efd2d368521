"""``longvivit caption``: caption video files, caption and score shards, or answer multiple-choice questions.

    longvivit caption --model DIR|CKPT --video FILE [FILE ...]     prints one caption per video
    longvivit caption --model DIR --shards PATTERN --out captions.json   captions + CIDEr / BLEU-4 / ROUGE-L
    longvivit caption --model DIR --qa questions.jsonl [--out qa.json]  option likelihoods + accuracy

Videos go through the model's saved preprocessing (``preprocessor_config.json``: frames, fps, sampling,
size, normalisation), with ``--num-frames``/``--fps``/``--sampling`` as overrides; the window starts at the
first frame; videos longer than that window are warned about and listed. Long-video summarisation is the same
command with a summarisation-trained model, more frames and a larger ``--max-new-tokens``.

Captions are greedy by default; ``--beams`` searches, ``--do-sample`` samples (``--temperature``, ``--top-k``,
``--top-p``, as in HF ``generate``), reproducibly per video from ``--seed``; ``--repetition-penalty`` and
``--no-repeat-ngram-size`` work in every mode (:mod:`longvivit.captioning.decoding`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from longvivit.argtypes import device, mask_ratio, non_negative_int, output_file, positive
from longvivit.logs import setup_logging

log = logging.getLogger("longvivit.caption")

#: The flags (argparse dests) of :func:`decoding`.
DECODING_FLAGS = ("max_new_tokens", "beams", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
                  "no_repeat_ngram_size")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longvivit caption", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="captioning model folder or CaptioningModule .ckpt")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--video", nargs="+",
                      help="video file(s) to caption; a folder stands for the videos under it (any depth)")
    what.add_argument("--shards", nargs="+", help="webdataset shards to caption")
    what.add_argument("--qa", help="multiple-choice questions, JSON lines (see longvivit.captioning.qa)")
    p.add_argument("--out", type=output_file, help="write results as JSON here")
    p.add_argument("--num-frames", type=positive(int), help="frames per video (default: as trained)")
    p.add_argument("--fps", type=positive(float), help="sampling rate in fps mode (default: as trained)")
    p.add_argument("--sampling", choices=("fps", "uniform"), help="frame sampling (default: as trained)")
    p.add_argument("--max-new-tokens", type=positive(int), default=32, help="caption length budget (summaries: more)")
    p.add_argument("--beams", type=positive(int), default=1, help="beam search width (1: greedy)")
    p.add_argument("--do-sample", action="store_true",
                   help="sample captions (reproducible: each video draws from its own RNG, from --seed)")
    p.add_argument("--temperature", type=positive(float), default=1.0, help="sampling temperature (--do-sample)")
    p.add_argument("--top-k", type=non_negative_int, default=50,
                   help="sample among the k most likely tokens; 0: off (--do-sample; default 50 as in HF)")
    p.add_argument("--top-p", type=positive(float), default=1.0,
                   help="nucleus sampling: the most likely tokens up to this probability mass; 1: off (--do-sample)")
    p.add_argument("--repetition-penalty", type=positive(float), default=1.0,
                   help="> 1 discourages tokens already in the text; 1: off")
    p.add_argument("--no-repeat-ngram-size", type=non_negative_int, default=0,
                   help="never repeat an n-gram of this size; 0: off")
    p.add_argument("--mask-ratio", type=mask_ratio, help="tubelet mask ratio at inference (default: as trained)")
    p.add_argument("--prompt", help="text before the caption (default: the training prompt)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the inference masks and sampling (default: the validation seed of training)")
    p.add_argument("--batch-size", type=positive(int), default=8,
                   help="videos per generation batch (files and shards; a video's caption does not depend on it)")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="decoding processes (shards)")
    p.add_argument("--lm", help="use this local copy of the LM instead of the one the model names")
    p.add_argument("--qa-template", default=None, help="QA context with a {question} field")
    p.add_argument("--qa-normalize", action="store_true", help="average option log-probs per token")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, ... (default: cuda when available)")
    return p


def _preprocess(model: Any, source: str, args: argparse.Namespace) -> Any:
    from longvivit.captioning.model import read_preprocess
    from longvivit.config import PreprocessConfig

    if Path(source).is_dir():
        saved = read_preprocess(source)
    else:  # a training checkpoint: its data settings (fps, sampling), as the saved folder would hold them
        from longvivit.export import source_preprocess

        saved = source_preprocess(source, model.encoder.cfg)
    pre = saved or PreprocessConfig(num_frames=model.cfg.num_frames, image_size=model.cfg.image_size)
    changes: dict[str, Any] = {"num_frames": model.cfg.num_frames, "image_size": model.cfg.image_size,
                               "start": "first"}
    from longvivit.data.sampling import requested_sampling

    if args.fps is not None:
        changes["fps"] = args.fps
    # --fps on a model trained with uniform sampling asks for fps sampling (kept uniform, the rate did nothing)
    changes["sampling"] = requested_sampling(args.fps, args.sampling, pre.sampling)
    return dataclasses.replace(pre, **changes)


def video_paths(args: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The files ``--video`` names, a folder standing for the video files under it (sorted, any depth).

    Returns:
        ``(paths, skipped)``: the files to caption, and ``(folder, reason)`` for a folder holding no video.
    """
    from longvivit.data.formats import VIDEO_EXTS

    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    for arg in args:
        if not Path(arg).is_dir():
            paths.append(arg)
            continue
        found = sorted(str(p) for p in Path(arg).rglob("*")
                       if p.is_file() and p.suffix.lower().lstrip(".") in VIDEO_EXTS)
        if not found:
            skipped.append((arg, f"a folder with no video file ({', '.join(VIDEO_EXTS)}) under it"))
        paths += found
    return paths, skipped


def decoding(args: argparse.Namespace) -> Any:
    """The :class:`~longvivit.captioning.decoding.DecodingConfig` of the command line (checked before the model
    loads: a sampling option without ``--do-sample`` would otherwise be ignored)."""
    from longvivit.captioning.decoding import DecodingConfig

    return DecodingConfig(
        max_new_tokens=args.max_new_tokens, num_beams=args.beams, do_sample=args.do_sample,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
    )


def _caption_files(model: Any, pre: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Captions of ``args.video``, ``--batch-size`` videos per generation; a file that cannot be read or decoded, or
    that an earlier argument already named, is skipped and listed with the reason."""
    import torch

    from longvivit.captioning.coverage import cut_warning, unseen_length
    from longvivit.captioning.model import file_generator
    from longvivit.data.decode import DecodeError, decode_video_file

    captions: dict[str, str] = {}
    cut: dict[str, float] = {}  # path -> length of the videos seen only in part
    paths, skipped = video_paths(args.video)
    inputs = len(paths) + len(skipped)  # files, and folders without a video
    for folder, reason in skipped:
        log.warning("skipped %s: %s", folder, reason)
    single = paths == list(args.video) and len(paths) == 1
    dev = next(model.resampler.parameters()).device
    first_named: dict[Path, str] = {}
    batch: list[tuple[str, Any, int]] = []  # (path, (T, 3, H, W) frames, real frames)

    def flush() -> None:
        video = torch.stack([v for _, v, _ in batch]).to(dev)  # (B, T, 3, H, W)
        nvf = torch.tensor([n for _, _, n in batch], device=dev)
        gens = [file_generator(args.seed, p) for p, _, _ in batch]  # a file's mask and samples: the same in any batch
        caps = model.generate(video, nvf, mask_ratio=args.mask_ratio, generator=gens, prompt=args.prompt,
                              **decoding(args).to_dict())
        for (path, _, _), caption in zip(batch, caps, strict=True):
            captions[path] = caption
            line = " ".join(caption.split())  # one line per video, whatever the LM emitted
            print(line if single else f"{path}\t{line}", flush=True)
        batch.clear()

    for path in paths:
        same = first_named.get(Path(path).resolve())
        if same is not None:  # `--video clips/ clips/a.mp4`: one caption per file
            skipped.append((path, f"the same file as {same}, captioned once"))
            log.warning("skipped %s: the same file as %s", path, same)
            continue
        first_named[Path(path).resolve()] = path
        try:
            video, nvf = decode_video_file(path, pre)  # (T, 3, H, W)
        except DecodeError as e:
            skipped.append((path, str(e)))
            log.warning("skipped %s", e)
            continue
        seconds = unseen_length(path, pre)
        if seconds is not None:
            cut[path] = seconds
        batch.append((path, video, nvf))
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
    if skipped:
        log.warning("skipped %d of %d inputs (reasons above)", len(skipped), inputs)
    if not captions:
        raise SystemExit(f"no video could be decoded: {skipped}")
    if cut:
        log.warning(cut_warning(len(cut), len(captions), pre))
    return {"captions": captions, "skipped": skipped, "cut": cut}


def _caption_shards(model: Any, pre: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from longvivit.captioning.coverage import cut_warning
    from longvivit.data.clips import load_clips
    from longvivit.evaluation.captioning_metrics import caption_scores
    from longvivit.models.masking import video_generator

    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    cut: dict[str, float] = {}  # key -> length of the clips seen only in part (where the shard records it)
    clips = load_clips(args.shards, preprocess=pre, num_workers=args.num_workers)
    dev = next(model.resampler.parameters()).device
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        video = torch.stack([c["video"] for c in batch]).to(dev)  # (B, T, 3, H, W)
        nvf = torch.tensor([c["num_valid_frames"] for c in batch], device=dev)
        gens = [video_generator(args.seed, c["key"]) for c in batch]  # a clip's mask: the same in any batch
        caps = model.generate(video, nvf, mask_ratio=args.mask_ratio, generator=gens, prompt=args.prompt,
                              **decoding(args).to_dict())
        for clip, cap in zip(batch, caps, strict=True):
            preds[clip["key"]], refs[clip["key"]] = cap, list(clip["captions"])
            if clip["cut"]:
                cut[clip["key"]] = clip["duration"]
        batch.clear()

    for clip in clips:
        batch.append(clip)
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
    if clips.skipped:
        log.warning("skipped %d undecodable samples, e.g. %s", len(clips.skipped), clips.skipped[:3])
    if not preds:
        raise SystemExit("longvivit caption: no video clip decoded from the shards (only images, or every sample "
                         f"skipped: {len(clips.skipped)})")
    if cut:
        log.warning(cut_warning(len(cut), len(preds), pre, "clips"))
    scores = caption_scores(preds, refs)
    print(json.dumps({k: scores[k] for k in ("CIDEr", "BLEU-4", "ROUGE-L", "num_samples")}), flush=True)
    return {"scores": scores, "captions": preds, "references": refs, "skipped": clips.skipped, "cut": cut}


def _answer_questions(model: Any, pre: Any, args: argparse.Namespace, items: list[Any]) -> dict[str, Any]:
    from longvivit.captioning.qa import DEFAULT_TEMPLATE, evaluate_qa

    try:
        result = evaluate_qa(model, items, pre, args.qa_template or DEFAULT_TEMPLATE, args.qa_normalize,
                             args.mask_ratio, args.seed)
    except ValueError as err:  # no question's video decodes
        raise SystemExit(f"longvivit caption: --qa {args.qa}: {err}") from err
    summary = {k: result[k] for k in ("accuracy", "chance", "num_questions", "num_answered")}
    summary["num_skipped"] = len(result["skipped"])
    print(json.dumps(summary), flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``longvivit caption``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.qa:  # options are scored, not generated: a decoding flag would be ignored
        unused = [f"--{d.replace('_', '-')}" for d in DECODING_FLAGS if getattr(args, d) != parser.get_default(d)]
        if unused:
            parser.error(f"{', '.join(unused)} choose how captions are generated; --qa scores the given options")
    try:
        decoding(args)
    except ValueError as err:
        parser.error(str(err))
    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")
    import torch

    from longvivit.captioning.model import load_captioner

    if args.shards:
        from longvivit.data.shard_specs import expand_shards

        try:
            expand_shards(args.shards)
        except (FileNotFoundError, ValueError) as err:
            hint = " (for video files: --video)" if isinstance(err, ValueError) else ""
            raise SystemExit(f"longvivit caption: {err}{hint}") from err
    questions: list[Any] = []
    if args.qa:  # read (and check) the questions before the minutes-long model load
        from longvivit.captioning.qa import read_qa_jsonl

        try:
            questions = read_qa_jsonl(args.qa)
        except (OSError, ValueError) as err:
            raise SystemExit(f"longvivit caption: {err}") from err
        if args.qa_template is not None:
            try:
                filled = args.qa_template.format(question="\0")
            except (KeyError, IndexError, ValueError) as err:
                raise SystemExit(f"longvivit caption: --qa-template {args.qa_template!r}: its only field is "
                                 f"{{question}} ({type(err).__name__}: {err})") from err
            if "\0" not in filled:
                raise SystemExit(f"longvivit caption: --qa-template {args.qa_template!r} has no {{question}} field: "
                                 "every option would be scored without its question")
    from longvivit.data.sampling import check_sampling_args

    try:  # before the LM loads
        check_sampling_args(args.fps, args.sampling)
    except ValueError as err:
        raise SystemExit(f"longvivit caption: {err}") from err
    overrides: dict[str, Any] = {}
    if args.num_frames is not None:
        overrides["num_frames"] = args.num_frames
    if args.lm is not None:
        overrides.update(lm=args.lm, lm_gguf_file=None)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_captioner(args.model, **overrides).to(device)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"longvivit caption: {err}") from err
    pre = _preprocess(model, args.model, args)
    if args.seed is None:
        args.seed = model.cfg.eval_seed  # the masks (and samples) validation drew
    if args.video:
        result: Any = _caption_files(model, pre, args)
    elif args.shards:
        result = _caption_shards(model, pre, args)
    else:
        result = _answer_questions(model, pre, args, questions)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", args.out)
    return 0

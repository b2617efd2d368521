"""``longvivit export``: a training checkpoint becomes a self-describing folder in the hub layout.

Folder (``docs/export.md``)::

    config.json               VideoEncoderConfig (what VideoEncoder.from_pretrained reads)
    model.safetensors         video encoder, head norm and projection included
    preprocessor_config.json  frame sampling and normalisation, tubelet and token grid
    video_text_config.json    logit scale, architecture, library, storage dtype
    text/                     text tower: HF model + tokenizer + projection (safetensors)
    README.md                 model card with the checkpoint's own stages and numbers

A captioning checkpoint (``task: captioning``) becomes the captioner folder instead
(:mod:`longvivit.captioning.export`).

Only safetensors and JSON: export and upload refuse a folder with a pickle file in it. Weights and configs
are written by the models' own ``save_pretrained``, so the one loader (with its shape adaptation) reads them
back; the card is a ``huggingface_hub.ModelCard``, the upload ``HfApi.upload_folder`` of the checked folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import HfApi

from longvivit.argtypes import blocking_file
from longvivit.config import PreprocessConfig, VideoEncoderConfig
from longvivit.logs import setup_logging
from longvivit.model_card import DTYPES, LIBRARY_NAME, build_model_card, dtype_name, library_version, read_stages

if TYPE_CHECKING:
    from longvivit.models.model import VideoTextModel

log = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# Formats that unpickle on load; none of them may end up in an export.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
_PROBE_CAPTION = "a person walks into the room and picks up a cup"


# --------------------------------------------------------------------------- preprocessor config
def preprocessor_dict(pre: PreprocessConfig, video: VideoEncoderConfig) -> dict[str, Any]:
    """``preprocessor_config.json``: the :class:`PreprocessConfig` fields plus tubelet and token grid (the grid
    :meth:`~longvivit.models.video_encoder.VideoEncoder.extract_features` returns, at ``num_frames``)."""
    step = video.frames_per_step
    return {
        "processor_class": "longvivit.PreprocessConfig",
        **asdict(pre), "mean": list(pre.mean), "std": list(pre.std),
        "resize": "short side to image_size (bilinear, antialiased), then centre crop",
        "rescale_factor": 1 / 255,
        "tubelet_size": list(video.tubelet_size),
        "patch_size": list(video.patch_size),
        "grid_size": [video.grid_steps, *video.grid_size],
        # uniform sampling spreads the frames over each clip: no fixed step length
        "seconds_per_tubelet_step": step / pre.fps if pre.sampling == "fps" else None,
    }


def load_preprocess_config(directory: str | Path) -> PreprocessConfig | None:
    """The :class:`PreprocessConfig` of an export folder; ``None`` without ``preprocessor_config.json``."""
    path = Path(directory) / PREPROCESSOR_CONFIG_NAME
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return PreprocessConfig(**{k: d[k] for k in PreprocessConfig.__dataclass_fields__ if k in d})


def preprocess_for(video: VideoEncoderConfig, data: dict[str, Any] | None = None) -> PreprocessConfig:
    """Inference preprocessing: the training data settings on the encoder's frame count and image size.

    Args:
        video: Encoder config; its position tables fix frames and size.
        data: DataModule hyper-parameters of a ``longvivit fit`` checkpoint (fps, sampling, start); without
            them 1 FPS from the first frame. A random training start becomes ``"first"``, as in evaluation.
    """
    data = data or {}
    start = data.get("start", "first")
    return PreprocessConfig(num_frames=video.num_frames, fps=float(data.get("fps", 1.0)),
                            sampling=data.get("sampling", "fps"), image_size=video.image_size,
                            start="first" if start == "random" else start)


def recorded_preprocess(source: str | Path, video: VideoEncoderConfig) -> PreprocessConfig | None:
    """How the frames of a model's training data were sampled, where the source records it, else ``None``.

    Args:
        source: An export folder (its ``preprocessor_config.json``) or a ``longvivit fit`` checkpoint (its data
            hyper-parameters, read memory-mapped); a bare saved folder records neither.
        video: The encoder's config (frames and image size).
    """
    source = Path(source)
    if source.is_dir():
        return load_preprocess_config(source)
    checkpoint = torch.load(str(source), map_location="cpu", weights_only=True, mmap=True)
    data = checkpoint.get("datamodule_hyper_parameters")
    return preprocess_for(video, dict(data)) if data else None


def source_preprocess(source: str | Path, video: VideoEncoderConfig) -> PreprocessConfig:
    """How the frames of a model's training data were sampled, for inference on the same footing (1 FPS from the
    first frame where the source does not record it): :func:`recorded_preprocess`."""
    return recorded_preprocess(source, video) or preprocess_for(video)


# --------------------------------------------------------------------------- the folder
def text_tower_untrained(messages: Sequence[str]) -> bool:
    """Whether :func:`~longvivit.models.checkpoint.load_model`'s messages say the source held no text tower (a bare
    video encoder folder): its text tower and projection are then a fresh initialisation, useless for retrieval."""
    return any(m.startswith("text tower kept at its initialisation") for m in messages)


def find_pickles(folder: str | Path) -> list[Path]:
    """Files under ``folder`` in a format that unpickles on load (``.bin``, ``.pt``, ``.ckpt``...)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


@torch.no_grad()
def _probe(model: VideoTextModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of a fixed random clip (one tubelet step: cheap at any model size) and a fixed caption."""
    c = model.video_encoder.cfg
    video = torch.randn(1, c.tubelet_size[0], c.in_chans, c.image_size, c.image_size,
                        generator=torch.Generator().manual_seed(0))
    text = model.encode_text(**model.text_encoder.tokenize([_PROBE_CAPTION]))
    return model.encode_video(video, mask_ratio=0.0), text


Pair = tuple[torch.Tensor, torch.Tensor]


def _verify(ref: Pair, got: Pair, dtype: str) -> None:
    for what, a, b in (("video", ref[0], got[0]), ("text", ref[1], got[1])):
        if dtype == "fp32" and not torch.equal(a, b):
            raise RuntimeError(f"the reloaded export gives other {what} embeddings (max diff "
                               f"{(a - b).abs().max().item():.3g}): not a faithful copy")
        cos = torch.nn.functional.cosine_similarity(a, b).min().item()
        if not cos > 0.99:  # also catches NaN (fp16 overflow)
            raise RuntimeError(f"the {dtype} export changes the {what} embeddings too much (cos {cos:.4f})")


def _named_json(paths: Sequence[str | Path], name_key: str = "") -> list[tuple[str, dict[str, Any]]]:
    """``(name, content)`` of JSON files: the ``name_key`` field, else the file stem (its folder for a
    generic stem such as ``metrics.json``)."""
    out = []
    for p in map(Path, paths):
        d = json.loads(p.read_text())
        stem = p.parent.name if p.stem in ("metrics", "stats") else p.stem
        out.append((str(d.get(name_key) or stem or p.name), d))
    return out


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    dtype: str = "fp32",
    metrics: Sequence[str | Path] = (),
    data_stats: Sequence[str | Path] = (),
    repo_id: str | None = None,
    license: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write the export folder of a checkpoint (layout in the module docstring).

    It is built beside ``out`` and moved into place only once complete, pickle-free and (with ``verify``)
    reloaded, so a failed export never leaves a half-written model behind.

    Args:
        source: Lightning ``.ckpt`` of ``longvivit fit``, or a folder from ``save_pretrained`` / an export.
        out: Destination; must not exist or be empty unless ``overwrite``.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` storage of all weights; loading casts back to float32.
        metrics: ``longvivit eval --out`` JSON files for the card; the checkpoint's validation metrics are
            reported too.
        data_stats: Data statistics JSON files (e.g. the shard builder's ``stats.json``) for the card.
        repo_id: Hub repository the folder is for (named in the card's loading snippet).
        license: License id for the card metadata.
        overwrite: Replace a previous export in ``out`` (it must hold ``config.json``).
        verify: Reload the folder and compare embeddings with the source: identical in fp32, cosine above
            0.99 in half precision.

    Returns:
        The folder.

    Raises:
        FileExistsError: ``out`` is in use and ``overwrite`` is off, or it does not look like an export.
        RuntimeError: A pickle file ended up in the folder, or the reloaded model differs.
        ValueError: ``source`` is not a video-text model (e.g. a bare video encoder folder, without a text tower).
    """
    from longvivit.models.checkpoint import load_model
    from longvivit.models.model import CONFIG_NAME as MODEL_CONFIG_NAME
    from longvivit.models.model import VideoTextModel

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    source, out = Path(source), Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out names the folder to write")
    blocker = blocking_file(out)
    if blocker is not None:  # found before the model loads, not as a traceback when the folder is written
        raise FileExistsError(f"cannot create {out}: {blocker} is a file, not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace a previous export")
        if not _is_export(out):
            # --overwrite deletes the folder: only ever one this library wrote (a Hugging Face model folder or a
            # repository root has a config.json too)
            raise FileExistsError(f"{out} is not a longvivit export (no config.json with library_name "
                                  f"{LIBRARY_NAME!r}); not replacing it")

    model, msgs = load_model(source)
    if text_tower_untrained(msgs):
        # the export would carry a random text tower in text/, which every later load takes for a trained one
        raise ValueError(f"{source} holds a video encoder without its text tower: an export is a video-text model; "
                         "export the training checkpoint (.ckpt), or use the folder as it is (VideoEncoder."
                         "from_pretrained and the captioner's --model.encoder read it)")
    stages = read_stages(source) if source.is_file() else []
    # read_stages has the checkpoint's data settings already (source_preprocess would read the file again)
    pre = (load_preprocess_config(source) if source.is_dir() else None) or preprocess_for(
        model.video_encoder.cfg, stages[-1].data if stages else None)
    found = _named_json(metrics)
    if stages and stages[-1].meta.get("metrics"):
        found.append((f"validation in the checkpoint at step {stages[-1].step}", stages[-1].meta["metrics"]))
    card = build_model_card(model, pre, stages, found, _named_json(data_stats, "manifest"),
                            source=str(source), dtype=dtype, repo_id=repo_id, license=license)
    reference = _probe(model) if verify else None

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(DTYPES[dtype]).save_pretrained(tmp)
    # The hub reads architecture and library from config.json; VideoEncoderConfig.from_dict skips these keys.
    enc_cfg = json.loads((tmp / "config.json").read_text())
    enc_cfg.update({"architectures": ["VideoEncoder"], "model_type": "longvivit-video-encoder",
                    "library_name": LIBRARY_NAME, "library_version": library_version()})
    (tmp / "config.json").write_text(json.dumps(enc_cfg, indent=2) + "\n")
    meta = json.loads((tmp / MODEL_CONFIG_NAME).read_text())
    meta.update({"architectures": ["VideoTextModel"], "video_architecture": "VideoEncoder",
                 "library_name": LIBRARY_NAME, "library_version": library_version(),
                 "dtype": dtype_name(dtype)})
    (tmp / MODEL_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    pre_json = preprocessor_dict(pre, model.video_encoder.cfg)
    (tmp / PREPROCESSOR_CONFIG_NAME).write_text(json.dumps(pre_json, indent=2) + "\n")
    card.save(tmp / "README.md")

    pickles = find_pickles(tmp)
    if pickles:
        raise RuntimeError(f"the export would contain pickle files: {[str(p) for p in pickles]}")
    if reference is not None:
        _verify(reference, _probe(VideoTextModel.from_pretrained(tmp).eval()), dtype)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("exported %s -> %s (%s)", source, out, dtype)
    return out


def _is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export of this library (its config.json says so)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("library_name") == LIBRARY_NAME
    except (OSError, ValueError, AttributeError):
        return False


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload LongViViT export",
    api: HfApi | None = None,
) -> str:
    """Upload an export folder as it is to a model repository, created if missing.

    Args:
        folder: Export folder; checked again for pickle files first.
        repo_id: ``"user/name"``.
        private: Create the repository private (an existing one keeps its visibility).
        commit_message: Commit message on the hub.
        api: Client; default ``HfApi()`` with the token of ``hf auth login`` or ``HF_TOKEN``.

    Returns:
        URL of the commit.
    """
    pickles = find_pickles(folder)
    if pickles:
        raise RuntimeError(f"refusing to upload pickle files: {[str(p) for p in pickles]}")
    api = api if api is not None else HfApi()
    repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo.repo_id, folder_path=Path(folder), repo_type="model",
                             commit_message=commit_message)
    return str(info.commit_url)


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longvivit export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="fit checkpoint (.ckpt) or saved folder")
    p.add_argument("--out", required=True, type=Path, help="export folder to create")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="storage dtype (loads as float32)")
    p.add_argument("--metrics", nargs="*", default=[], type=Path, help="longvivit eval --out JSON files")
    p.add_argument("--data-stats", nargs="*", default=[], type=Path, help="data statistics JSON files")
    p.add_argument("--license", default=None, help="license id for the model card, e.g. apache-2.0")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder to this repo")
    p.add_argument("--private", action="store_true", help="create the hub repository private")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    p.add_argument("--no-verify", action="store_true", help="do not reload the folder to compare embeddings")
    return p


def _export_captioner(args: argparse.Namespace) -> int:
    """A captioning checkpoint becomes the captioner folder; the encoder-export options do not apply to it."""
    from longvivit.captioning.export import export_captioner

    unused = [name for name, value in (("--dtype", args.dtype != "fp32"), ("--metrics", args.metrics),
                                       ("--data-stats", args.data_stats), ("--license", args.license),
                                       ("--push-to-hub", args.push_to_hub), ("--private", args.private),
                                       ("--no-verify", args.no_verify))
              if value]
    if unused:
        print(f"longvivit export: {args.ckpt} is a captioner checkpoint: {', '.join(unused)} apply to video-text "
              "models only", file=sys.stderr)
        return 2
    try:
        folder = export_captioner(args.ckpt, args.out, overwrite=args.overwrite)
    except FileExistsError as err:
        print(f"longvivit export: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:  # e.g. the encoder it names is gone
        print(f"longvivit export: {err}", file=sys.stderr)
        return 1
    print(f"exported the captioner {args.ckpt} -> {folder} (use it with `longvivit caption --model {folder}`)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``longvivit export`` entry point; returns the exit status (2 for an unusable destination)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from longvivit.captioning.export import is_captioner_checkpoint

    if is_captioner_checkpoint(args.ckpt):
        return _export_captioner(args)
    try:
        folder = export_model(args.ckpt, args.out, dtype=args.dtype, metrics=args.metrics,
                              data_stats=args.data_stats, repo_id=args.push_to_hub, license=args.license,
                              overwrite=args.overwrite, verify=not args.no_verify)
    except FileExistsError as err:
        print(f"longvivit export: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:  # --ckpt is missing or not a video-text model
        print(f"longvivit export: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.ckpt} -> {folder} ({args.dtype})")
    if args.push_to_hub:
        try:
            url = push_to_hub(folder, args.push_to_hub, private=args.private)
        except Exception as err:  # network, login, hub: the export itself is complete and stays
            print(
                f"longvivit export: upload to {args.push_to_hub} failed ({type(err).__name__}: {err}); the export "
                f"is complete in {folder}: upload it later with `hf upload {args.push_to_hub} {folder}`",
                file=sys.stderr,
            )
            return 1
        print(f"uploaded -> {url}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

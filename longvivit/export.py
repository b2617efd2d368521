"""``longvivit export``: a training checkpoint becomes a self-describing folder in the hub layout.

Folder (``docs/export.md``)::

    config.json               VideoEncoderConfig (what VideoEncoder.from_pretrained reads)
    model.safetensors         video encoder, head norm and projection included
    preprocessor_config.json  frame sampling and normalisation, tubelet and token grid
    video_text_config.json    logit scale, architecture, library, storage dtype
    text/                     text tower: HF model + tokenizer + projection (safetensors)
    README.md                 model card with the checkpoint's own stages and numbers

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
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData

from longvivit.config import PreprocessConfig, VideoEncoderConfig

if TYPE_CHECKING:
    from longvivit.models.model import VideoTextModel

log = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
LIBRARY_NAME = "longvivit"
PAPER_URL = "https://arxiv.org/abs/2312.07395"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Formats that unpickle on load; none of them may end up in an export.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
_PROBE_CAPTION = "a person walks into the room and picks up a cup"


def _library_version() -> str:
    try:
        return version(LIBRARY_NAME)
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "unknown"


def _dtype_name(dtype: str) -> str:
    return str(DTYPES[dtype]).removeprefix("torch.")


# --------------------------------------------------------------------------- preprocessor config
def preprocessor_dict(pre: PreprocessConfig, video: VideoEncoderConfig) -> dict[str, Any]:
    """``preprocessor_config.json``: the :class:`PreprocessConfig` fields plus tubelet and token grid."""
    return {
        "processor_class": "longvivit.PreprocessConfig",
        **asdict(pre), "mean": list(pre.mean), "std": list(pre.std),
        "resize": "short side to image_size (bilinear, antialiased), then centre crop",
        "rescale_factor": 1 / 255,
        "tubelet_size": list(video.tubelet_size),
        "patch_size": list(video.patch_size),
        "grid_size": [video.num_temporal_steps, *video.grid_size],
        # uniform sampling spreads the frames over each clip: no fixed step length
        "seconds_per_tubelet_step": video.tubelet_size[0] / pre.fps if pre.sampling == "fps" else None,
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


# --------------------------------------------------------------------------- what the checkpoints say
@dataclass
class StageInfo:
    """One training stage as its ``longvivit fit`` checkpoint records it: ``hparams`` of the model,
    ``data`` (DataModule hyper-parameters) and ``meta`` (init_from, trainable_last, adaptations, metrics)."""

    path: str
    step: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def init_from(self) -> str | None:
        return self.meta.get("init_from", self.hparams.get("init_from"))


def read_stages(ckpt_path: str | Path, max_depth: int = 16) -> list[StageInfo]:
    """Follow the ``init_from`` chain back from a checkpoint (tensors memory-mapped, nothing unpickled).

    Args:
        ckpt_path: The checkpoint being exported.
        max_depth: At most this many stages (guards against cycles).

    Returns:
        Stages, oldest first. The chain stops at a source that is no readable ``.ckpt`` here (a folder, a
        file of another machine); the oldest stage's ``init_from`` still names it.
    """
    stages: list[StageInfo] = []
    path: Path | None = Path(ckpt_path)
    seen: set[Path] = set()
    while path is not None and path.is_file() and path.resolve() not in seen and len(stages) < max_depth:
        seen.add(path.resolve())
        ck = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        hp, data, meta = (dict(ck.get(k) or {}) for k in ("hyper_parameters", "datamodule_hyper_parameters",
                                                          "longvivit"))
        stages.append(StageInfo(str(path), ck.get("global_step"), hp, data, meta))
        path = Path(stages[-1].init_from) if stages[-1].init_from else None
    return stages[::-1]


# top-level module name prefix -> part of the video encoder; anything else (variants) is named as it is
_PARTS = (("patch_embed", "patch embeddings (3D tubelet + 2D image)"),
          ("pos_embed", "position tables, class token"), ("cls_token", "position tables, class token"),
          ("blocks", "transformer blocks and final norm"), ("norm", "transformer blocks and final norm"),
          ("head_norm", "head (LayerNorm + projection)"), ("proj", "head (LayerNorm + projection)"))


def parameter_counts(model: VideoTextModel) -> dict[str, int]:
    """Parameters per part of the model (the video encoder grouped by top-level module)."""
    counts: dict[str, int] = {}
    for name, p in model.video_encoder.named_parameters():
        top = name.split(".")[0]
        part = next((v for k, v in _PARTS if top == k or top.startswith(k + "_")), top)
        counts[f"video: {part}"] = counts.get(f"video: {part}", 0) + p.numel()
    counts["video encoder total"] = sum(p.numel() for p in model.video_encoder.parameters())
    counts["text: transformer"] = sum(p.numel() for p in model.text_encoder.model.parameters())
    counts["text: projection"] = model.text_encoder.proj.weight.numel()
    counts["text tower total"] = sum(p.numel() for p in model.text_encoder.parameters())
    counts["total (incl. logit scale)"] = sum(p.numel() for p in model.parameters())
    return counts


# --------------------------------------------------------------------------- model card
_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A video-first ViViT encoder (joint space-time attention) contrastively pre-trained with a text tower, after
[A Simple Recipe for Contrastively Pre-training Video-First Encoders Beyond 16 Frames]({{ paper }})
(Papalampidi et al., 2023); trained and exported with LongViViT {{ version }}. Videos and captions share one
{{ embed_dim }}-d space for zero-shot text-video retrieval; the token grid can feed a frozen language model.

## Load

```python
{{ load }}
emb = model.encode_video(video)  # (B, T, 3, H, W) frames prepared as in preprocessor_config.json
```

Nothing else is needed: the text tower and its tokenizer are in `text/`. `VideoEncoder.from_pretrained` loads
the video encoder alone; its `extract_features(video)` gives the token grid, the pooled embedding and the time
of each tubelet step. Weights are stored as {{ dtype }} and loaded as float32.

## Architecture

{{ architecture }}

## Input

{{ preprocessing }}

## Training stages

{{ stages }}

## Training data

{{ data }}

## Evaluation

{{ evaluation }}

## Intended use

Research on video understanding: zero-shot text-video retrieval, video features for downstream heads, a
frozen visual encoder for video-to-text models. Longer clips load with more frames
(`from_pretrained(path, num_frames=...)` extends the temporal position table).

## Limitations

- Only as good as the training data above; the numbers above are the only measurements, on the sets named.
  Nothing was measured for safety, fairness or robustness.
- No audio. Frames are centre-cropped squares: the edges of wide videos are not seen.
- Past the trained frame count the temporal position table is repeated or interpolated: untested zero-shot
  unless a stage above trained at that length.
- Captions are English and truncated to {{ max_length }} tokens.
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows])


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _architecture(model: VideoTextModel) -> str:
    c, text = model.video_encoder.cfg, model.text_encoder
    grid = f"{c.num_temporal_steps} x {c.grid_size[0]} x {c.grid_size[1]} = {c.num_tokens} tokens"
    lines = [
        f"- Video encoder: ViViT, `{c.backbone}` backbone, width {c.width}, depth {c.depth}, {c.heads} "
        f"heads, MLP ratio {c.mlp_ratio:g}, tubelet {tuple(c.tubelet_size)} (frames, px, px); "
        f"{c.num_frames} frames of {c.image_size} px -> {grid}; {c.pool} pooling"
        f"{', class token' if c.cls_token else ''}, LayerNorm, projection to {c.embed_dim}.",
        f"- Text tower: {type(text.model).__name__}, {text.num_layers} layers, hidden {text.hidden_size}, "
        f"masked mean pooling, projection to {text.embed_dim}.",
        f"- Learned temperature: logit scale {model.get_logit_scale().item():.2f}.",
    ]
    desc = "\n".join(lines) + "\n\n"
    counts = parameter_counts(model).items()
    rows = [(k, f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v:,}", f"{v:,}") for k, v in counts]
    return desc + _table(("part", "parameters", "exact"), rows)


def _preprocessing(pre: PreprocessConfig, video: VideoEncoderConfig) -> str:
    how = (f"{pre.num_frames} frames at {pre.fps:g} FPS from the {pre.start} frame of the clip (one tubelet "
           f"step = {video.tubelet_size[0] / pre.fps:g} s)" if pre.sampling == "fps"
           else f"{pre.num_frames} frames spread uniformly over the clip")
    return (f"{how}; short side resized to {pre.image_size} px and centre-cropped to a square; RGB scaled to "
            f"[0, 1], normalised with mean {list(pre.mean)} and std {list(pre.std)} "
            "(`preprocessor_config.json`).")


def _shards(value: Any) -> str:
    items = [] if not value else value if isinstance(value, list) else [value]
    names = [f"`{Path(str(v)).name if len(items) > 2 else v}`" for v in items[:3]]
    return ", ".join(names) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")


def _stages(stages: list[StageInfo], source: str) -> str:
    if not stages:
        return f"Exported from the folder `{source}`, which carries no record of its training stages."
    rows = []
    for i, s in enumerate(stages, 1):
        v, hp, data = s.hparams.get("video") or {}, s.hparams, s.data
        trainable = s.meta.get("trainable_last", hp.get("trainable_last"))
        seen = ", ".join(x for x in map(_shards, (data.get("train_shards"), data.get("image_shards"))) if x)
        rows.append((i, f"`{Path(s.path).name}`", s.step, v.get("num_frames"), v.get("image_size"),
                     v.get("mask_ratio"), "all" if trainable is None else f"last {trainable} blocks",
                     (hp.get("optim") or {}).get("lr"), data.get("batch_size"), seen or "n/a",
                     f"`{s.init_from}`" if s.init_from else "scratch"))
    header = ("#", "checkpoint", "step", "frames", "px", "mask", "trainable", "lr", "batch", "training data",
              "initialised from")
    notes = [f"- stage {i} weight adaptation: {m}" for i, s in enumerate(stages, 1)
             for m in s.meta.get("adaptations") or []]
    return "\n\n".join([_table(header, rows), *(["\n".join(notes)] if notes else [])])


def _data(stats: list[tuple[str, dict[str, Any]]]) -> str:
    if not stats:
        return ("No data statistics were given at export (`--data-stats`, e.g. the `stats.json` the shard "
                "builder writes); the stages above name the shards each stage read.")
    parts = []
    for name, d in stats:  # scalars as they are, small flat dicts inline, lists counted
        rows = [(k, f"{v:.3f}" if isinstance(v, float) else v) for k, v in d.items() if _scalar(v)]
        rows += [(k, ", ".join(f"{a}: {b}" for a, b in v.items()) or "none") for k, v in d.items()
                 if isinstance(v, dict) and len(v) <= 8 and all(map(_scalar, v.values()))]
        rows += [(k, f"{len(v)} entries") for k, v in d.items() if isinstance(v, list)]
        parts.append(f"**{name}**\n\n" + _table(("statistic", "value"), rows))
    return "\n\n".join(parts)


def _evaluation(metrics: list[tuple[str, dict[str, Any]]]) -> str:
    if not metrics:
        return ("No evaluation numbers: none were given at export (`--metrics`, the JSON of `longvivit eval "
                "--out`) and the checkpoint holds no validation metrics.")
    parts = []
    for name, m in metrics:
        settings = m.get("settings") or {}
        detail = ", ".join(f"{k} {settings[k]}" for k in ("shards", "num_frames", "fps", "frame_order",
                                                           "mask_ratio") if k in settings)
        head = f"**{name}**" + (f" ({detail})" if detail else "")
        if "t2v" not in m:  # some other metrics JSON: its scalars as they are
            scalars = [kv for kv in m.items() if _scalar(kv[1])]
            parts.append(f"{head}\n\n" + _table(("metric", "value"), scalars))
            continue
        rows = [(d.upper(), *(f"{m[d][k]:.2f}" for k in ("R@1", "R@5", "R@10", "MdR", "MnR")),
                 f"{m[d]['MRR']:.4f}") for d in ("t2v", "v2t") if d in m]
        table = _table(("direction", "R@1", "R@5", "R@10", "MdR", "MnR", "MRR"), rows)
        if m.get("chance"):
            table += (f"\n\n{m.get('num_videos')} videos, {m.get('num_texts')} captions; chance R@1 "
                      f"{m['chance']['R@1']:.2f}, MRR {m['chance']['MRR']:.4f}. Recall in percent.")
        parts.append(f"{head}\n\n{table}")
    return "Zero-shot text-to-video (T2V) and video-to-text (V2T) retrieval.\n\n" + "\n\n".join(parts)


def build_model_card(
    model: VideoTextModel,
    pre: PreprocessConfig,
    stages: list[StageInfo],
    metrics: list[tuple[str, dict[str, Any]]] = (),
    data_stats: list[tuple[str, dict[str, Any]]] = (),
    *,
    source: str = "",
    dtype: str = "fp32",
    repo_id: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The README of an export: hub metadata, architecture, stages, data, numbers, use and limitations.

    Args:
        model: The model in full precision (parameter counts, logit scale).
        pre: Its preprocessing.
        stages: From :func:`read_stages`, oldest first.
        metrics: ``(name, metrics)``: ``longvivit eval --out`` results or a checkpoint's validation metrics.
        data_stats: ``(name, stats)``, e.g. the shard builder's ``stats.json``.
        source: Where the weights came from (named when there are no stages).
        dtype: Storage dtype, a key of :data:`DTYPES`.
        repo_id: Hub repository, used in the loading snippet.
        license: License id for the card metadata.
    """
    c = model.video_encoder.cfg
    tags = ["longvivit", "video", "vivit", "video-text-retrieval", "contrastive-learning"]
    card_data = ModelCardData(library_name=LIBRARY_NAME, license=license, pipeline_tag="feature-extraction",
                              tags=tags)
    where = f'snapshot_download("{repo_id}")' if repo_id else '"path/to/this/folder"'
    load = (("from huggingface_hub import snapshot_download\n" if repo_id else "")
            + f"from longvivit.models.model import VideoTextModel\n"
            f"model = VideoTextModel.from_pretrained({where}).eval()")
    return ModelCard.from_template(
        card_data, template_str=_CARD_TEMPLATE, paper=PAPER_URL, version=_library_version(), load=load,
        title=f"LongViViT encoder: width {c.width}, depth {c.depth}, {c.num_frames} x {c.image_size} px",
        embed_dim=c.embed_dim, dtype=_dtype_name(dtype), architecture=_architecture(model),
        preprocessing=_preprocessing(pre, c), stages=_stages(stages, source), data=_data(list(data_stats)),
        evaluation=_evaluation(list(metrics)), max_length=model.text_encoder.cfg.max_length,
    )


# --------------------------------------------------------------------------- the folder
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
    """
    from longvivit.models.checkpoint import load_model
    from longvivit.models.model import CONFIG_NAME as MODEL_CONFIG_NAME
    from longvivit.models.model import VideoTextModel

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace a previous export")
        if not (out / "config.json").is_file():
            raise FileExistsError(f"{out} does not look like an export (no config.json); not replacing it")

    model, _ = load_model(source)
    stages = read_stages(source) if source.is_file() else []
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
                    "library_name": LIBRARY_NAME, "library_version": _library_version()})
    (tmp / "config.json").write_text(json.dumps(enc_cfg, indent=2) + "\n")
    meta = json.loads((tmp / MODEL_CONFIG_NAME).read_text())
    meta.update({"architectures": ["VideoTextModel"], "video_architecture": "VideoEncoder",
                 "library_name": LIBRARY_NAME, "library_version": _library_version(),
                 "dtype": _dtype_name(dtype)})
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


def main(argv: Sequence[str] | None = None) -> int:
    """``longvivit export`` entry point; returns the exit status (2 for an unusable destination)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        folder = export_model(args.ckpt, args.out, dtype=args.dtype, metrics=args.metrics,
                              data_stats=args.data_stats, repo_id=args.push_to_hub, license=args.license,
                              overwrite=args.overwrite, verify=not args.no_verify)
    except FileExistsError as err:
        print(f"longvivit export: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.ckpt} -> {folder} ({args.dtype})")
    if args.push_to_hub:
        print(f"uploaded -> {push_to_hub(folder, args.push_to_hub, private=args.private)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

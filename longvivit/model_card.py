"""The model card of an exported folder: the checkpoint's own training stages, data and evaluation numbers.

:func:`read_stages` follows a checkpoint's ``init_from`` chain back to the first stage (memory-mapped, nothing
unpickled); :func:`build_model_card` writes a ``huggingface_hub.ModelCard`` with the architecture and
parameter counts, preprocessing, every stage's recipe, the data statistics and the evaluation metrics found
beside the checkpoints. Used by :mod:`longvivit.export`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelCardData

from longvivit.config import PreprocessConfig, VideoEncoderConfig

if TYPE_CHECKING:
    from longvivit.models.model import VideoTextModel

LIBRARY_NAME = "longvivit"
PAPER_URL = "https://arxiv.org/abs/2312.07395"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # storage dtypes of an export


def library_version() -> str:
    """The installed ``longvivit`` version (``"unknown"`` for a source tree that is not installed)."""
    try:
        return version(LIBRARY_NAME)
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "unknown"


def dtype_name(dtype: str) -> str:
    """``"bf16"`` -> ``"bfloat16"``."""
    return str(DTYPES[dtype]).removeprefix("torch.")


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
video, n = decode_video_file("clip.mp4", load_preprocess_config(folder))  # (T, 3, H, W); n real frames
with torch.no_grad():  # a clip shorter than the window is padded: n keeps the padding out
    emb = model.encode_video(video[None], num_valid_frames=torch.tensor([n]))  # (1, D), L2-normalised
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
    steps = c.grid_steps  # the frame-level backbone has a step per frame
    grid = f"{steps} x {c.grid_size[0]} x {c.grid_size[1]} = {steps * c.num_spatial_tokens} tokens"
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
    how = (f"{pre.num_frames} frames at {pre.fps:g} FPS from the {pre.start} frame of the clip (one temporal "
           f"step of the token grid = {video.frames_per_step / pre.fps:g} s)" if pre.sampling == "fps"
           else f"{pre.num_frames} frames spread uniformly over the clip")
    return (f"{how}; short side resized to {pre.image_size} px and centre-cropped to a square; RGB scaled to "
            f"[0, 1], normalised with mean {list(pre.mean)} and std {list(pre.std)} "
            "(`preprocessor_config.json`). A clip shorter than the window is padded with its last frame; pass its "
            "real frame count (`encode_video(video, num_valid_frames=n)`) so that the padding is left out of "
            "attention and pooling, as in training and evaluation.")


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
        seen = "; ".join(f"{kind}: {x}" for kind, x in (("videos", _shards(data.get("train_shards"))),
                                                          ("images", _shards(data.get("image_shards")))) if x)
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
    load = ("import torch\n" + ("from huggingface_hub import snapshot_download\n" if repo_id else "")
            + "from longvivit.data.decode import decode_video_file\n"
            "from longvivit.export import load_preprocess_config\n"
            "from longvivit.models.model import VideoTextModel\n"
            f"folder = {where}\n"
            "model = VideoTextModel.from_pretrained(folder).eval()")
    return ModelCard.from_template(
        card_data, template_str=_CARD_TEMPLATE, paper=PAPER_URL, version=library_version(), load=load,
        title=f"LongViViT encoder: width {c.width}, depth {c.depth}, {c.num_frames} x {c.image_size} px",
        embed_dim=c.embed_dim, dtype=dtype_name(dtype), architecture=_architecture(model),
        preprocessing=_preprocessing(pre, c), stages=_stages(stages, source), data=_data(list(data_stats)),
        evaluation=_evaluation(list(metrics)), max_length=model.text_encoder.cfg.max_length,
    )

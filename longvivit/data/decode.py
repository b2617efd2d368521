"""Bytes to normalised tensors: decord for videos, PIL for images, one shared frame transform.

Also the step from a raw shard sample (tar members by extension, see the shard format in
``longvivit/data/shards.py``) to a decoded sample: :func:`parse_sample` and :func:`decode_sample`.

Videos are decoded with decord straight from memory and only the sampled frames are requested
(``get_batch``), so a 5-minute video sampled at 1 FPS costs a few hundred decoded frames, not nine
thousand converted ones. The transform is the paper's: resize the short side (antialiased),
centre crop to a square, scale to [0, 1] and normalise with the configured mean/std.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from longvivit.config import PreprocessConfig
from longvivit.data.formats import IMAGE_EXTS, VIDEO_EXTS
from longvivit.data.sampling import frame_indices, variable_timestamps, window_cuts_clip
from longvivit.data.truncation import cut_off, streamed_avi
from longvivit.data.video_io import NoFramesError, mpeg_stream_kind, pyav_frame_times, pyav_read_frames

Modality = Literal["video", "image"]


class DecodeError(RuntimeError):
    """Raised for bytes that cannot be decoded into frames (corrupt, truncated, not a video/image)."""


class SampleError(ValueError):
    """A sample that is well-formed as tar members but unusable (no caption, no media, bad JSON)."""


class OtherMediaError(SampleError):
    """A valid sample of the other modality (an image in a video dataset or the reverse): not corrupt.

    Shards may mix videos and images; each loader takes its own kind and passes over the rest.
    """


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Resize the short side to ``image_size`` (bilinear, antialiased), centre crop, normalise.

    Args:
        frames: (T, H, W, 3) RGB frames, uint8 (numpy or torch); float input in [0, 255] also works.
        image_size: Side of the square output.
        mean: Per-channel mean, applied after scaling to [0, 1].
        std: Per-channel std.

    Returns:
        (T, 3, image_size, image_size) float32.
    """
    if not isinstance(frames, torch.Tensor):
        arr = np.asarray(frames)
        # PIL hands out read-only arrays, which torch.from_numpy warns about.
        frames = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {tuple(frames.shape)}")
    # A permuted view is channels-last in memory, the layout of torch's fast uint8 antialiased resize
    # (~25x faster than resizing float frames; the result differs by rounding to uint8 only).
    x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
    if x.dtype != torch.uint8:
        x = x.float()
    h, w = x.shape[-2:]
    scale = image_size / min(h, w)
    # max(.., image_size) guards against the long side rounding below the crop size.
    new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    # Contiguous (channels-first) before the arithmetic: normalising a channels-last view is ~3x slower.
    x = x[:, :, top : top + image_size, left : left + image_size].contiguous().float()  # (T, 3, S, S)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return x.sub_(mean_t).div_(std_t)  # (x / 255 - mean) / std, in place


def _open(data: bytes, num_threads: int):
    import decord  # imported lazily: the image-only path and the config tools do not need it

    try:
        return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=num_threads)
    except (RuntimeError, decord.DECORDError) as err:
        raise DecodeError(f"cannot open video ({len(data)} bytes): {decoder_message(err)}") from err


def text_head(data: bytes) -> str | None:
    """The first characters of ``data`` when its head is printable text (no container starts so), else None."""
    text = data[:512].decode("utf-8", errors="ignore")  # "ignore": a character cut at byte 512
    if len(text) < min(len(data), 512) // 4 or not all(c.isprintable() or c.isspace() for c in text):
        return None  # binary: a container header has NULs and bytes that are not UTF-8
    return text[:40]


def still_image_format(source: bytes | str | Path) -> str | None:
    """The format of a still image (PNG, JPEG...); None for anything else, animated GIFs included (FFmpeg reads
    a still image as a one-frame video, which a video loader should not take)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return None if getattr(im, "n_frames", 1) > 1 or im.format == "GIF" else im.format
    except Exception:
        return None


def decoder_message(err: BaseException, limit: int = 300) -> str:
    """The reason in a decord or PyAV error, without decord's log prefix (time of day, build path) and stack dump."""
    if getattr(err, "strerror", None) and type(err).__module__.startswith("av"):
        return str(err.strerror)  # PyAV: FFmpeg's reason ("Invalid data found when processing input")
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip() and not ln.lstrip().startswith("Stack trace")]
    line = lines[0] if lines else type(err).__name__
    line = re.sub(r"^\[[\d:]+\]\s*\S+:\d+:\s*", "", line)  # "[01:40:06] /src/video/video_reader.cc:430: "
    return line if len(line) <= limit else line[: limit - 3].rsplit(" ", 1)[0] + "..."


def read_frames(
    data: bytes,
    num_frames: int,
    fps: float = 1.0,
    sampling: str = "fps",
    start: str = "first",
    rng: random.Random | None = None,
    num_threads: int = 1,
) -> tuple[np.ndarray, int]:
    """Decode only the sampled frames of a video, as raw RGB.

    Frames are taken by time: a variable-frame-rate video is sampled at its frames' timestamps (see
    :func:`~longvivit.data.sampling.variable_timestamps`). decord decodes, except for MPEG program and transport
    streams (``.mpg``, ``.ts``), whose frames it misplaces, and for what it cannot open or decode (AV1, GIF,
    some small frame widths...): PyAV reads those, at the cost of a second decoding pass.

    Args:
        data: Encoded video bytes (any container FFmpeg reads).
        num_frames: Frames to return.
        fps: Sampling rate in ``"fps"`` mode.
        sampling: ``"fps"`` or ``"uniform"`` (see :func:`~longvivit.data.sampling.frame_indices`).
        start: ``"first"``, ``"random"`` or ``"center"``.
        rng: Randomness for ``start="random"``.
        num_threads: decord decoder threads (1 per DataLoader worker avoids oversubscription).

    Returns:
        ``(frames, num_valid)``: (num_frames, H, W, 3) uint8, padded by repeating the last real frame.

    Raises:
        DecodeError: If the bytes cannot be opened, are cut off, or the frames cannot be decoded.
    """
    if not data:
        raise DecodeError("empty video bytes")
    text = text_head(data)
    if text is not None:
        # decord would print the whole file to stderr (an HTML error page saved as .mp4 is a classic of scraped
        # video sets)
        raise DecodeError(f"not a video: the {len(data)} bytes are text ({text!r}...)")
    why_cut = cut_off(data)
    if why_cut:  # decord has crashed the process (SIGSEGV) on cut-off AVI bytes
        raise DecodeError(f"the video is cut off ({len(data)} bytes): {why_cut}")
    pick = dict(num_frames=num_frames, fps=fps, mode=sampling, start=start, rng=rng)
    if mpeg_stream_kind(data) or streamed_avi(data):  # decord misreads these (aborts on the AVI)
        return _read_frames_pyav(data, pick, None)
    try:
        return _read_frames_decord(data, pick, num_threads)
    except DecodeError as err:
        still = still_image_format(data)
        if still:
            raise DecodeError(f"a still image ({still}), not a video ({len(data)} bytes)") from err
        return _read_frames_pyav(data, pick, err)


def _read_frames_decord(data: bytes, pick: dict[str, Any], num_threads: int) -> tuple[np.ndarray, int]:
    vr = _open(data, num_threads)
    n = len(vr)
    if n < 1:
        raise DecodeError("video has no frames")
    native = vr.get_avg_fps()
    times = variable_timestamps(vr.get_frame_timestamp(np.arange(n))[:, 0], native) if n > 1 else None
    indices, num_valid = frame_indices(n, native, timestamps=times, **pick)
    # Ask decord for each needed frame once, in increasing order: it then decodes forward from the
    # nearest keyframe and skips (without colour conversion) everything it is not asked for.
    unique = sorted(set(indices))
    try:
        batch = vr.get_batch(unique).asnumpy()  # (U, H, W, 3) uint8
    except Exception as err:  # decord raises plain RuntimeError/DECORDError mid-stream
        raise DecodeError(f"cannot decode frames {unique[:4]}... of a {n}-frame video: {decoder_message(err)}") from err
    if batch.ndim != 4 or batch.shape[0] != len(unique) or batch.shape[-1] != 3:
        raise DecodeError(f"decoder returned {batch.shape} for {len(unique)} frames")
    pos = {idx: i for i, idx in enumerate(unique)}
    frames = batch[[pos[i] for i in indices]] if len(unique) != len(indices) else batch
    return frames, num_valid


def _read_frames_pyav(data: bytes, pick: dict[str, Any], decord_error: DecodeError | None) -> tuple[np.ndarray, int]:
    """:func:`read_frames` through PyAV (two decoding passes: frame times, then the sampled frames)."""
    # A window from the first frame needs the frames up to its end only; other starts need the video's length.
    until = (pick["num_frames"] - 1) / pick["fps"] + 1.0 if pick["mode"] == "fps" and pick["start"] == "first" else None
    try:
        times, rate = pyav_frame_times(data, until)
        indices, num_valid = frame_indices(len(times), rate, timestamps=variable_timestamps(times, rate), **pick)
        return pyav_read_frames(data, indices), num_valid
    except NoFramesError as err:
        raise DecodeError(f"{err} ({len(data)} bytes)") from err
    except Exception as err:  # PyAV raises its own error classes per FFmpeg error code
        raise DecodeError(f"cannot decode video ({len(data)} bytes): {decoder_message(err)}") from (
            decord_error or err)


def decode_video(
    data: bytes,
    cfg: PreprocessConfig,
    rng: random.Random | None = None,
    num_threads: int = 1,
) -> tuple[torch.Tensor, int]:
    """Decode, sample and preprocess one video.

    Args:
        data: Encoded video bytes.
        cfg: Frames, sampling and normalisation settings.
        rng: Randomness for ``cfg.start == "random"`` (and uniform jitter).
        num_threads: decord decoder threads.

    Returns:
        ``(video, num_valid)``: video is (T, 3, H, W) float32 normalised, ``T = cfg.num_frames``;
        frames from ``num_valid`` on repeat the last real frame.

    Raises:
        DecodeError: For corrupt or unreadable data.
    """
    frames, num_valid = read_frames(
        data, cfg.num_frames, cfg.fps, cfg.sampling, cfg.start, rng=rng, num_threads=num_threads
    )
    return preprocess_frames(frames, cfg.image_size, cfg.mean, cfg.std), num_valid


def decode_video_file(path: str | Path, cfg: PreprocessConfig) -> tuple[torch.Tensor, int]:
    """:func:`decode_video` of a file; a file that cannot be read is a :class:`DecodeError` too.

    Args:
        path: Video file.
        cfg: Frames, sampling and normalisation settings.

    Returns:
        ``(video, num_valid)`` as :func:`decode_video`.

    Raises:
        DecodeError: Missing, unreadable, corrupt or empty file; the message names the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DecodeError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        return decode_video(data, cfg)
    except DecodeError as err:
        raise DecodeError(f"{path}: {err}") from err


def rgb_image(img: Any) -> Any:
    """An image as it is shown, in 8-bit RGB: EXIF orientation applied, 16-bit grey scaled, transparency matted.

    ``Image.convert("RGB")`` alone keeps a phone photo's pixels in sensor orientation (its EXIF says how to turn
    them), clips 16-bit grey to white, and shows whatever colour transparent pixels hold; transparent pixels
    become white here, as in img2dataset.

    Args:
        img: A PIL image.

    Returns:
        A PIL image in mode ``"RGB"``.
    """
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img) or img
    if img.mode.startswith("I"):  # 16-bit ("I;16") or 32-bit integer grey
        grey = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16") or grey.max() > 255:
            grey = grey / 257.0  # 65535 -> 255
        img = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def decode_image(data: bytes, cfg: PreprocessConfig) -> torch.Tensor:
    """Decode and preprocess one image with the same transform as video frames.

    Args:
        data: Encoded image bytes (JPEG, PNG, anything PIL reads).
        cfg: Only ``image_size``, ``mean`` and ``std`` are used.

    Returns:
        (3, H, W) float32 normalised.

    Raises:
        DecodeError: For corrupt or unreadable data.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DecodeError("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(rgb_image(img))  # (H, W, 3) uint8; the conversion forces the full decode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DecodeError(f"cannot decode image ({len(data)} bytes): {err}") from err
    return preprocess_frames(rgb[None], cfg.image_size, cfg.mean, cfg.std)[0]


# ---------------------------------------------------------------------------------------------- samples
def parse_sample(raw: dict[str, Any], modality: Modality) -> tuple[bytes, list[str], dict[str, Any]]:
    """Pick the media bytes and captions out of a raw webdataset sample.

    Args:
        raw: ``{"__key__", "json", "txt", "mp4" | ... | "jpg" ...: bytes}`` (see the shard format).
        modality: What the dataset is expected to hold.

    Returns:
        ``(media_bytes, captions, meta)``.

    Raises:
        OtherMediaError: The sample holds the other modality.
        SampleError: No media, no caption, or unreadable JSON.
    """
    # The media kind first: a sample of the other modality is the other loader's, whatever else is wrong with it.
    wanted, other = (VIDEO_EXTS, IMAGE_EXTS) if modality == "video" else (IMAGE_EXTS, VIDEO_EXTS)
    ext = next((e for e in wanted if e in raw), None)
    if ext is None:
        found = next((e for e in other if e in raw), None)
        if found:
            raise OtherMediaError(f"a {found} sample in a {modality} dataset")
        raise SampleError(f"no {modality} member (members: {sorted(raw)})")
    meta: dict[str, Any] = {}
    if "json" in raw:
        try:
            meta = json.loads(raw["json"])
        except (ValueError, UnicodeDecodeError) as err:
            raise SampleError(f"bad json: {err}") from err
        if not isinstance(meta, dict):
            raise SampleError("json is not an object")
    # The first source that holds a caption: the json's "captions", the .txt, the json's "caption" (img2dataset /
    # video2dataset keep it there). An empty one falls through: a blank .txt (video2dataset writes one for an empty
    # caption column), or "captions": [] beside a .txt, which skipped the sample as uncaptioned.
    txt = [raw["txt"].decode("utf-8", errors="replace")] if "txt" in raw else None
    for source in (meta.get("captions"), txt, meta.get("caption")):
        captions = _caption_list(source)
        if captions:
            return raw[ext], captions, meta
    raise SampleError("no caption")


def _caption_list(value: Any) -> list[str]:
    """A caption or list of captions as its non-blank strings, stripped."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return []
    return [c.strip() for c in value if isinstance(c, str) and c.strip()]


def decode_sample(
    raw: dict[str, Any],
    modality: Modality,
    preprocess: PreprocessConfig,
    rng: random.Random | None,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Raw webdataset sample -> ``{"key", "shard", "video" | "image", "num_valid_frames", "captions", "meta"}``.

    ``shard`` is the URL the sample was read from (``""`` when webdataset did not say): with the key, it names the
    sample (keys alone repeat across datasets).

    ``meta`` is the manifest's extra fields kept by the shard writer (e.g. ``split``, ``pair_id``), ``{}`` if none.
    A video also carries ``duration`` (seconds) when the sample's json records it, as make_shards' does, and then
    ``cut``: whether the sampled window leaves part of it unseen (:func:`~longvivit.data.sampling.window_cuts_clip`).

    Raises:
        DecodeError: Media bytes that do not decode.
        SampleError: Missing caption or media.
    """
    data, captions, info = parse_sample(raw, modality)
    meta = info.get("meta")
    out: dict[str, Any] = {"key": raw["__key__"], "shard": str(raw.get("__url__", "")), "captions": captions,
                           "meta": meta if isinstance(meta, dict) else {}}
    if modality == "video":
        out["video"], out["num_valid_frames"] = decode_video(
            data, preprocess, rng=rng, num_threads=num_threads
        )
        duration = info.get("duration")  # make_shards records it: training and evaluation say what the window cuts
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
            out["duration"] = float(duration)
            out["cut"] = window_cuts_clip(out["duration"], preprocess.num_frames, preprocess.fps, preprocess.sampling)
    else:
        out["image"], out["num_valid_frames"] = decode_image(data, preprocess), 1
    return out

"""Rendering of synthetic scenes with numpy: anti-aliased shapes over a background, events interpolated.

Interpolation is exact under time reversal (:func:`_lerp`), so the frames of a scene's reversal are its frames
backwards, bit for bit: what makes the ``reverse`` order-only pairs hold the same multiset of frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from longvivit.data.scenes import BACKGROUNDS, COLOURS, GRID, SIZES, Background, Obj, Scene, states


def _ease(p: float) -> float:
    return p * p * (3.0 - 2.0 * p)


def _lerp(a: float, b: float, k: int, n: int) -> float:
    # Evaluated from the smaller endpoint so step k of a->b and step n-k of b->a give bit-identical floats:
    # that is what makes a reversed clip's frames exactly the original frames backwards.
    if a == b:
        return a
    if a > b:
        a, b, k = b, a, n - k
    return a + (b - a) * _ease(k / n)


def _params(o: Obj) -> tuple[float, ...]:
    r, g, b = COLOURS[o.colour]
    return ((o.col + 0.5) / GRID, (o.row + 0.5) / GRID, SIZES[o.size], float(r), float(g), float(b),
            1.0 if o.visible else 0.0)


def _background(bg: Background, size: int) -> np.ndarray:
    base = np.array(BACKGROUNDS[bg.colour], dtype=np.float32)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if bg.kind == "gradient":
        ramp = np.linspace(0.75, 1.2, size, dtype=np.float32)
        ramp = {0: ramp[None, :], 1: ramp[:, None], 2: (ramp[None, :] + ramp[:, None]) / 2}[bg.axis]
        img = img * ramp[..., None]
    elif bg.kind == "noise":
        img = img + np.random.default_rng(bg.seed).normal(0.0, 6.0, (size, size, 1)).astype(np.float32)
    return np.clip(img, 0, 255)


def _draw(frame: np.ndarray, shape: str, p: Sequence[float]) -> None:
    """Alpha-composite one object in place (anti-aliased by a 1-pixel ramp on its signed distance)."""
    size = frame.shape[0]
    cx, cy, rr = p[0] * size, p[1] * size, p[2] * size
    ext = int(np.ceil(rr * 1.2 + 2))
    x0, x1 = max(0, int(cx) - ext), min(size, int(cx) + ext + 1)
    y0, y1 = max(0, int(cy) - ext), min(size, int(cy) + ext + 1)
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    if shape == "circle":
        dist = np.sqrt(dx * dx + dy * dy) - rr
    elif shape == "square":
        dist = np.maximum(np.abs(dx), np.abs(dy)) - 0.88 * rr
    else:  # upward equilateral triangle: circumradius 1.2 r, edges at inradius 0.6 r
        dist = np.maximum(np.maximum(dy, -0.866 * dx - 0.5 * dy), 0.866 * dx - 0.5 * dy) - 0.6 * rr
    cover = np.clip(0.5 - dist, 0.0, 1.0)[..., None] * np.float32(p[6])
    colour = np.array(p[3:6], dtype=np.float32)
    region = frame[y0:y1, x0:x1]
    region += cover * (colour - region)


def render_frames(scene: Scene, size: int = 64) -> np.ndarray:
    """Render a scene without encoding.

    Args:
        scene: What to draw.
        size: Frame side in pixels.

    Returns:
        ``(T, size, size, 3)`` uint8 RGB frames.
    """
    sts = states(scene)
    bg = _background(scene.background, size)
    frames = np.empty((scene.num_frames, size, size, 3), dtype=np.uint8)
    prev_key: tuple | None = None
    done = 0
    for t in range(scene.num_frames):
        while done < len(scene.events) and scene.events[done].end <= t:
            done += 1
        params = [_params(o) for o in sts[done]]
        if done < len(scene.events) and scene.events[done].start <= t:
            ev = scene.events[done]
            n, k = ev.end - ev.start + 1, t - ev.start + 1  # k in 1..n-1: endpoints belong to the still frames
            a, b = _params(sts[done][ev.obj]), _params(sts[done + 1][ev.obj])
            params[ev.obj] = tuple(_lerp(u, v, k, n) for u, v in zip(a, b, strict=True))
        key = tuple(params)
        if key == prev_key:  # still frame: nothing moved
            frames[t] = frames[t - 1]
            continue
        frame = bg.copy()
        for o, p in zip(sts[done], params, strict=True):
            if p[6] > 0:
                _draw(frame, o.shape, p)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        prev_key = key
    return frames

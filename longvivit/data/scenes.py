"""Scenes of the synthetic set: objects on a grid, events that change them, and the captions that state them.

A :class:`Scene` is a start state (2-3 :class:`Obj` on a 3x3 grid over a :class:`Background`) and
:class:`Event` s over frame spans. :func:`states` replays the events, :func:`caption` states them in order, and
:func:`reverse_scene` / :func:`permute_scene` build the two kinds of order-only partners. Rendering is in
:mod:`longvivit.data.render`; sampling, planning and writing the set in :mod:`longvivit.data.synthetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (240, 215, 40),
    "purple": (150, 60, 200), "orange": (250, 140, 30), "cyan": (40, 210, 220),
}
# Backgrounds never share a name or a nearby colour with objects, so captions and colour masks stay unambiguous.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25), "gray": (120, 120, 120), "white": (230, 230, 230), "brown": (110, 75, 45),
    "navy": (25, 30, 80),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.075, "big": 0.13}  # radius as a fraction of the frame side
GRID = 3  # cells per side; one cell per object keeps objects from overlapping
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
KINDS = ("move", "grow", "shrink", "appear", "disappear", "recolour")


def _then(p: list[str]) -> str:
    return ", then ".join(p)


def _first_finally(p: list[str]) -> str:
    if len(p) == 2:
        return f"first {p[0]}, then {p[1]}"
    return f"first {p[0]}, " + "".join(f"then {x}, " for x in p[1:-1]) + f"and finally {p[-1]}"


def _sentences(p: list[str]) -> str:
    return f"first, {p[0]}. " + "".join(f"then {x}. " for x in p[1:-1]) + f"finally, {p[-1]}."


# Connectors vary, the order of mention is always the order of events, and each verb has one phrasing.
_CLIP_TEMPLATES = (_then, _first_finally, lambda p: "; after that, ".join(p), lambda p: ". next, ".join(p))
_LONG_TEMPLATES = (lambda p: _first_finally(p) + ".", _sentences)
_IMAGE_TEMPLATES = (lambda objs, bg: f"{objs} on a {bg} background", lambda objs, bg: f"a {bg} background with {objs}")


@dataclass(frozen=True)
class Obj:
    """Discrete state of one object: what it is and which grid cell it occupies."""

    shape: str
    colour: str
    size: str
    col: int
    row: int
    visible: bool = True


@dataclass(frozen=True)
class Event:
    """One change of one object over frames ``[start, end)``; ``arg`` is a direction or a target colour."""

    obj: int
    kind: str
    arg: str = ""
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class Background:
    """``kind`` is ``solid``, ``gradient`` or ``noise``; ``axis`` orients gradients; ``seed`` drives noise."""

    colour: str
    kind: str = "solid"
    axis: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    """Everything needed to render a clip (or an image: ``num_frames=1`` and no events)."""

    objects: tuple[Obj, ...]
    background: Background
    events: tuple[Event, ...] = ()
    num_frames: int = 1
    fps: float = 1.0
    template: int = 0


def apply(objs: tuple[Obj, ...], ev: Event) -> tuple[Obj, ...]:
    """State after ``ev`` (assumed valid)."""
    o = objs[ev.obj]
    if ev.kind == "move":
        dc, dr = DIRECTIONS[ev.arg]
        o = replace(o, col=o.col + dc, row=o.row + dr)
    elif ev.kind in ("grow", "shrink"):
        o = replace(o, size="big" if ev.kind == "grow" else "small")
    elif ev.kind in ("appear", "disappear"):
        o = replace(o, visible=ev.kind == "appear")
    else:
        o = replace(o, colour=ev.arg)
    return objs[: ev.obj] + (o,) + objs[ev.obj + 1 :]


def is_valid(objs: tuple[Obj, ...], ev: Event) -> bool:
    """Whether ``ev`` can happen in state ``objs`` (and keeps every object uniquely named by colour + shape)."""
    o = objs[ev.obj]
    others = [p for i, p in enumerate(objs) if i != ev.obj]
    if ev.kind == "appear":
        return not o.visible
    if not o.visible:
        return False
    if ev.kind == "move":
        dc, dr = DIRECTIONS[ev.arg]
        col, row = o.col + dc, o.row + dr
        return 0 <= col < GRID and 0 <= row < GRID and all((p.col, p.row) != (col, row) for p in others)
    if ev.kind == "grow":
        return o.size == "small"
    if ev.kind == "shrink":
        return o.size == "big"
    if ev.kind == "disappear":
        return any(p.visible for p in others)  # keep something on screen
    return ev.arg != o.colour and all(p.colour != ev.arg for p in others)


def states(scene: Scene) -> list[tuple[Obj, ...]]:
    """States before the first event and after each event (``len(events) + 1`` entries)."""
    out = [scene.objects]
    for ev in scene.events:
        out.append(apply(out[-1], ev))
    return out


def phrase(objs: tuple[Obj, ...], ev: Event) -> str:
    """``"the red circle moves left"`` -- the object is named by its colour at the time of the event."""
    o = objs[ev.obj]
    verb = {"move": f"moves {ev.arg}", "recolour": f"turns {ev.arg}"}.get(ev.kind, ev.kind + "s")
    return f"the {o.colour} {o.shape} {verb}"


def caption(scene: Scene) -> str:
    """Caption of a scene: events in order for clips (long template from 6 events), objects for images."""
    if not scene.events:
        visible = sorted((o for o in scene.objects if o.visible), key=lambda o: (o.row, o.col))
        names = [f"a {o.size} {o.colour} {o.shape}" for o in visible]
        listing = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
        return _IMAGE_TEMPLATES[scene.template % len(_IMAGE_TEMPLATES)](listing, scene.background.colour)
    sts = states(scene)
    parts = [phrase(sts[i], ev) for i, ev in enumerate(scene.events)]
    if len(parts) == 1:
        return parts[0]
    templates = _LONG_TEMPLATES if len(parts) >= 6 else _CLIP_TEMPLATES
    return templates[scene.template % len(templates)](parts)


def reverse_scene(scene: Scene) -> Scene:
    """The exact time-reversal: starts in the final state, plays inverse events backwards on mirrored spans."""
    sts = states(scene)
    inverse = {"grow": "shrink", "shrink": "grow", "appear": "disappear", "disappear": "appear"}
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    t = scene.num_frames
    events = []
    for i in reversed(range(len(scene.events))):
        ev = scene.events[i]
        if ev.kind == "move":
            kind, arg = "move", opposite[ev.arg]
        elif ev.kind == "recolour":
            kind, arg = "recolour", sts[i][ev.obj].colour  # back to the colour it had before
        else:
            kind, arg = inverse[ev.kind], ""
        events.append(Event(ev.obj, kind, arg, t - ev.end, t - ev.start))
    return replace(scene, objects=sts[-1], events=tuple(events))


def permute_scene(scene: Scene, order: Sequence[int]) -> Scene | None:
    """The same events from the same start in ``order`` (placed on the original time slots); ``None`` if invalid."""
    slots = scene.events
    events = tuple(replace(slots[j], start=slot.start, end=slot.end) for j, slot in zip(order, slots, strict=True))
    objs = scene.objects
    for ev in events:
        if not is_valid(objs, ev):
            return None
        objs = apply(objs, ev)
    return replace(scene, events=events)

"""Map a function over items in worker processes that may die, and say which item killed one.

Decoders crash on some damaged files (decord has died with SIGSEGV on a cut-off AVI) and the OOM killer takes
processes that decode huge frames. Run in-process, such a crash ended the shard builder with nothing written;
in a ``multiprocessing.Pool`` it hung the run for ever (the pool waits for a result that never comes). Here each
worker serves one item at a time, so a dead worker names its item: that item gets ``on_crash``'s result, a new
worker takes over, and every other item is mapped as usual. A worker stuck on one item longer than ``timeout``
(a decoder looping on damaged bytes) is killed and counts as dead.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def exit_reason(exitcode: int | None) -> str:
    """How a worker ended, in words: ``"killed by SIGSEGV"``, ``"exited with code 3"``."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exited with code {exitcode}"


def _serve(func: Callable[[Any], Any], items: Sequence[Any], conn: Connection) -> None:
    """Worker loop: receive an index, send back ``(index, func(items[index]))``; ``None`` ends it."""
    while (index := conn.recv()) is not None:
        conn.send((index, func(items[index])))


def _receive(conn: Connection) -> tuple[int, Any] | None:
    """A worker's ``(index, result)``, or ``None`` when its pipe reads as EOF (the worker died)."""
    try:
        return conn.recv()
    except (EOFError, ConnectionError):
        return None


def map_isolated(
    func: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    on_crash: Callable[[T, str], R],
    on_result: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> list[R]:
    """``[func(x) for x in items]`` computed in ``workers`` processes, surviving the death of any of them.

    Args:
        func: Called in a worker on each item; must not raise (exceptions inside are the caller's to catch).
        items: The inputs (inherited by forked workers, pickled once per worker otherwise).
        workers: Number of worker processes (at least 1).
        on_crash: ``on_crash(item, how)`` gives the result of an item whose worker died (``how`` as
            :func:`exit_reason`).
        on_result: Called after each finished item (a progress bar).
        timeout: Seconds one item may take before its worker is killed (``on_crash`` then says
            ``"timed out after N s"``); ``None`` waits for ever.

    Returns:
        The results, in the order of ``items``.
    """
    # fork where available: spawned workers would each re-import the package (and torch, seconds each)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    todo = deque(range(len(items)))
    results: dict[int, R] = {}
    busy: dict[Connection, tuple[Any, int]] = {}  # parent end -> (process, index it works on)
    since: dict[Connection, float] = {}  # parent end -> when its item was given

    def give(conn: Connection, proc: Any) -> None:
        if todo:
            index = todo.popleft()
            conn.send(index)
            busy[conn], since[conn] = (proc, index), time.monotonic()
        else:
            conn.send(None)
            proc.join()
            conn.close()

    def start() -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(func, items, child), daemon=True)
        proc.start()
        child.close()  # the worker's end lives in the worker only: its death reads as EOF here
        give(parent, proc)

    for _ in range(min(workers, len(items))):
        start()
    while busy:
        ready = wait(list(busy), timeout=None if timeout is None else max(0.0, min(since.values()) + timeout
                                                                            - time.monotonic()))
        late = [] if timeout is None else [c for c in busy if c not in ready and
                                           time.monotonic() - since[c] >= timeout]
        for conn in late:
            busy[conn][0].kill()  # its pipe now reads as EOF: handled below as a dead worker
        for conn in [*ready, *late]:
            proc, index = busy.pop(conn)  # type: ignore[index]
            since.pop(conn)  # type: ignore[arg-type]
            message = None if conn in late else _receive(conn)  # type: ignore[arg-type]
            if message is None:
                proc.join()
                conn.close()
                how = f"timed out after {timeout:g} s" if conn in late else exit_reason(proc.exitcode)
                results[index] = on_crash(items[index], how)
                if todo:
                    start()
            else:
                results[message[0]] = message[1]
                give(conn, proc)  # type: ignore[arg-type]
            if on_result is not None:
                on_result()
    return [results[i] for i in range(len(items))]

"""Console logging of the command-line entry points."""

from __future__ import annotations

import logging


def setup_logging(level: int = logging.WARNING, fmt: str | None = None, package_level: int | None = None) -> None:
    """Configure root logging for a command, with Lightning's lines printed once.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own but leaves it propagating,
    so once the root logger has a handler every Lightning line ("GPU available: ...", "`Trainer.fit` stopped")
    is printed twice. Lightning's own handler keeps printing them; the copy sent on to the root is cut.

    Args:
        level: Root level (our modules' records below it are dropped).
        fmt: Record format of the root handler; ``None`` keeps :func:`logging.basicConfig`'s.
        package_level: Level of this package's own records where it differs from ``level`` (``INFO`` shows
            what a run adapted or measured without other libraries' INFO records).
    """
    logging.basicConfig(level=level, **({"format": fmt} if fmt else {}))
    if package_level is not None:
        logging.getLogger("longvivit").setLevel(package_level)
    logging.getLogger("lightning").propagate = False

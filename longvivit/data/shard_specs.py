"""Shard specifications (paths, brace patterns, globs, folders, lists) to the list of shards to read.

Kept apart from the dataset so that a command can check its ``--shards`` before anything heavy loads.
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

from webdataset.shardlists import expand_urls

from longvivit.data.formats import IMAGE_EXTS, VIDEO_EXTS

# Files people pass where shards belong (a manifest, one video): told so instead of "invalid tar header".
NOT_SHARDS = frozenset(("jsonl", "json", "csv", "txt", *VIDEO_EXTS, *IMAGE_EXTS))

ShardSpec = str | Path | Sequence[str | Path]
# What a folder given as shards is read for: webdataset reads gzipped tars as they are.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def file_url_path(url: str) -> str:
    """The local path of a ``file:`` URL (``file:/a``, ``file:///a``, ``file://localhost/a`` -> ``/a``;
    percent-escapes decoded as in ``Path.as_uri()``'s URIs: ``file:///my%20clips`` -> ``/my clips``); other URLs and
    plain paths unchanged.

    webdataset opens ``file:/a`` as the relative path ``a``, and the checks for folders, globs and missing shards
    need the path itself.

    Raises:
        ValueError: For a ``file:`` URL naming another host, which cannot be read from here.
    """
    if not url.startswith("file:"):
        return url
    rest = url.removeprefix("file:")
    if not rest.startswith("//"):
        return unquote(rest)  # file:/abs or file:relative
    host, _, path = rest[2:].partition("/")
    if host not in ("", "localhost"):
        raise ValueError(f"{url} names a file on host {host!r}; only local file: URLs can be read (file:///path)")
    return "/" + unquote(path)


def expand_shards(spec: ShardSpec) -> list[str]:
    """Turn a shard specification into a list of shard paths/URLs, in order.

    Args:
        spec: A path, a brace pattern (``"data/shard-{000000..000009}.tar"``), a local glob
            (``"data/*.tar"``, sorted; quoted on a command line, the shell expands it otherwise), several
            joined with ``"::"``, a local directory (all ``*.tar``, ``*.tar.gz`` and ``*.tgz`` inside, sorted by name),
            or a list of those. A ``file:`` URL (``file:/data/x.tar``, ``file:///data/x.tar``) is the local path it
            names; ``pipe:`` commands and remote URLs are passed to webdataset as written.

    Returns:
        The shard list (duplicates kept: listing a shard twice reads it twice).

    Raises:
        FileNotFoundError: For a local shard that does not exist, a directory without ``.tar`` files, a glob
            that matches nothing or an empty specification.
        ValueError: For a manifest, video or image file given where shards are expected.
    """
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    urls: list[str] = []
    missing: list[str] = []
    for item in items:
        for url in expand_urls(str(item)):
            url = file_url_path(url)
            path = Path(url).expanduser()
            if "://" not in url and path.is_dir():
                tars = sorted(str(p) for p in path.iterdir() if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
                if not tars:
                    raise FileNotFoundError(f"no shards ({', '.join(SHARD_SUFFIXES)}) in directory {path}")
                urls.extend(tars)
            elif "://" not in url and path.suffix.lower().lstrip(".") in NOT_SHARDS:
                raise ValueError(
                    f"{url} is not a webdataset shard (.tar): write shards from a manifest or media with "
                    "`python tools/make_shards.py --manifest FILE --out DIR` and pass DIR"
                )
            elif ":" not in url and not path.exists() and glob.has_magic(url):
                # Local only: "pipe:" and URLs go to webdataset as written.
                matches = sorted(glob.glob(str(path)))
                if not matches:
                    raise FileNotFoundError(f"no shards match {url!r}")
                urls.extend(matches)
            else:
                if "://" not in url and not url.startswith("pipe:") and not path.exists():
                    missing.append(url)
                urls.append(url)
    if missing and len(missing) == len(urls):  # a wrong path: nothing to read
        raise FileNotFoundError(
            f"no shard at {missing[0]}" if len(missing) == 1 else
            f"none of the {len(urls)} shards exists, e.g. {missing[0]}"
        )
    if missing:  # gaps in a large set (a failed download): read the rest, each gap is a recorded skip
        warnings.warn(
            f"{len(missing)} of {len(urls)} shards do not exist (e.g. {missing[0]}); they are skipped",
            RuntimeWarning,
            stacklevel=2,
        )
    if not urls:
        raise FileNotFoundError(f"no shards in {spec!r}")
    return urls

"""WebDataset shards to batches: mixing, splitting, decoding, skipping (shard lists: :mod:`.shard_specs`).

Two regimes share one :class:`ShardDataset`:

* **train** (infinite): every (rank, worker) resamples shards with replacement from each dataset,
  mixes datasets by weight, shuffles raw samples in a buffer (bytes, before decoding, so the buffer is
  cheap; with ``group_by`` adjacent samples sharing that metadata value move through it as one unit, so
  hard-negative pairs land in the same batch), decodes, picks one caption at random and tokenises. Every
  random choice comes from an RNG seeded with ``(seed, modality, rank, worker, epoch, purpose)``, so a run is
  reproducible given its seed and world size, and each epoch draws a fresh stream.
* **eval** (finite, ordered): every sample is yielded exactly once across all ranks and workers,
  whatever the number of shards: whole shards are dealt to (rank, worker) slots when there are at
  least as many shards as slots, otherwise every slot reads every shard and keeps sample ``i`` iff
  ``i % slots == slot`` (only the tar bytes are read twice; decoding is never duplicated). Slots
  without data yield nothing. All captions are kept.

Corrupt samples are skipped, never silently: each is recorded with its key and reason in
:class:`SkipLog`, warned about (the first 5, then every 100th), and above ``max_fail_fraction`` of
the samples seen (after ``min_fail_count`` samples) the iteration raises :class:`TooManyFailuresError`.
Skip records travel to the main process inside batches (field ``"skipped"``) and, at the end of a
stream, in a report-only item that :class:`~longvivit.data.datamodule.ShardLoader` and
:func:`~longvivit.data.clips.load_clips` consume; that item also lists the samples of the other modality that
were passed over (field ``"passed_over"``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from longvivit.config import PreprocessConfig
from longvivit.data.collate import collate
from longvivit.data.decode import DecodeError, Modality, OtherMediaError, SampleError, decode_sample
from longvivit.data.shard_specs import ShardSpec, expand_shards

log = logging.getLogger("longvivit.data")

REPORT_ONLY = "__report_only__"


class TooManyFailuresError(RuntimeError):
    """More than the allowed fraction of samples could not be decoded."""


def _rng(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 inside random.Random: stable across processes and Python runs.
    return random.Random("/".join(str(p) for p in parts))


def _worker_slot(rank: int | None, world_size: int | None) -> tuple[int, int, int, int]:
    """(rank, world_size, worker, num_workers); rank/world discovered (env RANK/WORLD_SIZE, torch.distributed)
    when not given."""
    if rank is None or world_size is None:
        r, ws, _, _ = wds.utils.pytorch_worker_info()
        rank = r if rank is None else rank
        world_size = ws if world_size is None else world_size
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size, worker, num_workers


# ---------------------------------------------------------------------------------------------- skip records
@dataclass
class SkipLog:
    """Counts good and skipped samples of one stream; warns and enforces the failure budget.

    Args:
        max_fail_fraction: Raise once skipped / seen exceeds this (after ``min_fail_count`` seen).
        min_fail_count: Samples to see before the fraction is enforced (small sets are noisy).
        name: Shown in messages (dataset or loader name).
        max_records: Records kept in :attr:`skipped` (the count :attr:`failed` is always exact).

    Samples of the other modality are not failures: they are counted in :attr:`other_media` and passed over (a
    mixed shard feeds both the video and the image loader); their records ride to the reader with the
    end-of-stream report (:meth:`drain_other`).
    """

    max_fail_fraction: float = 0.1
    min_fail_count: int = 20
    name: str = "data"
    max_records: int = 10_000
    ok: int = 0
    failed: int = 0
    other_media: int = 0
    other_in_a_row: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)
    pending_other: list[tuple[str, str]] = field(default_factory=list)

    def success(self) -> None:
        self.ok += 1
        self.other_in_a_row = 0

    def other(self, key: str, reason: str, limit: int = 1000) -> None:
        """Pass over a sample of the other modality; raise if nothing but those arrives."""
        self.other_media += 1
        self.other_in_a_row += 1
        if len(self.pending_other) < self.max_records:  # bounded like the failures
            self.pending_other.append((key, reason))
        if self.other_media == 1:
            log.info("%s: passing over samples of the other modality (first: %s, %s)", self.name, key, reason)
        if self.other_in_a_row >= limit:
            raise TooManyFailuresError(
                f"{self.name}: {self.other_in_a_row} samples in a row were of the other modality ({reason}); "
                "are image shards configured as video shards (or the reverse)?"
            )

    def failure(self, key: str, reason: str) -> None:
        """Record one skipped sample; warn (rate-limited); raise if over budget."""
        self.failed += 1
        record = (key, reason)
        if len(self.skipped) < self.max_records:  # a long run with a bad shard must not grow without bound
            self.skipped.append(record)
        if len(self.pending) < self.max_records:
            self.pending.append(record)
        if self.failed <= 5 or self.failed % 100 == 0:
            log.warning("%s: skipped sample %s (%s) [%d skipped so far]", self.name, key, reason, self.failed)
        seen = self.ok + self.failed
        if seen >= self.min_fail_count and self.failed / seen > self.max_fail_fraction:
            raise TooManyFailuresError(
                f"{self.name}: {self.failed} of {seen} samples could not be used "
                f"(> max_fail_fraction={self.max_fail_fraction}: `longvivit fit --data.max_fail_fraction`, `longvivit "
                f"eval --max-fail-fraction`; make_shards lists bad inputs before training); last: {key}: {reason}"
            )

    def tar_handler(self, exn: Exception) -> bool:
        """webdataset error handler for unreadable shards/members: record, keep going."""
        # webdataset appends the shard URL (and the stream object) to the exception's args.
        texts = [str(a) for a in exn.args if isinstance(a, str | int) and not isinstance(a, bool)]
        url = next((t for t in reversed(texts) if t.startswith("pipe:") or "/" in t or t.endswith(".tar")), "?")
        detail = " ".join(t for t in texts if t != url)
        status = _pipe_status(exn.args)
        # A failed `pipe:` command reads as an "empty file", or as webdataset's own error, depending on which of the
        # reader and the command finished first: its exit status is the reason either way.
        reason = f"the command exited with status {status}" if status else f"{type(exn).__name__}: {detail}"
        self.failure(f"<tar {url}>", reason[:300])
        return True

    def drain(self) -> list[tuple[str, str]]:
        """Records added since the last drain (they ride along with the next batch)."""
        out, self.pending = self.pending, []
        return out

    def drain_other(self) -> list[tuple[str, str]]:
        """Other-modality records added since the last drain (they ride along with the end-of-stream report)."""
        out, self.pending_other = self.pending_other, []
        return out


def _pipe_status(args: Sequence[Any]) -> int | None:
    """Exit status of the ``pipe:`` command among a webdataset error's args (its stream object), if it has ended."""
    import subprocess

    proc = next((getattr(a, "proc", None) for a in args if isinstance(getattr(a, "proc", None), subprocess.Popen)),
                None)
    if proc is None:
        return None
    try:
        return proc.wait(timeout=5.0)  # a command that wrote nothing (the reader saw its end) is ending
    except subprocess.TimeoutExpired:
        return None


# ---------------------------------------------------------------------------------------------- the dataset
class ShardDataset(IterableDataset):
    """Batches (or single samples) from one or several webdataset datasets.

    Args:
        shards: One shard specification (see :func:`expand_shards`), or a list of them. Without
            ``weights`` a list is one dataset; with ``weights`` each entry is its own dataset.
        modality: ``"video"`` or ``"image"``; samples of the other kind are passed over (not failures).
        preprocess: Frames, sampling and normalisation.
        train: Infinite shuffled resampling (True) or ordered exactly-once reading (False).
        weights: Sampling weight of each dataset in training (ignored in eval: all are read once).
        batch_size: Samples per batch; ``None`` yields single decoded samples.
        tokenizer: HF tokenizer for captions (``None``: no token tensors).
        max_text_length: Token budget per caption.
        shuffle_buffer: Raw (encoded) samples held for shuffling in training, per worker (0 disables).
        seed: Base seed of every random choice.
        batches_per_epoch: Training only: batches this dataset yields per epoch in total over all
            workers of a rank (``None``: infinite).
        max_fail_fraction: Failure budget, see :class:`SkipLog`.
        min_fail_count: Samples seen before the budget applies.
        rank: This process's rank (``None``: env ``RANK`` or torch.distributed at iteration time).
        world_size: Number of ranks (``None``: discovered like ``rank``).
        eval_split: ``"shard"``, ``"sample"`` or ``"auto"`` (shards when #shards >= slots).
        num_threads: decord threads per decode.
        name: For messages.
        group_by: Training only: a metadata field (``meta`` of the sample's json, or the json itself), e.g.
            ``"pair_id"``. Adjacent samples (in shard order) with the same non-null value are shuffled as one
            unit and so reach the same batch, except where a batch boundary cuts a group; ``shuffle_buffer``
            then counts groups. The synthetic set writes its order-only training pairs next to each other.
    """

    def __init__(
        self,
        shards: ShardSpec | Sequence[ShardSpec],
        modality: Modality = "video",
        preprocess: PreprocessConfig | None = None,
        train: bool = False,
        weights: Sequence[float] | None = None,
        batch_size: int | None = None,
        tokenizer: Any = None,
        max_text_length: int = 64,
        shuffle_buffer: int = 256,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        max_fail_fraction: float = 0.1,
        min_fail_count: int = 20,
        rank: int | None = None,
        world_size: int | None = None,
        eval_split: Literal["auto", "shard", "sample"] = "auto",
        num_threads: int = 1,
        name: str | None = None,
        group_by: str | None = None,
    ) -> None:
        super().__init__()
        if modality not in ("video", "image"):
            raise ValueError(f"modality must be 'video' or 'image', got {modality!r}")
        if weights is not None:
            specs = [shards] if isinstance(shards, str | Path) else list(shards)
            if len(weights) != len(specs):
                raise ValueError(f"{len(weights)} weights for {len(specs)} datasets")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
            self.datasets = [expand_shards(s) for s in specs]
            self.weights = [float(w) for w in weights]
        else:
            self.datasets, self.weights = [expand_shards(shards)], [1.0]
        if eval_split not in ("auto", "shard", "sample"):
            raise ValueError(f"eval_split must be 'auto', 'shard' or 'sample', got {eval_split!r}")
        self.modality, self.train = modality, train
        self.preprocess = preprocess or PreprocessConfig()
        self.batch_size, self.tokenizer, self.max_text_length = batch_size, tokenizer, max_text_length
        self.shuffle_buffer, self.seed, self.batches_per_epoch = shuffle_buffer, seed, batches_per_epoch
        self.max_fail_fraction, self.min_fail_count = max_fail_fraction, min_fail_count
        self.rank, self.world_size = rank, world_size
        self.eval_split, self.num_threads, self.group_by = eval_split, num_threads, group_by
        self.name = name or f"{modality}-{'train' if train else 'eval'}"
        self.epoch = 0
        self.epoch_started = False  # set by ShardLoader: the next iterator moves to epoch + 1
        # Resume point: (epoch, batches already consumed in that epoch on this rank, raw stream position of each
        # worker role or None for older checkpoints); see datamodule.
        self.resume_at: tuple[int, int, dict[int, int] | None] | None = None
        self.skip_log = SkipLog(max_fail_fraction, min_fail_count, self.name)  # this process's record

    @property
    def urls(self) -> list[str]:
        return [u for d in self.datasets for u in d]

    def set_epoch(self, epoch: int) -> None:
        """Select the training stream of this epoch (seeds include the epoch)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ raw sample streams
    def _train_raw(self, slot: tuple[int, int, int, int], skip_log: SkipLog) -> Iterator[list[dict[str, Any]]]:
        """Training units of raw samples: runs of adjacent samples with the same ``group_by`` value, else single
        samples. Several datasets are mixed unit by unit, so a group never interleaves with another set."""
        rank, _, worker, _ = slot
        base = (self.seed, self.modality, rank, worker, self.epoch)
        streams = [
            self._resampled(urls, _rng(*base, "shards", i), skip_log) for i, urls in enumerate(self.datasets)
        ]
        units = [_grouped(st, self.group_by) if self.group_by else ([sample] for sample in st) for st in streams]
        if len(units) == 1:
            yield from units[0]
            return
        mix = _rng(*base, "mix")
        while True:
            yield next(units[mix.choices(range(len(units)), weights=self.weights)[0]])

    @staticmethod
    def _resampled(urls: list[str], rng: random.Random, skip_log: SkipLog) -> Iterator[dict[str, Any]]:
        empty_in_a_row = 0
        while True:
            got = False
            for sample in wds.tarfile_samples([{"url": rng.choice(urls)}], handler=skip_log.tar_handler):
                got = True
                yield sample
            empty_in_a_row = 0 if got else empty_in_a_row + 1
            if empty_in_a_row >= max(50, 5 * len(urls)):
                raise TooManyFailuresError(
                    f"{skip_log.name}: {empty_in_a_row} shards in a row held no samples"
                )

    def _eval_raw(self, slot: tuple[int, int, int, int], skip_log: SkipLog) -> Iterator[dict[str, Any]]:
        rank, world_size, worker, num_workers = slot
        urls = self.urls
        # rank-major: sample (or shard) i goes to rank i % world_size first, so every rank gets some of a set
        # with at least world_size of them (a rank without a validation batch used to hang DDP's fit)
        slots, me = world_size * num_workers, worker * world_size + rank
        mode = self.eval_split
        if mode == "auto":
            mode = "shard" if len(urls) >= slots else "sample"
        if mode == "shard":
            mine = [{"url": u} for u in urls[me::slots]]
            yield from wds.tarfile_samples(mine, handler=skip_log.tar_handler)
            return
        for i, sample in enumerate(
            wds.tarfile_samples([{"url": u} for u in urls], handler=skip_log.tar_handler)
        ):
            if i % slots == me:
                yield sample

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot = _worker_slot(self.rank, self.world_size)
        rank, world_size, worker, num_workers = slot
        skip_log = (
            self.skip_log
            if get_worker_info() is None
            else SkipLog(
                self.max_fail_fraction, self.min_fail_count, f"{self.name}[rank {rank} worker {worker}]"
            )
        )
        done, positions = self.resume_point()
        # The DataLoader starts every iterator at worker 0, so after a resume at batch `done` this worker serves
        # what worker (worker + done) % W of the uninterrupted run would have served next: it plays that
        # worker's stream (its "role": seeds, shards, resume position).
        role = (worker + done) % num_workers
        # The modality keeps an image and a video stream of one run apart (with one seed they drew the same
        # shard indices and shuffles: the i-th image and clip of each batch came from aligned positions).
        base = (self.seed, self.modality, rank, role, self.epoch)
        first_batch, start = 0, 0
        if self.train:
            units = self._train_raw((rank, world_size, role, num_workers), skip_log)
            if self.group_by:  # groups are shuffled and packed into batches whole
                if self.shuffle_buffer > 1:
                    units = _shuffled(units, self.shuffle_buffer, _rng(*base, "shuffle"))
                if self.batch_size:
                    units = _packed(units, self.batch_size)
            raw = (sample for unit in units for sample in unit)
            if not self.group_by and self.shuffle_buffer > 1:
                raw = _shuffled(raw, self.shuffle_buffer, _rng(*base, "shuffle"))
            first_batch = len(range(role, done, num_workers))
            # Raw samples this role had consumed (checkpoints before stream positions: a batch's worth per batch,
            # which miscounts where samples were skipped or passed over as the other modality).
            start = positions.get(role, 0) if positions is not None else first_batch * (self.batch_size or 1)
            # Fast-forward before decoding: dropping raw samples costs tar reading only.
            for _ in range(start):
                next(raw)
        else:
            raw = self._eval_raw(slot, skip_log)
        preprocess = self.preprocess
        if not self.train and preprocess.start == "random":
            preprocess = dataclasses.replace(preprocess, start="first")  # eval is deterministic
        samples = self._decoded(raw, skip_log, preprocess, base, start)
        if self.batch_size is None:
            out: Iterator[dict[str, Any]] = (sample for _, sample in samples)
        else:
            out = self._batched(samples, skip_log, base, first_batch, role)
        if self.train and self.batches_per_epoch is not None:
            out = _take(out, self._worker_quota(worker, num_workers))
        yield from out
        tail, other = skip_log.drain(), skip_log.drain_other()
        if tail or other:
            yield {REPORT_ONLY: True, "skipped": tail, "passed_over": other}

    def resume_point(self) -> tuple[int, dict[int, int] | None]:
        """(batches consumed on this rank in this epoch before a resume, raw stream position of each role)."""
        if not self.train or not self.resume_at or self.resume_at[0] != self.epoch:
            return 0, None
        return self.resume_at[1], self.resume_at[2]

    def _decoded(
        self,
        raw: Iterator[dict[str, Any]],
        skip_log: SkipLog,
        preprocess: PreprocessConfig,
        base: tuple[Any, ...],
        start: int,
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(stream position after the sample, decoded sample)`` for every usable raw sample.

        Each sample's randomness (a random window start, uniform jitter) comes from its position in the stream,
        so a resumed run that fast-forwards past raw samples draws exactly what the uninterrupted run drew.
        """
        for pos, sample in enumerate(raw, start + 1):
            key = str(sample.get("__key__", "?"))
            try:
                out = decode_sample(sample, self.modality, preprocess, _rng(*base, "decode", pos), self.num_threads)
            except OtherMediaError as err:
                skip_log.other(f"{key} @ {sample.get('__url__', '?')}", str(err))
                continue
            except (DecodeError, SampleError) as err:
                skip_log.failure(f"{key} @ {sample.get('__url__', '?')}", str(err))
                continue
            except Exception as err:  # any decoder surprise is one bad sample, counted against the budget
                skip_log.failure(f"{key} @ {sample.get('__url__', '?')}", f"{type(err).__name__}: {err}")
                continue
            skip_log.success()
            yield pos, out

    def _batched(
        self,
        samples: Iterator[tuple[int, dict[str, Any]]],
        skip_log: SkipLog,
        base: tuple[Any, ...],
        first_batch: int,
        role: int,
    ) -> Iterator[dict[str, Any]]:
        buf: list[dict[str, Any]] = []
        index, pos = first_batch, 0
        for pos, sample in samples:
            buf.append(sample)
            if len(buf) == self.batch_size:
                yield self._collate(buf, skip_log, _rng(*base, "caption", index), (role, pos))
                buf, index = [], index + 1
        if buf and not self.train:  # eval keeps the last partial batch: every sample counts
            yield self._collate(buf, skip_log, _rng(*base, "caption", index), (role, pos))

    def _collate(
        self, buf: list[dict[str, Any]], skip_log: SkipLog, rng: random.Random, stream_pos: tuple[int, int]
    ) -> dict[str, Any]:
        batch = collate(buf, self.modality, self.tokenizer, self.max_text_length, self.train, rng)
        batch["skipped"] = skip_log.drain()
        if self.train:
            batch["stream_pos"] = stream_pos  # (role, raw samples consumed): the loader's resume point
        return batch

    def _worker_quota(self, worker: int, num_workers: int) -> int:
        # The DataLoader takes batches from workers round-robin starting at worker 0 on every new
        # iterator, so in an epoch of n batches worker w serves len(range(w, n, W)) of them.
        total = self.batches_per_epoch or 0
        done, _ = self.resume_point()
        return len(range(worker, max(0, total - done), num_workers))


def _shuffled(src: Iterator[Any], bufsize: int, rng: random.Random) -> Iterator[Any]:
    """Buffer shuffle: fill ``bufsize`` items, then emit a random one for each new arrival."""
    buf: list[Any] = []
    for item in src:
        buf.append(item)
        if len(buf) >= bufsize:
            k = rng.randrange(len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def _group_value(sample: dict[str, Any], key: str) -> Any:
    """``meta[key]`` (or ``key``) of a raw sample's json member; ``None`` when absent or unreadable.

    Unreadable json is not reported here: decoding the sample reports it.
    """
    data = sample.get("json")
    if data is None:
        return None
    try:
        info = json.loads(data)
    except (ValueError, TypeError):
        return None
    if not isinstance(info, dict):
        return None
    meta = info.get("meta")
    value = meta.get(key) if isinstance(meta, dict) else None
    return info.get(key) if value is None else value


def _grouped(src: Iterator[dict[str, Any]], key: str) -> Iterator[list[dict[str, Any]]]:
    """Runs of adjacent raw samples with the same non-null ``key`` value as lists (singletons otherwise)."""
    group: list[dict[str, Any]] = []
    current: Any = None
    seen = found = 0
    for sample in src:
        value = _group_value(sample, key)
        seen, found = seen + 1, found + (value is not None)
        if seen == 1000 and not found:  # a misspelled field groups nothing, silently
            warnings.warn(f"group_by {key!r}: none of the first 1000 training samples has this field in its json or "
                          "its meta: nothing is grouped", RuntimeWarning, stacklevel=2)
        if group and (value is None or value != current):
            yield group
            group = []
        group.append(sample)
        current = value
    if group:
        yield group


def _packed(groups: Iterator[list[Any]], size: int) -> Iterator[list[Any]]:
    """Groups reordered so that batches of ``size`` (cut from the flattened stream) never split one.

    Each group goes where it fits in the batch being filled; one that does not wait for the next batch while
    later (smaller) groups fill the current one. A group larger than a batch starts a batch of its own and spills
    into the next; when nothing waiting fits for ``size`` groups (pairs only, an odd batch), the oldest is split.
    A sample dropped after packing (undecodable, or of the other modality) shifts every later cut by one, so a
    stream with such samples can split pairs after them.
    """
    used, waiting = 0, []
    for group in groups:
        waiting.append(group)
        while waiting:
            i = next((i for i, g in enumerate(waiting) if used == 0 or used + len(g) <= size), None)
            if i is None:
                if len(waiting) <= size:
                    break
                i = 0
            g = waiting.pop(i)
            used = (used + len(g)) % size
            yield g
    yield from waiting


def _take(src: Iterator[Any], n: int) -> Iterator[Any]:
    """The first ``n`` items; stops pulling from ``src`` after that (no decode past the quota)."""
    if n <= 0:
        return
    for i, item in enumerate(src, 1):
        yield item
        if i >= n:
            return

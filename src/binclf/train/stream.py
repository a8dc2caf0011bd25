"""Training on a table larger than memory: streamed passes over a Parquet dataset or CSV.

:func:`train_stream` is ``train_table`` for data that does not fit
(:func:`should_stream` decides). It reads the data in record batches, holding
only bounded buffers, the fitted statistics and the held-out predictions:

1. **column roles** from the first rows (:func:`~binclf.data.schema.infer_schema`
   on a head of at most ``SCHEMA_ROWS`` rows);
2. **pass 1** fits the preprocessing from mergeable one-pass statistics
   (:class:`~binclf.data.sketch.TableStats`: quantile sketches, capped category
   counts, missing counts, label counts) into an ordinary
   :class:`~binclf.data.preprocessing.Preprocessor`, so prediction, the bundle,
   the server and the export are those of an in-memory model;
3. the **split** is by a hash of each row (or of ``id_column``): the same in
   every pass, file order, batch size and process;
4. **training** streams the training rows: the order of the row groups is
   shuffled each epoch and rows are shuffled within a bounded buffer, then
   cut into batches for the trainer's own step loop
   (:meth:`~binclf.train.trainer.Trainer.train_steps`, the fused MLP step);
   early stopping on a (capped) in-memory sample of the validation rows;
5. a last pass predicts the validation and test rows (at most ``held_out_cap``
   each, chosen by hash): calibration and threshold are fitted on the
   validation predictions and the test rows are scored, through the same
   :func:`~binclf.train.pipeline.decide_on_held_out` as in memory.

Streaming trains one network (``mlp``: it takes the fused step directly and
needs no fitted input encoding, which ``ple_mlp`` would have to learn from one
more pass); the in-memory default's cross-fitted ensemble is for tables that fit.

Several processes (``data_parallel``, under torchrun): each rank reads its
shard of the row groups (balanced by rows); pass 1's statistics are merged
through an all-gather of :meth:`~binclf.data.sketch.TableStats.to_arrays`, so
every rank fits the same preprocessing and target; the gradients are averaged
every step by :meth:`binclf.dist.DataParallel.sync_grads` (as in memory); every
rank takes as many steps per epoch as the smallest shard gives; the
validation loss is averaged over all ranks' rows and rank 0 decides when to
stop; the held-out logits are gathered (in the rows' key order), so the
decision is the one a single process would make from the same logits. A
failure reading one rank's shard stops every rank with its message
(:func:`binclf.dist.together`).

With ``checkpoint_dir`` the training state (weights, optimiser moments, best
weights, random state, history, and the fitted preprocessing) is written
atomically after pass 1 and after every epoch; ``resume`` continues from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from binclf import runtime
from binclf.data.preprocessing import Preprocessor
from binclf.data.schema import Schema, infer_schema
from binclf.data.sketch import SKETCH_SIZE, TableStats, _mix, row_keys, split_of
from binclf.data.target import TargetInfo, target_from_counts
from binclf.errors import ConfigError, DataError
from binclf.io.atomic import Layout, write_directory
from binclf.io.dataset import TableSource
from binclf.io.prefetch import prefetch
from binclf.nn.losses import build_loss, resolve_pos_weight
from binclf.nn.models import build_model
from binclf.nn.models.base import init_output_bias
from binclf.numeric import logit, sigmoid
from binclf.predictor import Member, Predictor, member_logits
from binclf.train.trainer import Callback, TrainConfig, Trainer

__all__ = [
    "StreamOptions",
    "collect_stats",
    "default_memory",
    "parse_memory",
    "should_stream",
    "train_stream",
]

# Share of the available RAM that --memory defaults to.
MEMORY_FRACTION = 0.5
SCHEMA_ROWS = 50_000
STREAM_MODELS = ("mlp", "logistic")
CHECKPOINT_STATE = "state.safetensors"
CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_LAYOUT = Layout("binclf checkpoint", CHECKPOINT_META, frozenset({CHECKPOINT_META, CHECKPOINT_STATE}))
_FORMAT = "binclf.checkpoint/1"
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def should_stream(decoded_bytes: int, memory_bytes: int) -> bool:
    """Whether a table of ``decoded_bytes`` must be streamed: training it in memory would exceed ``memory_bytes``.

    The in-memory peak is the measured one (:func:`binclf.train.memory.in_memory_peak_bytes`).
    """
    from binclf.train.memory import fits_in_memory

    return not fits_in_memory(decoded_bytes, memory_bytes)


def parse_memory(text: str, *, option: str = "--memory") -> int:
    """``"500MB"``, ``"4GB"``, ``"1.5G"``, ``"512MiB"`` or a number of bytes -> bytes (units of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{option} must be a size such as 500MB or 4GB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def default_memory() -> int:
    """``MEMORY_FRACTION`` of the memory available now (``MemAvailable``), else of physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_FRACTION)
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_FRACTION)


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """How to stream (what ``TrainOptions`` does not say); sizes are derived from ``memory_bytes`` when None.

    Parameters
    ----------
    memory_bytes : the memory budget the buffers are sized from.
    id_column : split by a hash of this column instead of the whole row.
    checkpoint_dir, resume : where to checkpoint every epoch; continue from there.
    batch_rows : rows per batch read from disk.
    shuffle_rows : rows of the shuffle buffer.
    sketch_size : ``k`` of the quantile sketches.
    held_out_cap : most validation / test rows whose predictions are kept (chosen by hash).
    rank, world_size : this process's shard of the units (see :class:`~binclf.io.dataset.TableSource`).
    """

    memory_bytes: int
    id_column: str | None = None
    checkpoint_dir: str | None = None
    resume: bool = False
    batch_rows: int | None = None
    shuffle_rows: int | None = None
    sketch_size: int = SKETCH_SIZE
    held_out_cap: int = 1_000_000
    rank: int = 0
    world_size: int = 1

    @property
    def buffer_bytes(self) -> int:
        """The part of ``memory_bytes`` the buffers are sized from.

        The rest is the process's fixed overhead, which does not shrink with
        the buffers: freed memory glibc keeps (:func:`binclf.runtime.tune_malloc`)
        and the compiled training step (:data:`binclf.train.memory.IN_MEMORY_OVERHEAD_BYTES`
        in all); at least half the budget.
        """
        from binclf.train.memory import IN_MEMORY_OVERHEAD_BYTES

        return max(self.memory_bytes // 2, self.memory_bytes - IN_MEMORY_OVERHEAD_BYTES)

    def sizes(self, n_columns: int, n_features: int) -> tuple[int, int]:
        """``(batch_rows, shuffle_rows)``: a read batch within 1/16 of the buffers' share, the shuffle buffer 1/8.

        A read batch costs its decoded columns (~24 bytes a value with pandas'
        overhead) and, while it is transformed, its model inputs in float64
        and float32 (12 bytes a feature: one-hot levels make them the larger part).
        """
        budget = self.buffer_bytes
        per_row = 24 * max(n_columns, 1) + (12 * n_features if n_features > 1 else 0)
        batch = self.batch_rows or int(np.clip(budget // 16 // per_row, 1024, 262_144))
        shuffle = self.shuffle_rows or int(np.clip(budget // 8 // (4 * max(n_features, 1)), 4096, 1 << 20))
        return batch, shuffle


# --------------------------------------------------------------------------- the passes
def _keyed(df: pd.DataFrame, *, target: str, key_columns: Sequence[str], options: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows with a target, their keys and splits (0 train, 1 valid, 2 test)."""
    present = df[target].notna().to_numpy()
    if not present.all():
        df = df.loc[present]
    keys = row_keys(df, columns=key_columns)
    split = split_of(keys, valid_fraction=options.valid_fraction, test_fraction=options.test_fraction, seed=options.seed)
    return df, keys, split


def _split_codes(present: np.ndarray, split: np.ndarray) -> np.ndarray:
    """``(n,)`` int8 over every row of a read batch: ``split`` (0 train, 1 valid, 2 test) where ``present``, else 3."""
    codes = np.full(len(present), 3, dtype=np.int8)
    codes[present] = split
    return codes


class _SplitCache:
    """Each read row's split code, kept between passes so that every row is hashed once.

    Codes as :func:`_split_codes` gives them, packed 2 bits a row (5 MB for 20M
    rows), per unit and first row of each read batch (:meth:`TableSource.iter_batches`
    with ``ids=True``). The statistics pass fills it and the epochs read it,
    batches of another size included (they read fewer rows at a time): a
    batch's codes are cut from the stored pieces that cover its rows. At most
    ``max_bytes`` are kept: rows beyond are hashed again in each pass.
    Hashing each row's 50 values was the largest part of the reading thread's
    work per epoch, the thread the training steps wait for (py-spy, 2M x 50
    Parquet, ``--memory 200MB``, AMD EPYC: row_keys 17% of all samples, the
    training steps 16%).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.used = 0
        # unit -> {first row: (rows, low bits, high bits)}
        self._units: dict[Any, dict[int, tuple[int, np.ndarray, np.ndarray]]] = {}

    def put(self, batch_id: tuple, codes: np.ndarray) -> None:
        unit, start = batch_id
        size = 2 * ((len(codes) + 7) // 8)
        pieces = self._units.setdefault(unit, {})
        if start in pieces or self.used + size > self.max_bytes:
            return
        c = codes.astype(np.uint8)
        pieces[start] = (len(codes), np.packbits(c & 1), np.packbits(c >> 1))
        self.used += size

    def get(self, batch_id: tuple, n: int) -> np.ndarray | None:
        """Codes of the ``n`` rows of ``batch_id``, or None when some of them are not stored."""
        unit, start = batch_id
        pieces = self._units.get(unit)
        if not pieces:
            return None
        out = np.empty(n, dtype=np.int8)
        pos, end = start, start + n
        firsts = sorted(pieces)  # a few per unit
        while pos < end:
            k = int(np.searchsorted(firsts, pos, side="right")) - 1
            if k < 0:
                return None
            first = firsts[k]
            rows, lo, hi = pieces[first]
            a, b = pos - first, min(end - first, rows)
            if a >= rows:
                return None
            byte = a // 8
            lo_bits = np.unpackbits(lo[byte : (b + 7) // 8], count=b - 8 * byte)[a - 8 * byte :]
            hi_bits = np.unpackbits(hi[byte : (b + 7) // 8], count=b - 8 * byte)[a - 8 * byte :]
            out[pos - start : pos - start + (b - a)] = lo_bits | (hi_bits << 1)
            pos = first + b
        return out

    def codes(self, batch_id: tuple, df: pd.DataFrame, compute: Callable[[pd.DataFrame], np.ndarray]) -> np.ndarray:
        """The batch's codes from the cache, else ``compute(df)`` (kept while there is room)."""
        codes = self.get(batch_id, len(df))
        if codes is None:
            codes = compute(df)
            self.put(batch_id, codes)
        return codes


def _position_keys(batch_id: tuple, n: int) -> np.ndarray:
    """A uint64 key for each of a read batch's ``n`` rows from where it lies, not what it holds.

    ``batch_id`` is :meth:`TableSource.iter_batches`' ``(unit, first row)``:
    the same rows get the same keys in every pass that reads with the same
    batch size (every epoch), without reading their values. The early-stopping
    sample of the validation rows is drawn with them: drawing it by
    :func:`row_keys` hashed each validation row's 50 values again every epoch,
    8% of a 1-epoch streaming run's samples (py-spy, 2M x 50 Parquet,
    ``--memory 200MB``, AMD EPYC).
    """
    unit, start = batch_id
    digest = hashlib.blake2b(repr(unit).encode(), digest_size=8).digest()
    rows = np.arange(start, start + n, dtype=np.uint64)
    return _mix(rows ^ np.uint64(int.from_bytes(digest, "little")))


def _keep_share(keys: np.ndarray, share: float) -> np.ndarray:
    """Rows kept by a hash-drawn ``share`` in (0, 1] (a sample the same in every pass)."""
    if share >= 1.0:
        return np.ones(len(keys), dtype=bool)
    return (_mix(keys ^ np.uint64(0xCA9)) >> np.uint64(11)).astype(np.float64) * 2.0**-53 < share


def collect_stats(
    source: TableSource, schema: Schema, options: Any, stream: StreamOptions, *, columns: list[str],
    key_columns: list[str], batch_rows: int, column_types: dict[str, str] | None = None,
    splits: _SplitCache | None = None,
) -> TableStats:
    """Pass 1 over this rank's shard: :class:`TableStats` of its training rows.

    Rows are split by :func:`~binclf.data.sketch.row_keys` of ``key_columns``;
    ``stats.labels`` counts every row with a target (per split) and, in
    ``n_missing``, the rows without one; ``stats.missing_cells`` the missing
    cells of every row. Ranks merge their results with ``TableStats.merge``
    (``train_stream``'s ``gather`` does it).
    """
    stats = TableStats(numeric=schema.numeric, categorical=schema.categorical, sketch_size=stream.sketch_size)
    for batch_id, df in source.iter_batches(batch_rows=batch_rows, columns=columns, rank=stream.rank,
                                            world_size=stream.world_size, column_types=column_types, ids=True):
        stats.count_missing(df)
        n_before = len(df)
        present = df[options.target].notna().to_numpy()
        df, keys, split = _keyed(df, target=options.target, key_columns=key_columns, options=options)
        stats.labels.n_missing += n_before - len(df)
        stats.update(df, target=options.target, keys=keys, split=split)
        if splits is not None:
            splits.put(batch_id, _split_codes(present, split))
    return stats


class _ShuffleBuffer:
    """Rows gathered until ``capacity``, then given out as shuffled batches of ``batch_size``.

    A drain joins the rows into one array kept from drain to drain and gathers
    each batch from it by the permutation: the same batches as shuffling the
    joined rows and slicing, without a second buffer-sized array. Both were
    fresh allocations above glibc's mmap threshold every drain, paged in
    again each time (the buffer is up to 1/8 of --memory).
    """

    def __init__(self, capacity: int, batch_size: int, rng: np.random.Generator) -> None:
        self.capacity, self.batch_size, self.rng = capacity, batch_size, rng
        self.X: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.n = 0
        self.given = 0  # batches given out
        self._joined: dict[str, np.ndarray] = {}  # the drains' arrays, reused

    def add(self, X: np.ndarray, y: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        self.X.append(X)
        self.y.append(y)
        self.n += len(y)
        if self.n >= self.capacity:
            yield from self._drain(keep_partial=True)

    def flush(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        """The rest, shuffled; a last partial batch only if no full one was given (else it is dropped).

        Dropped because every batch shape costs oneDNN a compiled kernel kept
        in its cache (~1.5 MB each): a last batch of a different size every
        epoch would grow memory with the epochs. The dropped rows differ each
        epoch (they are shuffled).
        """
        yield from self._drain(keep_partial=self.given > 0)

    def _join(self, name: str, parts: list[np.ndarray]) -> np.ndarray:
        """``parts`` as one array, in the reused array ``name`` (grown when a drain holds more rows)."""
        if len(parts) == 1:
            return parts[0]
        n = sum(len(p) for p in parts)
        buf = self._joined.get(name)
        if buf is None or len(buf) < n or buf.shape[1:] != parts[0].shape[1:] or buf.dtype != parts[0].dtype:
            buf = self._joined[name] = np.empty((max(n, self.capacity + self.batch_size), *parts[0].shape[1:]),
                                                dtype=parts[0].dtype)
        return np.concatenate(parts, out=buf[:n])

    def _drain(self, *, keep_partial: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        if not self.n:
            return
        perm = self.rng.permutation(self.n)
        X, y = self._join("X", self.X), self._join("y", self.y)
        n, self.X, self.y, self.n = len(y), [], [], 0
        full = (n // self.batch_size) * self.batch_size if keep_partial else n
        for lo in range(0, full, self.batch_size):
            self.given += 1
            rows = perm[lo : lo + self.batch_size]
            # Each batch its own (small) array: nothing given out lives in the reused ones.
            yield torch.from_numpy(X[rows]), torch.from_numpy(y[rows]), None
        if full < n:  # the remainder waits for the next rows (copied out of the reused arrays)
            rows = perm[full:]
            self.X, self.y, self.n = [X[rows]], [y[rows]], n - full


_PAD_ROWS = 512


def _logits(member: Member, X: np.ndarray) -> np.ndarray:
    """float32 logits ``(n,)`` of ``X`` ``(n, d)``, computed on rows padded to a multiple of ``_PAD_ROWS``.

    Held-out batches have every possible row count, and oneDNN compiles and
    caches a kernel per shape (measured: +320 MB over 200 batches of 2M rows);
    padding bounds the shapes to a handful.
    """
    n = len(X)
    padded = -(-n // _PAD_ROWS) * _PAD_ROWS
    if padded != n:
        X = np.concatenate([X, np.zeros((padded - n, X.shape[1]), dtype=X.dtype)])
    return member_logits([member], X)[:n].astype(np.float32)


def _check_same_model(model: torch.nn.Module, gather: Callable[[Any], list]) -> None:
    """Every rank ends with the same weights (averaged gradients, averaged BatchNorm statistics), or an error.

    The held-out logits of every rank are read as one model's: a rank that
    drifted (a gradient left out of the average) would make them a mix.
    """
    state = torch.cat([v.detach().double().reshape(-1) for v in model.state_dict().values() if v.is_floating_point()])
    sums = gather((float(state.sum()), float(state.abs().sum())))
    if any(s != sums[0] for s in sums):
        raise RuntimeError(f"the ranks' models differ after training ({sums}): the gradient average failed")


def _held_out(parts: tuple[list, list, list], *, gather: Callable[[Any], list] | None) -> tuple[np.ndarray, np.ndarray]:
    """One split's held-out ``(logits (n,), labels (n,))`` over every rank, in the order of the rows' keys.

    Ordered by key (:func:`_position_keys`: a row's file, row group and row),
    not by when the rows were read, so that every process count and file
    order hands calibration, threshold and the bootstrap the same rows in the
    same order (the same decision from the same logits; a CSV's rows are
    placed by read batch, so there with the same ``--memory`` per process).
    Keys by place, not by :func:`row_keys` of the values: hashing the held-out
    rows' values was 14.5% of a streaming run's samples (py-spy, 2M x 50
    Parquet, ``--memory 200MB``, 1 epoch).
    """
    z, y, k = (np.concatenate(p) if p else np.empty(0, t) for p, t in zip(parts, (np.float32, np.float32, np.uint64)))
    if gather is not None:
        every = gather((z, y, k))
        z, y, k = (np.concatenate([e[i] for e in every]) for i in range(3))
    order = np.argsort(k, kind="stable")
    return z[order], y[order]


# --------------------------------------------------------------------------- checkpoints
def _opt_params(opt: Any) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def _save_checkpoint(
    directory: Path, *, meta: dict[str, Any], model: torch.nn.Module | None = None, opt: Any = None,
    best_state: dict[str, torch.Tensor] | None = None,
) -> None:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {"rng": torch.get_rng_state()}
    if model is not None:
        tensors.update({f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    if best_state is not None:
        tensors.update({f"best.{k}": v.clone() for k, v in best_state.items()})
    if opt is not None:
        for i, p in enumerate(_opt_params(opt)):
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{i}.{k}"] = v.detach().clone().reshape(v.shape)
    files = {CHECKPOINT_META: json.dumps(meta, indent=1).encode(), CHECKPOINT_STATE: save(tensors)}
    write_directory(directory, files, layout=CHECKPOINT_LAYOUT, force=True, option="--checkpoint-dir")


def _load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    from safetensors.torch import load

    meta_path = directory / CHECKPOINT_META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load((directory / CHECKPOINT_STATE).read_bytes())
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{directory}: the checkpoint cannot be read ({exc}); remove it and start again") from exc
    if meta.get("format") != _FORMAT:
        raise DataError(f"{directory}: not a {_FORMAT} checkpoint (format {meta.get('format')!r}); remove it")
    return meta, tensors


def _fingerprint(source: TableSource, options: Any, stream: StreamOptions) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the data and the options that shape the model."""
    opts = {k: v for k, v in options.to_dict().items() if k not in ("max_epochs", "patience", "n_boot")}
    return {"data": str(Path(source.path).resolve()), "rows": source.num_rows, "columns": source.columns,
            "options": opts, "id_column": stream.id_column, "world_size": stream.world_size}


# --------------------------------------------------------------------------- the fit
@runtime.entry_point("train")
def train_stream(
    path: str | Path | TableSource,
    options: Any,
    stream: StreamOptions,
    *,
    sep: str | None = None,
    encoding: str | None = None,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Callback] = (),
    gather: Callable[[dict[str, np.ndarray]], list[dict[str, np.ndarray]]] | None = None,
    data_parallel: Any = None,
) -> Any:
    """Train on a dataset read in batches (see the module docstring); returns a ``TrainResult``.

    Parameters
    ----------
    path : a Parquet file, a directory of Parquet files, a CSV, or an open :class:`TableSource`.
    options : TrainOptions
        As for :func:`~binclf.train.pipeline.train_table`; ``model`` ``auto`` becomes ``mlp``.
    stream : StreamOptions
    sep, encoding : CSV reading.
    log : receives one-line notes.
    callbacks : called as ``cb(trainer, epoch_log)`` after each epoch (and its checkpoint); ``True`` stops.
    gather : with several ranks (``stream.world_size``), a function returning every rank's
        ``TableStats.to_arrays()`` (an all-gather): pass 1's statistics are merged from them.
        With ``data_parallel`` it defaults to :func:`binclf.dist.all_gather_object`.
    data_parallel : :class:`binclf.dist.DataParallel` (:func:`binclf.dist.data_parallel` under torchrun)
        Train on several ranks: ``stream.rank`` / ``world_size`` become the process group's; each
        rank reads its shard, the gradients are averaged every step (``sync_grads``), every rank
        takes the same number of steps per epoch (as many as the smallest shard gives) with
        ``ceil(batch_size / world_size)`` rows each, the validation loss is averaged over every
        rank's rows and rank 0 decides when to stop; the held-out logits are gathered, so every
        rank fits the same calibration and threshold. Only rank 0 logs and writes checkpoints.

    Returns
    -------
    TrainResult
    """
    from binclf.dist.collectives import (
        all_gather_object,
        broadcast_object,
        main_only,
        together,
    )
    from binclf.train.pipeline import (
        TrainResult,
        _model_config,
        _training_threads,
        decide_on_held_out,
    )

    t0 = time.perf_counter()
    dp = data_parallel
    if dp is not None:
        stream = replace(stream, rank=dp.ctx.rank, world_size=dp.ctx.world_size)
        gather = gather or all_gather_object
    say = log if (log is not None and stream.rank == 0) else (lambda _msg: None)
    source = path if isinstance(path, TableSource) else TableSource.open(path, sep=sep, encoding=encoding)
    notices: list[str] = []
    if options.model == "auto":
        options = replace(options, model="mlp")
    if options.model not in STREAM_MODELS:
        raise ConfigError(f"--model {options.model} cannot stream; use one of {', '.join(STREAM_MODELS)}")
    if options.sampler is not None:
        raise ConfigError("--sampler balanced cannot stream; use --pos-weight balanced instead")
    if dp is not None and dp.ctx.device != "cpu":
        raise ConfigError("streamed training runs on the CPU (gloo between processes): drop --device cuda")
    if stream.world_size > 1 and gather is None:
        raise ConfigError("streaming on several ranks needs data_parallel= (binclf.dist.data_parallel()) or gather=")
    if stream.id_column is not None and stream.id_column not in source.columns:
        raise DataError(f"{source.path}: --id-column {stream.id_column!r} is not a column; the columns are {source.columns}")

    # Column roles from the first rows (every rank reads the same ones).
    head = source.head(SCHEMA_ROWS)
    head = head.loc[head[options.target].notna()] if options.target in head.columns else head
    schema, schema_notices = infer_schema(
        head, target=options.target, drop=tuple(options.drop) + ((stream.id_column,) if stream.id_column else ()),
        categorical=options.categorical, numeric=options.numeric, text=options.text,
    )
    del head
    if schema.text:
        raise ConfigError(
            f"free-text column(s) {', '.join(map(repr, schema.text))} cannot stream; "
            "drop them (--drop) or treat them as categories (--categorical)"
        )
    key_columns = [stream.id_column] if stream.id_column else list(source.columns)
    columns = list(dict.fromkeys([*schema.names, options.target, *key_columns]))
    column_types = {**dict.fromkeys(schema.numeric, "numeric"), **dict.fromkeys(schema.categorical, "categorical")}
    batch_rows, _ = stream.sizes(len(columns), 1)
    # 2 bits a row of this rank's shard, within 1/32 of the buffers' share of --memory (19 MB = 78M rows at 1 GB).
    splits = _SplitCache(stream.buffer_bytes // 32)

    def split_codes(df: pd.DataFrame) -> np.ndarray:
        present = df[options.target].notna().to_numpy()
        keys = row_keys(df if present.all() else df.loc[present], columns=key_columns)
        split = split_of(keys, valid_fraction=options.valid_fraction, test_fraction=options.test_fraction,
                         seed=options.seed)
        return _split_codes(present, split)

    ckpt_dir = Path(stream.checkpoint_dir) if stream.checkpoint_dir else None
    fingerprint = _fingerprint(source, options, stream)
    checkpoint = None
    if ckpt_dir is not None:
        with together():  # rank 0 holds the checkpoints (it alone writes them) and hands them out
            found = _load_checkpoint(ckpt_dir) if stream.rank == 0 else None
        found = broadcast_object(found)
        if found is not None and not stream.resume:
            raise ConfigError(
                f"--checkpoint-dir {ckpt_dir} already holds a checkpoint; pass --resume to continue it, "
                "or choose another directory"
            )
        if found is not None:
            made_by = found[0]["fingerprint"].get("world_size", 1)
            if made_by != stream.world_size:
                raise ConfigError(
                    f"the checkpoint in {ckpt_dir} was made by {made_by} process(es), this run has "
                    f"{stream.world_size}: resume with the same number of processes (--nproc {made_by})"
                    if made_by > 1 else
                    f"the checkpoint in {ckpt_dir} was made by 1 process, this run has {stream.world_size}: "
                    "resume it without --nproc (or torchrun)"
                )
            if found[0]["fingerprint"] != fingerprint:
                raise ConfigError(
                    f"the checkpoint in {ckpt_dir} was made for other data or options; resume with the same "
                    "command, or start again in another --checkpoint-dir"
                )
            checkpoint = found
        elif stream.resume:
            notices.append(f"no checkpoint in {ckpt_dir} yet: starting from the beginning")

    if checkpoint is not None:
        meta, tensors = checkpoint
        prep = Preprocessor.from_dict(meta["preprocessor"])
        target = TargetInfo.from_dict(meta["target"])
        counts = meta["counts"]
        summary_columns = meta["summary_columns"]
        stats_seconds = meta["stats_seconds"]
        rank_train_rows = meta.get("rank_train_rows") or [sum(counts["train"])]
        notices += meta["notices"]
        say(f"resuming from {ckpt_dir} after epoch {meta['epoch']}")
    else:
        tp = time.perf_counter()
        with together():  # a damaged row group in one rank's shard stops every rank, with its message
            stats = collect_stats(source, schema, options, stream, columns=columns, key_columns=key_columns,
                                  batch_rows=batch_rows, column_types=column_types if source.kind == "csv" else None,
                                  splits=splits)
        rank_train_rows = [stats.labels.rows(0)]
        if gather is not None:  # every rank's statistics, merged in rank order: the same on every rank
            parts = [TableStats.from_arrays(arrays) for arrays in gather(stats.to_arrays())]
            rank_train_rows = [part.labels.rows(0) for part in parts]  # what each rank trains on
            stats = parts[0]
            for part in parts[1:]:
                stats.merge(part)
            del parts
        missing = dict(zip(stats.columns, stats.missing_cells.tolist()))
        if stats.labels.n_missing and not options.drop_missing_target:
            raise DataError(
                f"{source.path}: target column {options.target!r} has {stats.labels.n_missing} missing value(s); "
                "fill them in, or drop those rows with --drop-missing-target"
            )
        target, why = target_from_counts(stats.labels.series(), column=options.target, positive=options.positive)
        counts = {
            name: [stats.labels.count(target.negative, i), stats.labels.count(target.positive, i)]
            for i, name in enumerate(("train", "valid", "test"))
        }
        for name, (neg, pos) in counts.items():
            if neg == 0 or pos == 0:
                raise DataError(
                    f"the {name} split has only one class ({neg + pos} rows): the data is too small or too "
                    "imbalanced to split; provide more rows of the rarer class"
                )
        if stats.labels.n_missing:
            notices.append(f"{stats.labels.n_missing} row(s) with a missing {options.target!r} dropped")
        notices.append(
            f"positive class of {options.target!r}: {target.positive!r} ({why}; {target.n_positive} of "
            f"{target.n_positive + target.n_negative} rows); pass --positive {target.negative} for the other class"
        )
        notices += schema_notices
        prep = Preprocessor(schema=schema, numeric=options.numeric_scaling).fit_from_summaries(
            numeric=stats.numeric, categorical=stats.categorical
        )
        summary_columns = [
            {"name": spec.name, "role": spec.role, "dtype": spec.dtype, "missing": missing[spec.name],
             # distinct: levels of the training rows (categories), values in the sketch's sample (numbers)
             "distinct": len(stats.categorical[schema.categorical.index(spec.name)].counts())
             if spec.role == "categorical" else int(np.unique(stats.numeric[schema.numeric.index(spec.name)].sample()).size)}
            for spec in schema.columns
        ]
        del stats
        stats_seconds = time.perf_counter() - tp
    for n in notices:
        say(n)
    if checkpoint is None:
        say(f"statistics pass: {stats_seconds:.1f} s over {sum(sum(c) for c in counts.values())} rows")

    n_train = sum(counts["train"])
    n_valid = sum(counts["valid"])
    n_test = sum(counts["test"])
    prior = counts["train"][1] / n_train
    cfg = TrainConfig.from_settings(options, n_train=n_train, verbose=False)
    d = prep.n_features_out_
    batch_rows, shuffle_rows = stream.sizes(len(columns), d)
    config = _model_config(options, d)
    model = build_model(options.model, seed=options.seed, **config)
    say(
        f"streaming {options.model} on {n_train} rows x {d} features (validation {n_valid}, test {n_test}); "
        f"batches of {cfg.batch_size}, shuffle buffer {shuffle_rows} rows"
    )

    trainer = Trainer(cfg, callbacks=callbacks)
    # Rows per step on this rank (the global batch is cfg.batch_size) and, on several ranks, the steps
    # every rank takes per epoch: as many full batches as the smallest shard gives (a collective per step
    # needs every rank there; the larger shards' extra rows, different ones each epoch, wait a turn).
    batch_size = cfg.batch_size if dp is None else dp.batch_per_rank(cfg.batch_size)
    step_limit = None
    if dp is not None:
        if min(rank_train_rows) < batch_size:
            r = int(np.argmin(rank_train_rows))
            raise DataError(
                f"{source.path}: rank {r} of {stream.world_size} holds {rank_train_rows[r]} training rows, fewer "
                f"than one batch of {batch_size} per process: use fewer processes or a smaller --batch-size"
            )
        step_limit = min(rows // batch_size for rows in rank_train_rows)
        left_out = n_train - step_limit * batch_size * stream.world_size
        note = (
            f"{stream.world_size} processes ({dp.ctx.backend}): each reads its share of the "
            f"{'rows' if source.kind == 'csv' else 'row groups'} and takes "
            f"{step_limit} steps of {batch_size} rows per epoch (global batch {cfg.batch_size}), gradients "
            f"averaged every step" + (f"; {left_out} training rows ({100 * left_out / n_train:.2g}%) beyond the "
                                      "equal steps wait each epoch, other ones each time" if left_out else "")
        )
        if source.kind == "csv":
            note += "; every process parses the whole CSV (convert it to Parquet for each to read only its own)"
        if note not in notices:  # a resumed run has it from its checkpoint (and has said it)
            notices.append(note)
            say(note)
    es_cap = max(1, min(stream.held_out_cap, stream.buffer_bytes // 8 // (4 * max(d, 1))))
    es_share = min(1.0, es_cap / max(n_valid, 1))
    # Held-out rows kept: ~40 bytes each for logits, labels, probabilities and the report's curves.
    held_cap = max(1000, min(stream.held_out_cap, stream.buffer_bytes // 64))
    held_share = min(1.0, held_cap / max(n_valid, 1))
    test_share = min(1.0, held_cap / max(n_test, 1))

    def read(epoch: int) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Each read batch and its rows' split codes."""
        for batch_id, df in source.iter_batches(batch_rows=batch_rows, columns=columns, rank=stream.rank,
                                                world_size=stream.world_size, seed=options.seed * 100_003 + epoch,
                                                column_types=column_types if source.kind == "csv" else None,
                                                ids=True):
            yield batch_id, df, splits.codes(batch_id, df, split_codes)

    def prepared(epoch: int, with_valid: bool) -> Iterator[tuple[tuple | None, tuple | None]]:
        """Each read batch's ``(training part, validation sample part)``, transformed: ``(X, y)`` or None.

        Reading runs on a thread of its own, one batch ahead of the transform (on the
        thread of :func:`batches_of`'s prefetch): reading and transforming a batch cost
        about twice a batch's training steps, so one thread for both kept the steps
        waiting (py-spy, 2M x 50 Parquet, ``--memory 200MB``).
        """
        for batch_id, df, codes in prefetch(read(epoch)):
            valid = None
            if with_valid:
                take = codes == 1
                if es_share < 1 and take.any():  # drawn by the rows' places, the same in every epoch
                    take[take] = _keep_share(_position_keys(batch_id, len(df))[take], es_share)
                if take.any():
                    valid = (prep.transform(df, rows=take), target.encode(df[options.target][take]))
            # The rows kept are cut from the parsed columns (transform's rows=), not from a copied frame.
            train = codes == 0
            yield (prep.transform(df, rows=train), target.encode(df[options.target][train])) if train.any() else None, valid

    def batches_of(epoch: int, valid_out: list | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        """The epoch's training batches (at most ``step_limit``); collects the validation sample into ``valid_out``.

        Reading and transforming run one batch ahead on a background thread
        (pyarrow and numpy release the GIL), beside the training steps.
        """
        rng = np.random.default_rng([options.seed, epoch, *([stream.rank] if stream.rank else [])])
        buf = _ShuffleBuffer(shuffle_rows, batch_size, rng)
        given = 0
        for train_part, valid_part in prefetch(prepared(epoch, valid_out is not None)):
            done = step_limit is not None and given >= step_limit
            if done and valid_out is None:
                return
            if valid_part is not None:
                valid_out.append(valid_part)
            if train_part is not None and not done:
                for batch in buf.add(*train_part):
                    yield batch
                    given += 1
                    if step_limit is not None and given >= step_limit:
                        break  # the rest of the shard is read for validation rows only (first epoch)
        for batch in buf.flush():
            if step_limit is not None and given >= step_limit:
                break
            yield batch
            given += 1

    device = torch.device("cpu")
    pos_weight = cfg.pos_weight
    if pos_weight == "balanced":
        pos_weight = counts["train"][0] / max(counts["train"][1], 1)
    trainer.pos_weight_ = resolve_pos_weight(pos_weight)
    loss_fn = build_loss(cfg.loss, pos_weight=trainer.pos_weight_, focal_alpha=cfg.focal_alpha,
                         focal_gamma=cfg.focal_gamma)
    trainer.train_prior_ = prior
    trainer.logit_shift_ = trainer._logit_shift(prior)
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_loss, best_epoch, bad_epochs, start = math.inf, 0, 0, 1
    X_es = y_es = None

    def meta_at(epoch: int) -> dict[str, Any]:
        return {"format": _FORMAT, "fingerprint": fingerprint, "epoch": epoch, "history": history,
                "best_epoch": best_epoch, "best_valid_loss": best_loss if math.isfinite(best_loss) else None,
                "bad_epochs": bad_epochs, "preprocessor": prep.to_dict(), "target": target.to_dict(),
                "counts": counts, "summary_columns": summary_columns, "notices": notices,
                "stats_seconds": stats_seconds, "rank_train_rows": rank_train_rows}

    save_checkpoint = main_only(_save_checkpoint)  # rank 0 writes; a failed write stops every rank

    with runtime.session(purpose="train", threads=_training_threads()), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if 0.0 < prior < 1.0 and cfg.loss != "hinge":
            init_output_bias(model, float(sigmoid(logit(prior, eps=0.0) + trainer.logit_shift_)))
        steps_per_epoch = math.ceil(n_train / cfg.batch_size) if step_limit is None else step_limit
        opt, opt_step, fused, sched = trainer._step_parts(model, loss_fn, device, n_train, True, steps_per_epoch)
        if checkpoint is not None:
            meta, tensors = checkpoint
            if meta["epoch"] > 0:
                model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
                params = _opt_params(opt)
                for key, v in tensors.items():
                    if key.startswith("opt."):
                        _, i, name = key.split(".", 2)
                        opt.state.setdefault(params[int(i)], {})[name] = v.clone()
                best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
                best_state = best or None
                torch.set_rng_state(tensors["rng"])
            history = list(meta["history"])
            best_epoch, bad_epochs = meta["best_epoch"], meta["bad_epochs"]
            best_loss = math.inf if meta["best_valid_loss"] is None else meta["best_valid_loss"]
            start = meta["epoch"] + 1
        elif ckpt_dir is not None:
            save_checkpoint(ckpt_dir, meta=meta_at(0))  # pass 1 is never repeated
        if dp is not None:  # rank 0's weights on every rank; each rank its own dropout keys
            dp.start(model, seed=cfg.seed)
        epoch = start - 1
        try:
            stopped = bool(history) and (bad_epochs >= cfg.patience)
            for epoch in range(start, cfg.max_epochs + 1):
                if stopped:
                    break
                te = time.perf_counter()
                model.train()
                valid_parts: list | None = [] if X_es is None else None
                step_losses = trainer.train_steps(model, batches_of(epoch, valid_parts), loss_fn=loss_fn, opt=opt,
                                                  opt_step=opt_step, fused=fused, sched=sched,
                                                  grad_sync=None if dp is None else dp.sync_grads)
                if len(step_losses) == 0:
                    raise DataError(f"{source.path}: no training rows were read in epoch {epoch}")
                if dp is not None:  # BatchNorm statistics and step losses averaged: the ranks stay identical
                    step_losses = dp.end_epoch(model, step_losses)
                trainer._check_finite(step_losses, epoch)
                if fused is not None and trainer._compile_from_now(n_train, epoch, True):
                    fused.compile_from_now()
                if valid_parts is not None:
                    X_es = np.concatenate([p[0] for p in valid_parts]) if valid_parts else np.empty((0, d), np.float32)
                    y_es = np.concatenate([p[1] for p in valid_parts]) if valid_parts else np.empty(0, np.float32)
                    del valid_parts
                entry = {"epoch": epoch, "train_loss": float(step_losses.mean()), "lr": opt.param_groups[0]["lr"]}
                tv = time.perf_counter()
                if dp is None:
                    valid_loss = trainer._evaluate(model, loss_fn, torch.from_numpy(X_es), torch.from_numpy(y_es), None)
                else:  # each rank's validation sample is from its shard: the mean over all of them
                    mean = (trainer._mean_loss(model, loss_fn, torch.from_numpy(X_es), torch.from_numpy(y_es), None)
                            if len(y_es) else 0.0)
                    valid_loss = dp.mean_over_ranks(mean, len(y_es))
                entry["valid_loss"] = valid_loss
                entry["valid_seconds"] = time.perf_counter() - tv
                if valid_loss < best_loss - cfg.min_delta:
                    best_loss, best_epoch, bad_epochs = valid_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_epochs += 1
                entry["seconds"] = time.perf_counter() - te
                history.append(entry)
                say(f"epoch {epoch}: train loss {entry['train_loss']:.4f}, validation loss {valid_loss:.4f} "
                    f"({entry['seconds']:.1f} s)")
                if ckpt_dir is not None:
                    save_checkpoint(ckpt_dir, meta=meta_at(epoch), model=model, opt=opt, best_state=best_state)
                trainer.history_ = history
                stop = any(cb(trainer, entry) for cb in trainer.callbacks) or bad_epochs >= cfg.patience
                if dp is not None:
                    stop = dp.agree(stop)  # decided once, by rank 0
                if stop:
                    break
        except KeyboardInterrupt:
            if ckpt_dir is not None:
                say(f"interrupted in epoch {epoch}: the checkpoint in {ckpt_dir} holds the run up to epoch "
                    f"{epoch - 1}; run the same command with --resume to continue")
            raise
        finally:
            # FusedAdamW steps every parameter in one flat buffer; each gets its own storage back.
            release = getattr(opt, "release", None)
            if release is not None:
                release()
        if best_state is not None:
            model.load_state_dict(best_state)
        if dp is not None:
            _check_same_model(model, all_gather_object)
        model.eval()
        runtime.note_fit("autograd step" if fused is None else "fused step", torch.get_num_threads())

        # The held-out rows' logits (float32, at most held_out_cap per split), one last pass.
        member = Member(options.model, config, model, 1.0, trainer.logit_shift_)
        held: dict[int, tuple[list, list, list]] = {1: ([], [], []), 2: ([], [], [])}
        with together():
            for batch_id, df in source.iter_batches(batch_rows=batch_rows, columns=columns, rank=stream.rank,
                                                    world_size=stream.world_size, ids=True,
                                                    column_types=column_types if source.kind == "csv" else None):
                codes = splits.codes(batch_id, df, split_codes)
                for s, share in ((1, held_share), (2, test_share)):
                    take = codes == s
                    if not take.any():
                        continue
                    keys = _position_keys(batch_id, len(df))[take]
                    keep = _keep_share(keys, share)
                    take[take] = keep
                    if take.any():
                        held[s][0].append(_logits(member, prep.transform(df, rows=take)))
                        held[s][1].append(target.encode(df[options.target][take]))
                        held[s][2].append(keys[keep])
    z_held, y_held = _held_out(held[1], gather=None if dp is None else all_gather_object)
    z_test, y_test = _held_out(held[2], gather=None if dp is None else all_gather_object)
    if held_share < 1 or test_share < 1:
        notices.append(f"calibration, threshold and test metrics use {len(y_held)} validation and {len(y_test)} "
                       f"test rows drawn by hash (of {n_valid} and {n_test})")
    if dp is None or stream.rank == 0:
        dec = decide_on_held_out(z_held.astype(np.float64), y_held, z_test.astype(np.float64), y_test, options,
                                 notices=notices)
    else:
        dec = None
    if dp is not None:  # rank 0 decides (the bootstrap once, not on every rank's share of the cores); all get it
        dec, notices = broadcast_object((dec, notices))
    notices.append("streamed: one network trained (the in-memory default's cross-fitted ensemble is for tables that fit)")
    seconds = time.perf_counter() - t0
    summary = {
        "source": str(source.path), "rows": n_train + n_valid + n_test, "positives": target.n_positive,
        "negatives": target.n_negative, "positive_label": target.positive, "negative_label": target.negative,
        "columns": summary_columns, "dropped": [list(x) for x in prep.schema.dropped],
        "split_rows": {"train": n_train, "valid": n_valid, "test": n_test},
    }
    stream_info = {"batch_rows": batch_rows, "shuffle_rows": shuffle_rows, "memory_bytes": stream.memory_bytes,
                   "sketch_size": stream.sketch_size, "stats_seconds": stats_seconds, "split": "hash of " + (stream.id_column or "the row"),
                   "world_size": stream.world_size, "steps_per_epoch": steps_per_epoch,
                   "batch_size": cfg.batch_size}
    if dp is not None:  # for benchmarks: the gradient all-reduce's share of a step
        stream_info["comm_seconds_per_step"] = dp.comm_seconds / max(dp.steps, 1)
    predictor = Predictor(
        schema=prep.schema, target=target, preprocessor=prep, members=[member], calibrator=dec.calibrator,
        threshold=dec.policy,
        info={"options": options.to_dict(), "metrics": {"test": dec.metrics, "valid": dec.valid_metrics},
              "intervals": {k: list(v) for k, v in dec.intervals.items()}, "calibration": dec.calibration_info,
              "history": history, "summary": summary, "stream": stream_info,
              "distributed": {"world_size": stream.world_size, "backend": None if dp is None else dp.ctx.backend},
              "notices": notices,
              "train_seconds": seconds},
    )
    return TrainResult(
        predictor=predictor, metrics=dec.metrics, intervals=dec.intervals, valid_metrics=dec.valid_metrics,
        notices=notices, history=history, summary=summary, calibration_info=dec.calibration_info,
        curves={"y_valid": y_held, "p_valid_raw": sigmoid(z_held.astype(np.float64)), "p_valid": dec.p_held,
                "y_test": y_test, "p_test_raw": sigmoid(z_test.astype(np.float64)), "p_test": dec.p_test},
        seconds=seconds,
    )

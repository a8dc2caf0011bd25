"""One readable fit loop for single-logit models.

Data lives in memory as contiguous tensors. Each epoch draws one permutation (or
one class-balanced sample), gathers the rows once, and then slices contiguous
batches: no per-sample ``Dataset.__getitem__`` and no collate on the hot path.
Per-step losses are kept on the device and checked once per epoch, so the loop
never waits on ``.item()``. binclf's own MLP on the CPU trains through
:class:`binclf.train.fused_step.FusedMLPStep` (the same math, written out without autograd's
per-op overhead, with hashed dropout masks); everything else through autograd.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from binclf import runtime
from binclf.errors import ConfigError, TrainingError
from binclf.infer import eval_logits
from binclf.train.adamw import FastAdamWStep, FusedAdamW
from binclf.train.fused_step import FusedMLPStep, plan_speed
from binclf.nn.losses import LOSS_NAMES, build_loss, resolve_pos_weight
from binclf.nn.models.base import encoded_network, init_output_bias
from binclf.numeric import logit, sigmoid
from binclf.probe import ThreadGuard

__all__ = ["FitSettings", "TrainConfig", "Trainer", "auto_batch_size", "predict_logits", "resolve_device"]

LRSchedule = Literal["cosine", "plateau"] | None

# Compiling the training step takes 1.5-10 s per process and layer shape (less
# with inductor's disk cache warm); it saves ~0.3-1.5 us per row-epoch against
# the eager step, so it pays from about this many row-epochs on.
_COMPILE_MIN_ROW_EPOCHS = 10_000_000
# Bytes of validation rows gathered at a time when ``fit(valid_rows=...)`` reads
# them in place (its rows are evaluated in blocks instead of copied whole).
_GATHER_BYTES = 8 << 20
# Steps per window of the thread guard (binclf.probe.ThreadGuard); each
# epoch's first step starts a window, so validation and compiling never count.
_GUARD_STEPS = 16


@dataclass(frozen=True, kw_only=True)
class FitSettings:
    """The optimisation settings :class:`TrainConfig` and ``TrainOptions`` share: stated once, here.

    Keyword-only, so that a subclass may add positional fields (``TrainOptions.target``).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 200
    patience: int = 10
    seed: int = 0
    loss: str = "bce"
    pos_weight: float | str | None = None
    sampler: Literal["balanced"] | None = None

    def _problems(self) -> list[str]:
        """What is wrong with these settings, each in words (empty: nothing)."""
        problems = []
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if int(self.max_epochs) < 1:
            problems.append(f"max_epochs must be >= 1, got {self.max_epochs}")
        if int(self.patience) < 1:
            problems.append(f"patience must be >= 1, got {self.patience}")
        if self.loss not in LOSS_NAMES:
            problems.append(f"loss must be one of {', '.join(LOSS_NAMES)}, got {self.loss!r}")
        if self.sampler not in (None, "balanced"):
            problems.append(f"sampler must be None or 'balanced', got {self.sampler!r}")
        return problems


@dataclass(frozen=True, kw_only=True)
class TrainConfig(FitSettings):
    """Everything that decides how a model is fitted; round-trips to JSON.

    ``patience`` counts epochs without a validation-loss improvement of at least
    ``min_delta`` before stopping; the best epoch's weights are restored.
    Imbalance: ``pos_weight`` (a number or ``"balanced"`` = n_neg / n_pos),
    ``loss="focal"`` or ``sampler="balanced"`` (each epoch draws as many rows
    as the training set, half of each class, with replacement).
    ``compile`` (CPU, binclf's MLP, BCE): run each training step as one graph
    compiled by inductor (:class:`binclf.train.fused_step.GraphStep`); ``None`` does so when the fit is long enough
    to repay the few seconds compiling takes (with validation data: from the
    epoch at which it has proved so), or when this process has already
    compiled a step of the same shapes (``BINCLF_COMPILE=0`` in the environment
    turns that automatic choice off, ``BINCLF_COMPILE=1`` compiles every fit).
    An automatic choice keeps the compiled step only where it measured faster
    than the eager one (:mod:`binclf.probe`); ``compile=True`` compiles
    unmeasured. Results agree to float32 rounding; where no compiler works,
    training falls back to the eager step. The shared optimisation settings (``lr``, ``weight_decay``, ``max_epochs``,
    ``patience``, ``seed``, ``loss``, ``pos_weight``, ``sampler``) and their
    defaults are :class:`FitSettings`'.
    """

    batch_size: int = 512
    min_delta: float = 0.0
    lr_schedule: LRSchedule = None
    focal_alpha: float | None = None
    focal_gamma: float = 2.0
    max_grad_norm: float | None = None
    eval_batch_size: int = 16384
    device: str = "cpu"
    verbose: bool | None = None
    compile: bool | None = None

    def __post_init__(self) -> None:
        problems = self._problems()
        if int(self.batch_size) < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr_schedule not in (None, "cosine", "plateau"):
            problems.append(f"lr_schedule must be None, 'cosine' or 'plateau', got {self.lr_schedule!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Any, *, n_train: int, **overrides: Any) -> "TrainConfig":
        """A config from any object with same-named attributes (the estimator, ``TrainOptions``).

        Attributes it lacks keep their defaults, ``overrides`` win, and
        ``batch_size="auto"`` is resolved for ``n_train`` training rows.

        Parameters
        ----------
        settings : object
            Read by attribute name (``lr``, ``batch_size`` ...).
        n_train : int
            Training rows, for ``batch_size="auto"``.
        **overrides
            Fields that win over ``settings``.

        Returns
        -------
        TrainConfig
        """
        kw = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        kw.update(overrides)
        if kw.get("batch_size") == "auto":
            kw["batch_size"] = auto_batch_size(n_train)
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The config :meth:`to_dict` wrote."""
        return cls(**d)


def auto_batch_size(n_rows: int, *, largest: int = 512, smallest: int = 16) -> int:
    """A batch size giving small tables enough steps per epoch (at least ~8).

    A power of two, ``largest`` from 4096 rows up, down to ``smallest``: with a
    fixed 512 a 400-row table would take one optimiser step per epoch.

    Parameters
    ----------
    n_rows : int
        Training rows.
    largest, smallest : int
        Bounds of the result.

    Returns
    -------
    int
    """
    size = largest
    while size > smallest and size * 8 > n_rows:
        size //= 2
    return size


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU.

    Parameters
    ----------
    device : str
        ``"auto"`` or any name ``torch.device`` accepts.

    Returns
    -------
    torch.device
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_tensor(a: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = a if isinstance(a, Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda" and t.device.type == "cpu":
        # Page-locked host memory: the copy to the GPU runs asynchronously, overlapping what follows.
        return t.to(dtype=dtype).contiguous().pin_memory().to(device, non_blocking=True)
    return t.to(device=device, dtype=dtype).contiguous()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, X: Tensor | np.ndarray, *, batch_size: int = 16384, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Logits ``(n,)`` of ``model`` on ``X`` ``(n, d)`` in eval mode, in large batches.

    ``dtype`` is the input's dtype and must match the model's parameters.

    Parameters
    ----------
    model : nn.Module
        A single-logit model (left in the train/eval mode it had).
    X : Tensor or ndarray of shape (n, d)
    batch_size : int
        Rows per forward call (at most 4096 on the CPU, where chunks stay in cache).
    dtype : torch.dtype

    Returns
    -------
    Tensor of shape (n,)
        The logits.
    """
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        X = _as_tensor(X, dtype, device)
        # Cache-sized chunks, and binclf's MLP with BatchNorm folded in (see eval_logits).
        return eval_logits(model, X, chunk_rows=min(batch_size, 4096) if device.type == "cpu" else batch_size)
    finally:
        model.train(was_training)


Callback = Callable[["Trainer", dict[str, float]], bool | None]


@dataclass
class _Progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    enabled: bool
    total: int
    _bar: Any = field(default=None, init=False)
    _task: Any = field(default=None, init=False)

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("epoch {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, info="")
        return self

    def update(self, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, info=info)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class Trainer:
    """Fits a single-logit model with AdamW, early stopping and best-weight restore.

    After :meth:`fit`: ``history_`` (one dict per epoch: epoch, train_loss,
    valid_loss, lr, seconds, valid_seconds: the part of seconds spent validating), ``best_epoch_``, ``best_valid_loss_``,
    ``pos_weight_`` (resolved number or None), ``train_prior_`` (the positive
    rate of the labels) and ``logit_shift_``: the amount the imbalance treatment
    moved the model's logits, which :mod:`binclf.decide.calibration` subtracts to
    recover the true prior.

    ``callbacks`` are called as ``cb(trainer, epoch_log)`` after each epoch;
    one returning ``True`` stops training.

    ``data_parallel`` (:func:`binclf.dist.data_parallel`, under ``torchrun``):
    each rank trains on its shard of every epoch's rows with
    ``ceil(batch_size / world_size)`` rows a step, the gradients are averaged
    across ranks between the backward pass and the optimiser step, the
    validation loss is summed over the ranks' shares of the validation rows,
    and rank 0 decides when to stop. None: one process, as before.
    """

    def __init__(
        self, config: TrainConfig | None = None, *, callbacks: Sequence[Callback] = (), data_parallel: Any = None
    ) -> None:
        self.config = config or TrainConfig()
        self.callbacks = list(callbacks)
        self.data_parallel = data_parallel

    # -- the fit loop ---------------------------------------------------------
    @runtime.entry_point("train")  # process knobs set here and restored on return (binclf.runtime)
    def fit(
        self,
        model: nn.Module,
        X: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        *,
        sample_weight: Tensor | np.ndarray | None = None,
        X_valid: Tensor | np.ndarray | None = None,
        y_valid: Tensor | np.ndarray | None = None,
        sample_weight_valid: Tensor | np.ndarray | None = None,
        init_bias: bool = True,
        rows: Tensor | np.ndarray | None = None,
        valid_rows: Tensor | np.ndarray | None = None,
        fit_encoding: bool = True,
    ) -> "Trainer":
        """Train ``model`` in place on ``X`` (n, d) float and ``y`` (n,) in {0, 1}.

        Without validation data, training runs ``max_epochs`` epochs and keeps
        the last weights. ``rows`` / ``valid_rows`` train (validate) on some
        rows of the arrays given without copying them: each batch gathers its
        rows by index, as a shuffled epoch does anyway, so the numbers are those
        of a fit on ``X[rows]`` (cross-fitting's folds all read one matrix
        instead of each copying its rows).

        Parameters
        ----------
        model : nn.Module
            A single-logit model: ``model(X)`` returns logits of shape (n,).
        X : Tensor or ndarray of shape (n, d)
        y : Tensor or ndarray of shape (n,)
            Labels in {0, 1}.
        sample_weight : Tensor or ndarray of shape (n,), optional
        X_valid, y_valid, sample_weight_valid : optional
            Validation rows for early stopping and best-weight restore.
        init_bias : bool
            Start the output bias at the loss-minimising constant logit.
        rows : Tensor or ndarray of shape (m,), optional
            Positions of the training rows in ``X``, ``y`` and ``sample_weight``
            (default: all of them). ``X`` is checked whole.
        valid_rows : Tensor or ndarray of shape (m_valid,), optional
            Positions of the validation rows in ``X_valid``, ``y_valid`` and
            ``sample_weight_valid`` (default: all of them).
        fit_encoding : bool
            Fit a parameter-free first stage (``model.fit_encoding``, the PLE
            edges) to the training rows first; False keeps the one it has
            (cross-fitting fits one encoding for all folds).

        Returns
        -------
        Trainer
            ``self``, fitted (``model`` is trained in place and left in eval mode).
        """
        cfg = self.config
        device = resolve_device(cfg.device)
        X = _as_tensor(X, torch.float32, device)
        y = _as_tensor(y, torch.float32, device)
        w = None if sample_weight is None else _as_tensor(sample_weight, torch.float32, device)
        self._check_inputs(X, y, w)
        # X stays whole; the labels and weights of the rows trained on are small: taken now.
        rows_t = None if rows is None else _row_index(rows, len(X), device, "rows")
        if rows_t is not None:
            y = y.index_select(0, rows_t)
            w = None if w is None else w.index_select(0, rows_t)
        has_valid = X_valid is not None and y_valid is not None
        if has_valid:
            Xv = _as_tensor(X_valid, torch.float32, device)
            yv = _as_tensor(y_valid, torch.float32, device)
            wv = None if sample_weight_valid is None else _as_tensor(sample_weight_valid, torch.float32, device)
            valid_t = None if valid_rows is None else _row_index(valid_rows, len(Xv), device, "valid_rows")
            if valid_t is not None:
                if yv.shape != (len(Xv),):
                    raise ConfigError(f"y_valid must have shape ({len(Xv)},) to match X_valid, got {tuple(yv.shape)}")
                yv = yv.index_select(0, valid_t)
                wv = None if wv is None else wv.index_select(0, valid_t)
        outer = model
        encode = None
        network = encoded_network(model)
        if network is not None:
            # A first stage without trainable parameters (binclf.nn.models.PLEMLP's
            # encoding): fit it to the training rows and train the network behind
            # it on each batch's encoding. Encoding the rows once instead held two
            # copies of inputs ~17x wider than the table (the epoch's gather too):
            # measured 1.55 GB peak for 1M x 7 float32 rows. The encoding is
            # elementwise, so the numbers are the same.
            model.to(device)
            if fit_encoding and callable(getattr(model, "fit_encoding", None)):
                _fit_encoding(model, X, rows_t)
            encode = model.encode
            model = network

        self.pos_weight_ = resolve_pos_weight(cfg.pos_weight, y)
        loss_fn = build_loss(
            cfg.loss, pos_weight=self.pos_weight_, focal_alpha=cfg.focal_alpha, focal_gamma=cfg.focal_gamma
        ).to(device)
        self.train_prior_ = float((y * w).sum() / w.sum()) if w is not None else float(y.mean())
        self.logit_shift_ = self._logit_shift(self.train_prior_)

        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
            model.to(device)
            if init_bias and cfg.loss != "hinge" and 0.0 < self.train_prior_ < 1.0:
                # The loss-minimising constant logit under the training objective.
                init_output_bias(model, float(sigmoid(logit(self.train_prior_, eps=0.0) + self.logit_shift_)))
            dp = self.data_parallel
            # Rows and batch of this process (a rank's share under data parallelism).
            n = len(y) if dp is None else dp.rows_per_rank(len(y))
            batch_size = cfg.batch_size if dp is None else dp.batch_per_rank(cfg.batch_size)
            steps_per_epoch = math.ceil(n / batch_size)
            first = torch.arange(min(batch_size, len(y)), device=X.device)
            probe = self._batch(X, y, w, first, encode, None if rows_t is None else rows_t[: len(first)])
            opt, opt_step, fused, sched = self._step_parts(
                model, loss_fn, device, n, has_valid, steps_per_epoch, probe=probe if n >= 2 else None
            )
            if dp is not None:
                dp.start(model, seed=cfg.seed)
            # Load that arrives mid-fit: several threads would wait for cores at every step.
            guard = None
            if device.type == "cpu" and torch.get_num_threads() > 1 and not runtime.threads_pinned():
                guard = ThreadGuard(torch.get_num_threads())
            self.history_: list[dict[str, float]] = []
            self.best_epoch_ = 0
            self.best_valid_loss_ = math.inf
            best_state = None
            bad_epochs = 0
            sampling_probs = self._sampling_probs(y) if cfg.sampler == "balanced" else None
            verbose = (sys.stderr.isatty() if cfg.verbose is None else cfg.verbose) and (dp is None or dp.ctx.is_main)

            # FusedAdamW keeps parameters in one flat buffer while it steps; each gets its own storage back after.
            release = getattr(opt, "release", None)
            with _Progress(enabled=bool(verbose), total=cfg.max_epochs) as progress, _finally(release):
                for epoch in range(1, cfg.max_epochs + 1):
                    t0 = time.perf_counter()
                    model.train()
                    if sampling_probs is not None:
                        idx = torch.multinomial(sampling_probs, len(y), replacement=True, generator=gen)
                    else:
                        idx = self._permutation(len(y), gen)
                    idx = idx.to(device)
                    if dp is not None:  # the same order on every rank (shared seed); this rank's share of it
                        idx = dp.epoch_rows(idx)
                    # fit(rows=...): where the epoch's rows lie in X, mapped once for all its batches.
                    x_idx = None if rows_t is None else rows_t.index_select(0, idx)
                    # Each batch gathers its own rows (and encodes them, for an encoded
                    # model): a gather of the whole epoch up front held a second copy of
                    # the training inputs (the same rows in the same order either way).
                    batches = (
                        self._batch(
                            X, y, w, idx[lo : lo + batch_size], encode,
                            None if x_idx is None else x_idx[lo : lo + batch_size],
                        )
                        for lo in range(0, n, batch_size)
                    )
                    step_losses = self.train_steps(
                        model, batches, loss_fn=loss_fn, opt=opt, opt_step=opt_step, fused=fused, sched=sched,
                        guard=guard, grad_sync=None if dp is None else dp.sync_grads,
                    )
                    if dp is not None:
                        step_losses = dp.end_epoch(model, step_losses)
                    self._check_finite(step_losses, epoch)
                    if fused is not None and self._compile_from_now(n, epoch, has_valid):
                        fused.compile_from_now()
                    train_loss = float(step_losses.mean())
                    log = {"epoch": epoch, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"]}
                    if has_valid:
                        tv = time.perf_counter()
                        _refresh_statistics(outer, X, rows_t)  # the model fit was given: X's rows are its inputs
                        # The outer model: its rows are encoded a chunk at a time (binclf.infer).
                        valid_loss = self._evaluate(
                            outer if encode is not None else model, loss_fn, Xv, yv, wv, valid_t
                        )
                        log["valid_loss"] = valid_loss
                        log["valid_seconds"] = time.perf_counter() - tv
                        if not math.isfinite(valid_loss):
                            raise TrainingError(
                                f"validation loss became {valid_loss} at epoch {epoch}: lower the learning rate "
                                f"(lr={cfg.lr}) or check the validation inputs for extreme values"
                            )
                        if sched is not None and cfg.lr_schedule == "plateau":
                            sched.step(valid_loss)
                        if valid_loss < self.best_valid_loss_ - cfg.min_delta:
                            self.best_valid_loss_ = valid_loss
                            self.best_epoch_ = epoch
                            best_state = copy.deepcopy(model.state_dict())
                            bad_epochs = 0
                        else:
                            bad_epochs += 1
                    log["seconds"] = time.perf_counter() - t0
                    self.history_.append(log)
                    info = f"train {train_loss:.4f}" + (f" valid {log['valid_loss']:.4f}" if has_valid else "")
                    progress.update(info)
                    stop = any(cb(self, log) for cb in self.callbacks) or (has_valid and bad_epochs >= cfg.patience)
                    if dp is not None:
                        stop = dp.agree(stop)
                    if stop:
                        break
            if best_state is not None:
                model.load_state_dict(best_state)
            if not has_valid:
                self.best_epoch_ = len(self.history_)
                _refresh_statistics(outer, X, rows_t)  # with validation: refreshed before each check, kept in best_state
        outer.eval()  # the network too, when a fixed encoding wraps it
        self.model_ = outer
        step = "autograd step" if fused is None else "compiled fused step" if fused.compiled_in_use else "fused step"
        runtime.note_fit(step, torch.get_num_threads())
        return self

    # -- pieces of the loop ----------------------------------------------------
    @staticmethod
    def _batch(
        X: Tensor, y: Tensor, w: Tensor | None, rows: Tensor, encode: Callable[[Tensor], Tensor] | None,
        x_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The rows ``rows`` of ``X``, ``y``, ``w``; ``X``'s through ``encode`` (no gradient) when given.

        ``x_rows``: the same rows' positions in ``X`` when they differ (``fit(rows=...)``).
        """
        xb = X.index_select(0, rows if x_rows is None else x_rows)
        if encode is not None:
            with torch.no_grad():
                xb = encode(xb)
        return xb, y.index_select(0, rows), None if w is None else w.index_select(0, rows)

    def _step_parts(
        self, model: nn.Module, loss_fn: nn.Module, device: torch.device, n_rows: int, has_valid: bool,
        steps_per_epoch: int, probe: tuple[Tensor, Tensor, Tensor | None] | None = None,
    ) -> tuple[Any, Callable[[], Any], FusedMLPStep | None, Any]:
        """The optimiser, its step function, the fused step (binclf's MLP on the CPU, else None) and the scheduler.

        ``probe``, a real batch ``(x, y, w)``, lets the fused step measure its
        matmul kernel and torch threads on it (:func:`binclf.train.fused_step.plan_speed`).
        """
        opt = self._optimizer(model)
        opt_step = FastAdamWStep(opt) if FastAdamWStep.supports(opt) else opt.step
        fused = None
        if FusedMLPStep.supports(model, loss_fn, device):
            fused = FusedMLPStep(
                model, loss_fn, compiled=self._compile_pays(n_rows, has_valid), forced=self.config.compile is True
            )
            if probe is not None:
                plan_speed(fused, *probe)
        return opt, opt_step, fused, self._scheduler(opt, steps_per_epoch)

    def train_steps(
        self, model: nn.Module, batches: Iterable[tuple[Tensor, Tensor, Tensor | None]], *, loss_fn: nn.Module,
        opt: Any, opt_step: Callable[[], Any], fused: FusedMLPStep | None, sched: Any,
        guard: ThreadGuard | None = None, grad_sync: Callable[[], None] | None = None,
    ) -> Tensor:
        """One epoch's optimiser steps, one per batch ``(x (b, d), y (b,), w (b,) or None)``.

        The step loop of :meth:`fit` and of the streaming fit
        (:func:`binclf.train.stream.train_stream`), which feeds batches read
        from disk. Returns the per-step losses ``(steps,)``, left on the device.
        ``guard`` drops to one torch thread when steps slow down mid-fit (load
        arrived); ``grad_sync`` (data parallelism) turns each rank's gradients
        into the global batch's before the optimiser steps.
        """
        cfg = self.config
        losses = _StepLosses()
        bn = _has_batchnorm(model)
        for xb, yb, wb in batches:
            if len(xb) < 2 and bn:
                # BatchNorm cannot normalise a single row; fold it into no step.
                losses.repeat_last(xb.device)
                continue
            if fused is not None:
                loss = fused(xb, yb, wb)  # sets every .grad, like backward()
            else:
                loss = loss_fn(model(xb), yb, wb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            if grad_sync is not None:
                grad_sync()  # the gradient of the global batch on every rank
            if cfg.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt_step()
            if sched is not None and cfg.lr_schedule == "cosine":
                sched.step()
            step = losses.append(loss)
            if guard is not None and step % _GUARD_STEPS == 0 and guard.tick(step and _GUARD_STEPS):
                runtime.lower_threads(1)
                runtime.note_choice("threads", "1 thread (steps slowed down during the fit: load arrived)")
        return losses.tensor()

    @staticmethod
    def _check_inputs(X: Tensor, y: Tensor, w: Tensor | None) -> None:
        if X.ndim != 2:
            raise ConfigError(f"X must be 2-D (n_rows, n_features), got shape {tuple(X.shape)}")
        if y.shape != (len(X),):
            raise ConfigError(f"y must have shape ({len(X)},) to match X, got {tuple(y.shape)}")
        if w is not None and w.shape != (len(X),):
            raise ConfigError(f"sample_weight must have shape ({len(X)},), got {tuple(w.shape)}")
        # min and max propagate NaN and show inf: one pass, no (n, d) boolean temporary.
        lo, hi = torch.aminmax(X) if X.numel() else (torch.zeros(()), torch.zeros(()))
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise ConfigError("X contains NaN or inf: impute or drop those values before training")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ConfigError("y must contain only 0 and 1 (encode the positive class as 1)")

    def _logit_shift(self, prior: float) -> float:
        """How far the imbalance treatment moves the loss-optimal logit from logit(prior)."""
        shift = 0.0
        if self.pos_weight_ is not None:
            shift += math.log(self.pos_weight_)
        if self.config.sampler == "balanced" and 0.0 < prior < 1.0:
            shift += -float(logit(prior, eps=0.0))  # the sampler trains at prior 0.5
        return shift

    def _compile_pays(self, n_rows: int, has_valid: bool) -> bool | None:
        """True: compile the step; None: only where this process already compiled its shapes.

        Without validation data every epoch runs, so the fit's length is known.
        With it, early stopping usually ends the fit long before ``max_epochs``:
        compiling then waits until the fit has proved long (``_compile_from_now``).
        """
        if self.config.compile is not None:
            return self.config.compile
        if not runtime.auto_compile_enabled():
            return False
        if runtime.compile_forced():  # BINCLF_COMPILE=1
            return True
        if not has_valid and n_rows * self.config.max_epochs >= _COMPILE_MIN_ROW_EPOCHS:
            return True
        return None

    def _compile_from_now(self, n_rows: int, epoch: int, has_valid: bool) -> bool:
        """Whether an early-stopped fit has run long enough to compile its step from the next epoch.

        Rent or buy: compile once the eager epochs have forgone about what
        compiling costs (``_COMPILE_MIN_ROW_EPOCHS`` row-epochs), if at least as
        many may still follow; a fit that stops early never pays for compiling,
        and one that runs on costs at most about twice the best choice.
        """
        if self.config.compile is not None or not has_valid or not runtime.auto_compile_enabled():
            return False
        even = _COMPILE_MIN_ROW_EPOCHS
        return n_rows * epoch >= even and n_rows * (self.config.max_epochs - epoch) >= even

    @staticmethod
    def _permutation(n: int, gen: torch.Generator) -> Tensor:
        return torch.randperm(n, generator=gen)

    @staticmethod
    def _sampling_probs(y: Tensor) -> Tensor:
        n_pos = y.sum()
        n_neg = len(y) - n_pos
        if n_pos == 0 or n_neg == 0:
            raise ConfigError("sampler='balanced' needs both classes in the training labels")
        return torch.where(y > 0.5, 0.5 / n_pos, 0.5 / n_neg).cpu().double()

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer | FusedAdamW:
        cfg = self.config
        # Weight decay on weights only: decaying BatchNorm scales and biases
        # (the prior-initialised output bias among them) only adds bias.
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.lr_schedule is None and FusedAdamW.supports(decay + no_decay):
            # The same updates, without torch.optim's first-use import of its compiler (~1 s).
            return FusedAdamW(groups, lr=cfg.lr)
        try:
            return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)

    def _scheduler(self, opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
        cfg = self.config
        if cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_epochs * steps_per_epoch)
        if cfg.lr_schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=max(1, cfg.patience // 3))
        return None

    def _check_finite(self, step_losses: Tensor, epoch: int) -> None:
        bad = ~torch.isfinite(step_losses)
        if bool(bad.any()):
            step = int(bad.nonzero()[0]) + 1
            raise TrainingError(
                f"loss became {float(step_losses[step - 1])} at epoch {epoch}, step {step}: "
                f"lower the learning rate (lr={self.config.lr}), set max_grad_norm, "
                "or check the inputs for extreme or unscaled values"
            )

    @torch.inference_mode()
    def _evaluate(
        self, model: nn.Module, loss_fn: nn.Module, X: Tensor, y: Tensor, w: Tensor | None, rows: Tensor | None = None
    ) -> float:
        """Mean validation loss; ``rows``: where ``y``'s rows lie in ``X`` (``fit(valid_rows=...)``)."""
        dp = self.data_parallel
        if dp is not None:  # this rank's share of the rows, then the mean over all of them
            part = dp.valid_rows(len(y))
            n = part.stop - part.start
            y, w = y[part], None if w is None else w[part]
            X, rows = (X[part], None) if rows is None else (X, rows[part])
            return dp.mean_over_ranks(self._mean_loss(model, loss_fn, X, y, w, rows) if n else 0.0, n)
        return self._mean_loss(model, loss_fn, X, y, w, rows)

    def _mean_loss(
        self, model: nn.Module, loss_fn: nn.Module, X: Tensor, y: Tensor, w: Tensor | None, rows: Tensor | None = None
    ) -> float:
        bs = self.config.eval_batch_size
        if rows is None:
            logits = predict_logits(model, X, batch_size=bs)
        else:
            # A block of rows gathered at a time: a whole number of predict_logits' chunks
            # (4096 rows on the CPU), so each chunk holds the rows a copy of X[rows] would.
            # The logits go into one buffer made first: blocks' results kept alive between
            # the blocks' temporaries fragment the heap.
            chunk = min(bs, 4096) if X.device.type == "cpu" else bs
            step = chunk * max(1, _GATHER_BYTES // (4 * max(X.shape[1], 1) * chunk))
            logits = torch.empty(len(rows), device=X.device)
            for lo in range(0, len(rows), step):
                logits[lo : lo + step] = predict_logits(model, X.index_select(0, rows[lo : lo + step]), batch_size=bs)
        return float(loss_fn(logits, y, w)) if loss_fn.reduction == "mean" else math.nan


class _StepLosses:
    """An epoch's step losses, copied into preallocated blocks on the loss's device.

    Kept as a list of the steps' own 0-d tensors, each step left a small
    allocation alive above its freed temporaries: the heap crept up by them,
    ~25 KB a step (+80 MB of RSS over a 3,000-step epoch of a 1.6M-row fold).
    A copy into a block is one small kernel and no host sync (CUDA included).
    """

    _BLOCK = 1024

    def __init__(self) -> None:
        self.blocks: list[Tensor] = []
        self.n = 0

    def append(self, loss: Tensor) -> int:
        """Record ``loss``; returns its step number (0-based)."""
        i = self.n % self._BLOCK
        if i == 0:
            self.blocks.append(torch.empty(self._BLOCK, dtype=loss.dtype, device=loss.device))
        self.blocks[-1][i] = loss.detach()
        self.n += 1
        return self.n - 1

    def repeat_last(self, device: torch.device) -> None:
        """A step that did not run: the last loss again (0 before any)."""
        if self.n == 0:
            self.append(torch.zeros((), device=device))
        else:
            self.append(self.blocks[-1][(self.n - 1) % self._BLOCK])

    def tensor(self) -> Tensor:
        """The losses ``(steps,)``."""
        if not self.blocks:
            return torch.zeros(0)
        return torch.cat(self.blocks)[: self.n] if len(self.blocks) > 1 else self.blocks[0][: self.n]


def _row_index(rows: Tensor | np.ndarray, n: int, device: torch.device, name: str) -> Tensor:
    """``rows`` as an int64 tensor on ``device``, checked to be 1-D positions in ``[0, n)``."""
    t = rows if isinstance(rows, Tensor) else torch.from_numpy(np.asarray(rows))
    if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ConfigError(
            f"{name} must be a 1-D array of integer row positions, got {t.dtype} of shape {tuple(t.shape)}"
        )
    t = t.to(device=device, dtype=torch.int64)
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ConfigError(f"{name} must hold row positions in [0, {n}), got {int(t.min())} .. {int(t.max())}")
    return t


# Training rows a model's eval-mode statistics are refreshed from (evenly spaced through the set).
_STATISTICS_ROWS = 256


def _refresh_statistics(model: nn.Module, X: Tensor, rows: Tensor | None) -> None:
    """``model.refresh_statistics`` (where the model has one) on up to 256 training rows, evenly spaced.

    For a model whose training forward sees other inputs than its eval forward
    (:class:`binclf.nn.models.ImageCNN`: augmented, bf16 batches), the
    BatchNorm running averages kept in training do not describe what eval
    mode sees; the model recomputes them from these rows before each
    validation pass and at the end of a fit without validation.
    """
    refresh = getattr(model, "refresh_statistics", None)
    if not callable(refresh):
        return
    n = len(X) if rows is None else len(rows)
    if n == 0:
        return
    pos = torch.linspace(0, n - 1, min(n, _STATISTICS_ROWS), device=X.device).round().long()
    with torch.no_grad():
        refresh(X.index_select(0, pos if rows is None else rows.index_select(0, pos)))


def _fit_encoding(model: nn.Module, X: Tensor, rows: Tensor | None) -> None:
    """``model.fit_encoding`` on the training rows: ``X[rows]`` read in place where it takes ``rows``."""
    if rows is None:
        model.fit_encoding(X)
    elif "rows" in inspect.signature(model.fit_encoding).parameters:
        model.fit_encoding(X, rows=rows)
    else:
        model.fit_encoding(X.index_select(0, rows))


@contextlib.contextmanager
def _finally(fn: Callable[[], Any] | None) -> Any:
    """Call ``fn`` (if any) on leaving the block, also when it raises."""
    try:
        yield
    finally:
        if fn is not None:
            fn()


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


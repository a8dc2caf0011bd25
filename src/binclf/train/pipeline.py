"""From a raw table to a calibrated, thresholded :class:`~binclf.predictor.Predictor`.

``train_table`` is what ``binclf train`` runs, as a library call: encode the
target, infer the column roles, split (stratified train / validation / test),
fit the preprocessing on the training rows, train the model(s) with early
stopping on validation, undo the imbalance treatment's logit shift, calibrate
on validation predictions, choose the threshold for the objective on the
calibrated validation probabilities, and report metrics on the test rows,
which nothing above has seen.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from binclf import dist, runtime
from binclf.bundle import check_columns
from binclf.decide.calibration import select_calibrator
from binclf.train.crossfit import cross_fit
from binclf.data.schema import Schema, infer_schema
from binclf.data.target import TargetInfo, encode_target
from binclf.data.split import stratified_split
from binclf.errors import ConfigError, DataError
from binclf.decide.metrics import binary_metrics, bootstrap_intervals
from binclf.nn.models import build_model, model_config
from binclf.nn.models.base import encoded_network
from binclf.numeric import sigmoid
from binclf.predictor import Member, Predictor, member_logits
from binclf.data.preprocessing import Preprocessor, check_finite
from binclf.data.text import TEXT_ENCODERS, TEXT_LINEAR_PATH, TextPreprocessor, dense_part
from binclf.decide.thresholds import choose_threshold, parse_objective
from binclf.train.trainer import FitSettings, TrainConfig, Trainer

__all__ = ["TrainOptions", "TrainResult", "train_table", "MODEL_CHOICES"]

MODEL_CHOICES = ("auto", "mlp", "logistic")


@dataclass(frozen=True)
class TrainOptions(FitSettings):
    """Everything ``binclf train`` can be told; round-trips to JSON (stored in the bundle).

    The optimisation settings (``lr``, ``weight_decay``, ``max_epochs``,
    ``patience``, ``seed``, ``loss``, ``pos_weight``, ``sampler``) and their
    defaults are inherited from :class:`~binclf.train.trainer.FitSettings`,
    which :class:`~binclf.train.trainer.TrainConfig` shares: each is stated
    once. ``batch_size`` may also be ``"auto"`` here (resolved per table).
    """

    target: str
    positive: str | None = None
    model: str = "auto"
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    text_encoder: str = "tfidf"
    drop_missing_target: bool = False
    valid_fraction: float = 0.2
    test_fraction: float = 0.2
    numeric_scaling: str = "robust"
    calibration: str = "auto"
    objective: str = "f1"
    abstain_precision: float | None = None
    batch_size: int | str = "auto"
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    n_boot: int = 200
    # --model auto: cross-fitted folds over train + validation, and the linear member.
    folds: int = 5
    linear_member: bool = True
    neural_member: str = "ple_mlp"
    ple_bins: int = 16
    # Where networks train ("cpu" or "cuda"); under torchrun each rank takes its share (binclf.dist).
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = self._problems()
        if self.model not in MODEL_CHOICES:
            problems.append(f"--model must be one of {', '.join(MODEL_CHOICES)}, got {self.model!r}")
        if self.numeric_scaling not in ("robust", "standard", "quantile"):
            problems.append(f"numeric_scaling must be robust, standard or quantile, got {self.numeric_scaling!r}")
        if not set(self.neural_member.split("+")) <= set(_NEURAL):
            problems.append(
                f"neural_member must be one of {', '.join(_NEURAL)} or several joined by '+', got {self.neural_member!r}"
            )
        if self.device not in ("cpu", "cuda"):
            problems.append(f"--device must be cpu or cuda, got {self.device!r}")
        if self.text_encoder not in TEXT_ENCODERS:
            problems.append(f"--text-encoder must be one of {', '.join(TEXT_ENCODERS)}, got {self.text_encoder!r}")
        if not 2 <= int(self.folds) <= 20:
            problems.append(f"folds must be an integer in [2, 20], got {self.folds}")
        for name in ("valid_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 0.5:
                problems.append(f"{name} must be in [0, 0.5), got {v}")
        if problems:
            raise ConfigError("; ".join(problems))
        parse_objective(self.objective)  # fail early on a bad --objective

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (what a bundle stores under ``options``)."""
        d = asdict(self)
        for k in ("drop", "categorical", "numeric", "text", "hidden"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        """The options :meth:`to_dict` wrote."""
        d = dict(d)
        for k in ("drop", "categorical", "numeric", "text", "hidden"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)


@dataclass
class TrainResult:
    """What training produced: the predictor plus everything the report shows."""

    predictor: Predictor
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    valid_metrics: dict[str, float]
    notices: list[str]
    history: list[dict[str, float]]
    summary: dict[str, Any]
    calibration_info: dict[str, Any]
    # Arrays for plots: labels, uncalibrated and calibrated probabilities.
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def _encode(
    df: pd.DataFrame, options: TrainOptions, source: str
) -> tuple[pd.DataFrame, np.ndarray, TargetInfo, list[str], np.ndarray | None]:
    """Encode the target; also returns the kept rows' positions in the file (for messages; None: every row)."""
    if options.target not in df.columns:
        # infer_schema words this error best (close names, the column list).
        infer_schema(df, target=options.target)
    y, keep, info, notices = encode_target(
        df[options.target], column=options.target, positive=options.positive, drop_missing=options.drop_missing_target
    )
    if keep.all():  # positions 0..n-1: no (n,) int64 array kept for the whole run to say so
        return df.reset_index(drop=True), y.astype(np.float32), info, notices, None
    df = df.loc[keep]  # y already holds only the kept rows
    return df.reset_index(drop=True), y.astype(np.float32), info, notices, np.flatnonzero(keep)


def _relabel(df: pd.DataFrame, info: TargetInfo, options: TrainOptions, source: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Encode the target of a separate --valid / --test table with the training labels."""
    if options.target not in df.columns:
        raise DataError(f"{source}: the target column {options.target!r} is missing; it must have the training columns")
    col = df[options.target]
    if options.drop_missing_target:
        df = df.loc[col.notna()].reset_index(drop=True)
        col = df[options.target]
    return df, info.encode(col, source=source)


def _train_config(options: TrainOptions, n_train: int) -> TrainConfig:
    return TrainConfig.from_settings(options, n_train=n_train, verbose=False)


def _model_config(options: TrainOptions, n_features: int, n_numeric: int = 0, name: str | None = None) -> dict[str, Any]:
    """Constructor arguments of model ``name`` (default: ``--model``, or the network of ``auto``)."""
    name = name or (options.model if options.model != "auto" else _neural_names(options)[0])
    return model_config(
        name,
        n_features=n_features,
        hidden=options.hidden,
        dropout=options.dropout,
        n_numeric=n_numeric,
        bins=_ple_bins(options.ple_bins, n_numeric) if name == "ple_mlp" else None,
    )


# Encoded numeric inputs (columns x bins) of the default network at most: the
# first layer's cost grows with them, so wide tables get fewer bins (>= 4).
_PLE_WIDTH = 512


def _ple_bins(bins: int, n_numeric: int) -> int:
    return int(max(4, min(bins, _PLE_WIDTH // max(n_numeric, 1))))


_NEURAL = ("ple_mlp", "mlp", "tabm")


def _neural_names(options: TrainOptions) -> list[str]:
    """The kinds of network ``--model auto`` cross-fits (``neural_member``, joined by ``+``)."""
    return options.neural_member.split("+")


def _fit_members(
    options: TrainOptions, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray
) -> tuple[list[Member], list[dict[str, float]]]:
    """One model trained on ``X`` and early-stopped on ``Xv`` (``--model mlp`` / ``logistic``)."""
    config = _model_config(options, X.shape[1])
    module = build_model(options.model, seed=options.seed, **config)
    with runtime.session(purpose="train", threads=_training_threads()):
        trainer = Trainer(_train_config(options, len(X)), data_parallel=dist.data_parallel()).fit(
            module, X, y, X_valid=Xv, y_valid=yv
        )
    module.cpu()  # predictions run on the CPU (binclf.predictor), wherever training ran
    return [Member(options.model, config, module, 1.0, trainer.logit_shift_)], trainer.history_


# Neural samples (rows x epochs, over all folds) the default model may spend:
# about 5 s at the trainer's ~250k samples/s on two cores, so a 25k-row table
# trains in well under 10 s while small tables never reach the cap.
_SAMPLE_BUDGET = 1_200_000
# Optimiser steps over all folds: on small tables the per-step overhead, not
# the rows, is the cost (~1 ms a step), so steps are capped as well.
_STEP_BUDGET = 6_000
# Floating-point work of the networks' training over all folds (forward and
# backward matmuls, ~6 FLOPs per weight per row): wide one-hot inputs make a
# row expensive, so they get fewer epochs (at least 3); ~4 s at the fused
# step's ~100 GFLOP/s on one core.
_FLOP_BUDGET = 400e9


def _flops_per_row(name: str, config: dict[str, Any]) -> float:
    width = config["n_features"] + (config["n_numeric"] * config["bins"] if name == "ple_mlp" else 0)
    sizes = [width, *config.get("hidden", []), 1]
    return 6.0 * sum(a * b for a, b in zip(sizes, sizes[1:]))


def _epoch_cap(k: int, n_fit: int, batch_size: int, flops_per_row: float, max_epochs: int) -> int:
    """Epochs each fold's network may run within the sample, step and FLOP budgets.

    At least 10 (early stopping usually ends sooner) unless the FLOP budget
    says less, and never fewer than 3.
    """
    steps_per_epoch = -(-n_fit // batch_size)
    epochs = max(10, min(_SAMPLE_BUDGET // (k * max(n_fit, 1)), _STEP_BUDGET // (k * steps_per_epoch)))
    by_flops = _FLOP_BUDGET // max(k * n_fit * flops_per_row, 1.0)
    return int(min(max_epochs, epochs, max(3, by_flops)))


def _shared_encoding(module: torch.nn.Module, X: np.ndarray, fitted: dict[str, torch.Tensor]) -> None:
    """Give a bag's member the encoding (PLE edges) fitted once on every row of the cross-fit.

    The edges are quantiles of the inputs, as unsupervised as the scaling
    before them (also fitted on all training rows), so a fold's held-out rows
    telling where they lie leaks no label. One set of edges for the bag lets
    prediction find each number's bin once for all its members
    (:class:`binclf.infer.MemberPlan`) instead of once per member. ``fitted``
    holds the bag's buffers after its first member.
    """
    if not fitted:
        module.fit_encoding(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
        # The encoding's state: the buffers outside the network it feeds.
        network = encoded_network(module)
        inner = set() if network is None else {id(b) for b in network.buffers()}
        fitted.update({k: b.detach().clone() for k, b in module.named_buffers() if id(b) not in inner})
        return
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for k, v in fitted.items():
            buffers[k].copy_(v)


def _auto_folds(options: TrainOptions, n: int) -> int:
    """5 folds up to ~10k rows; fewer above, where a held-out fold is already large."""
    return int(options.folds) if n <= 10_000 else min(int(options.folds), 3)


def _fit_crossfit(
    options: TrainOptions, X: np.ndarray, y: np.ndarray, n_numeric: int = 0, X_linear: Any = None
) -> tuple[list[Member], list[dict[str, float]], np.ndarray, dict[str, Any]]:
    """``--model auto``: cross-fitted neural + linear members (see :mod:`binclf.train.crossfit`).

    Returns the members (weights summing to 1, as the OOF blend), the first
    fold's training history, the blended OOF logits ``(n,)`` and a summary.
    """
    names = _neural_names(options)
    if n_numeric == 0:
        # No numbers to encode: the plain network is the same model.
        names = list(dict.fromkeys("mlp" if nm == "ple_mlp" else nm for nm in names))
    k = _auto_folds(options, len(y))
    n_fit = int(round(len(y) * (k - 1) / k))
    base = _train_config(options, n_fit)
    configs = {nm: _model_config(options, X.shape[1], n_numeric, name=nm) for nm in names}
    flops = {nm: _flops_per_row(nm, configs[nm]) for nm in names}
    epochs = _epoch_cap(k, n_fit, base.batch_size, sum(flops.values()), options.max_epochs)
    train_config = TrainConfig(**{**base.to_dict(), "max_epochs": epochs})

    def fitter(name: str, j: int):
        encoding: dict[str, torch.Tensor] = {}

        def fit_neural(X_all, y_all, fit_rows, held, fold):
            seed = options.seed * 1000 + 100 * j + fold
            module = build_model(name, seed=seed, **configs[name])
            shared = callable(getattr(module, "fit_encoding", None))
            if shared:
                _shared_encoding(module, X_all, encoding)
            cfg = TrainConfig(**{**train_config.to_dict(), "seed": seed})
            # The fold's rows read in place: no copy of the fit (or held-out) rows.
            trainer = Trainer(cfg, data_parallel=dist.data_parallel()).fit(
                module, X_all, y_all, rows=fit_rows, X_valid=X_all, y_valid=y_all, valid_rows=held,
                fit_encoding=not shared,
            )
            return module.cpu(), trainer.logit_shift_, trainer.history_

        return fit_neural

    fits = {(nm if names.count(nm) == 1 else f"{nm}#{j}"): fitter(nm, j) for j, nm in enumerate(names)}
    with runtime.session(purpose="train", threads=_training_threads(max(flops.values(), default=0.0))):
        cf = cross_fit(
            X, y, k=k, seed=options.seed, fit_neural=fits, linear=options.linear_member, X_linear=X_linear,
            linear_path=None if X_linear is None else TEXT_LINEAR_PATH,
        )
    members = []
    for bag in cf.bags:
        nm = bag.name.split("#")[0]
        members += [Member(nm, configs[nm], m, bag.weight / len(bag.modules), s) for m, s in zip(bag.modules, bag.shifts)]
    lin_config = {"n_features": (X if X_linear is None else X_linear).shape[1]}
    members += [Member("logistic", lin_config, m, cf.weight / len(cf.linear), 0.0) for m in cf.linear]
    # A member with weight 0 adds nothing but size and time.
    members = [m for m in members if m.weight > 0]
    info = {**cf.info, "neural_models": names, "neural_configs": configs, "train_config": train_config.to_dict()}
    return members, cf.histories[0] if cf.histories else [], cf.oof_logits, info


# Network FLOPs per row from which a training step has enough work to share
# between threads (a 512-row step of ~0.5 GFLOP: wide one-hot inputs).
_SHARED_FLOPS_PER_ROW = 1e6


def _training_threads(flops_per_row: float = 0.0) -> int | None:
    """torch threads for training networks of ``flops_per_row``: 1 for small ones, else all (None).

    Intra-op threads split matrix products of a few hundred rows by 128 columns,
    too little work to share; on a loaded machine the extra thread waits for a
    core and every step waits for it (measured: 40x slower steps). Networks of
    at least ``_SHARED_FLOPS_PER_ROW`` keep the caller's threads. Applied by
    :func:`binclf.runtime.session`, which restores the count afterwards.
    """
    return None if flops_per_row >= _SHARED_FLOPS_PER_ROW else 1


@dataclass
class HeldOutDecision:
    """What :func:`decide_on_held_out` fits and scores: calibrator, threshold policy, metrics."""

    calibrator: Any
    calibration_info: dict[str, Any]
    policy: Any
    p_held: np.ndarray
    p_test: np.ndarray
    metrics: dict[str, float]
    intervals: dict[str, Any]
    valid_metrics: dict[str, float]


def decide_on_held_out(
    z_held: np.ndarray, y_held: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, options: Any, *,
    notices: list[str],
) -> HeldOutDecision:
    """Calibrate and choose the threshold on held-out logits, then score the test rows.

    The same last steps for tables (:func:`train_table`) and images
    (:func:`binclf.train.images.train_images`).

    Parameters
    ----------
    z_held, y_held : ndarray of shape (n,)
        Held-out logits (validation split, or out-of-fold) and their 0/1 labels.
    z_test, y_test : ndarray of shape (m,)
        The test rows' logits and labels, never seen in training.
    options : TrainOptions or ImageTrainOptions
        ``calibration``, ``objective``, ``abstain_precision``, ``n_boot``, ``seed``.
    notices : list of str
        The threshold's fallback notice, if any, is appended here.

    Returns
    -------
    HeldOutDecision
    """
    # Each step's freed arrays (several of the held-out rows' size) go back to the OS
    # before the next step's are made: left resident, the next step's arrays rarely
    # fit in them and RSS grew by each step in turn.
    release = functools.partial(runtime.release_freed_memory, array_bytes=z_held.nbytes)
    calibrator, cal_info = select_calibrator(z_held, y_held, method=options.calibration, seed=options.seed)
    release()
    p_held = calibrator.predict_proba(z_held)
    policy = choose_threshold(
        y_held, p_held, options.objective, n_boot=options.n_boot, seed=options.seed,
        abstain_precision=options.abstain_precision,
    )
    release()
    if policy.fallback:
        notices.append(policy.fallback)
    p_test = calibrator.predict_proba(z_test)
    metrics = binary_metrics(y_test, p_test, threshold=policy.threshold)
    release()
    intervals = bootstrap_intervals(y_test, p_test, threshold=policy.threshold, n_boot=options.n_boot, seed=options.seed)
    release()
    valid_metrics = binary_metrics(y_held, p_held, threshold=policy.threshold)
    release()
    return HeldOutDecision(
        calibrator=calibrator,
        calibration_info=cal_info,
        policy=policy,
        p_held=p_held,
        p_test=p_test,
        metrics=metrics,
        intervals=intervals,
        valid_metrics=valid_metrics,
    )


@runtime.entry_point("train")  # one BLAS thread for numpy/scipy's small products; restored on return
def train_table(
    df: pd.DataFrame | Callable[[], pd.DataFrame],
    options: TrainOptions,
    *,
    valid_df: pd.DataFrame | None = None,
    test_df: pd.DataFrame | None = None,
    source: str = "data",
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train on a raw table; see the module docstring for the steps.

    Runs inside :func:`binclf.runtime.session` (``purpose="train"``): numpy's
    BLAS on one thread, small networks on one torch thread, both restored on
    return; :func:`binclf.runtime.describe` names the path taken afterwards.

    Parameters
    ----------
    df : DataFrame, or a function returning it
        The training table, target column included. Training keeps only what
        it needs of the table once the model inputs are made (the test rows'
        feature columns), so a table nothing else refers to is freed then: pass
        a function that hands over the only reference (``[df].pop``, as the
        command line does) to let that memory go; a DataFrame argument stays
        referenced by the caller.
    options : TrainOptions
        What to train and how.
    valid_df, test_df : DataFrame, optional
        Separate validation / test tables (else split from ``df``).
    source : str
        The table's name in messages.
    log : callable, optional
        Receives one-line progress messages.

    Returns
    -------
    TrainResult
        The fitted :class:`~binclf.predictor.Predictor` and what the report shows.
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    df, y, target, notices, file_rows = _encode(df() if callable(df) else df, options, source)
    schema, schema_notices = infer_schema(
        df, target=options.target, drop=options.drop, categorical=options.categorical, numeric=options.numeric,
        text=options.text,
    )
    check_finite(df, schema.numeric, source=source, rows=file_rows)
    for name, extra_df in (("--valid file", valid_df), ("--test file", test_df)):
        if extra_df is not None:
            # A training column missing there would become missing values (the
            # default model stacks --valid rows under the training rows).
            check_columns(schema, name, [str(c) for c in extra_df.columns], target=options.target)
            check_finite(extra_df, schema.numeric, source=name)
    notices += schema_notices
    for n in notices:
        say(n)

    # Each part: (its rows, its labels); the rows are positions in df (a DataFrame
    # only for --valid / --test tables), made into a DataFrame one at a time when
    # transformed, so the table's splits are never all copied at once (_rows_frame).
    parts: dict[str, tuple[np.ndarray | pd.DataFrame, np.ndarray]] = {}
    if valid_df is None or test_df is None:
        fractions = [1 - (valid_df is None) * options.valid_fraction - (test_df is None) * options.test_fraction]
        if valid_df is None:
            fractions.append(options.valid_fraction)
        if test_df is None:
            fractions.append(options.test_fraction)
        idx = stratified_split(y, fractions=tuple(fractions), seed=options.seed)
        names = ["train"] + (["valid"] if valid_df is None else []) + (["test"] if test_df is None else [])
        for name, rows in zip(names, idx):
            parts[name] = (rows, y[rows])
    else:
        parts["train"] = (df, y)
    if valid_df is not None:
        parts["valid"] = _relabel(valid_df, target, options, "--valid file")
    if test_df is not None:
        parts["test"] = _relabel(test_df, target, options, "--test file")
    for name, (_, yy) in parts.items():
        if len(np.unique(yy)) < 2 and len(yy) > 0:
            raise DataError(
                f"the {name} split has only one class ({len(yy)} rows): the table is too small or too imbalanced "
                "to split; provide more rows of the rarer class or pass --valid / --test files"
            )

    # What the report and `binclf info` show of the table, while it is here.
    summary = _summary(df, schema, target, {k: len(v[1]) for k, v in parts.items()}, source)
    # Each stage's temporaries (schema statistics, the split's index arrays) are freed
    # but stay resident under binclf.runtime.tune_malloc: return them before the next.
    runtime.release_freed_memory()
    train_rows, y_train = parts["train"]
    crossfit = options.model == "auto"
    if crossfit:
        # The default model cross-fits over train + validation: every one of
        # those rows trains k - 1 fold members and is predicted out of fold by
        # the one that did not see it; calibration and threshold use all of them.
        valid_rows = parts["valid"][0]
        if isinstance(train_rows, np.ndarray) and isinstance(valid_rows, np.ndarray):
            fit_on = (df, np.concatenate([train_rows, valid_rows]))
        else:
            fit_on = (pd.concat([_rows_frame(df, train_rows), _rows_frame(df, valid_rows)], ignore_index=True), None)
        y_train = np.concatenate([y_train, parts["valid"][1]])
        # Both parts live on in fit_on alone (their positions: 8 bytes a row, kept
        # twice through the statistics and the transform otherwise).
        del train_rows, valid_rows, parts["train"], parts["valid"]
    else:
        fit_on = _rows_of(df, train_rows)
    t_stats = time.perf_counter()
    if schema.text:  # free-text columns: TF-IDF + projection (binclf.data.text), one pass over the training rows
        prep = TextPreprocessor(
            schema=schema, numeric=options.numeric_scaling, seed=options.seed, encoder=options.text_encoder
        )
        X_train = prep.fit_transform_cached(_rows_frame(*fit_on))
        timings = {"statistics_seconds": time.perf_counter() - t_stats}  # with the transform, here
        for n in prep.notices:
            say(n)
        notices += prep.notices
    else:
        # The training rows are read from the table's columns where they are: a
        # column's copy at a time for the statistics, a block of rows at a time
        # for the inputs, never a copy of the rows as a frame.
        prep = Preprocessor(schema=schema, numeric=options.numeric_scaling).fit(fit_on[0], rows=fit_on[1])
        # The statistics pass: what a streamed table spends its first pass on (benchmarks/scale.py).
        timings = {"statistics_seconds": time.perf_counter() - t_stats}
        # The statistics' column copies, freed but resident (the inputs below are
        # mapped afresh, not made in them): measured +56 MB at the transform's peak.
        runtime.release_freed_memory()
        X_train = prep.transform(fit_on[0], rows=fit_on[1])
    del fit_on
    # Networks read the dense block; the linear member all of it (TF-IDF included).
    X_linear = X_train if schema.text else None
    X_train = dense_part(X_train, prep.n_dense_) if schema.text else X_train
    runtime.release_freed_memory()
    # The test rows are transformed after training (their inputs never live beside the
    # training ones) but checked now: a bad value fails before any training. Their
    # feature columns, and the validation rows' (transformed once the table is gone:
    # one-hot inputs can be several times the table), are all that training keeps of
    # the table: it goes here (freed where the caller handed over its reference, as
    # the command line does).
    test_frame, test_rows = _rows_of(df, parts["test"][0])
    (prep.table if schema.text else prep).check(test_frame, rows=test_rows)
    test_frame = _rows_frame(test_frame[schema.names], test_rows)
    y_test = parts["test"][1]
    if not crossfit:
        valid_frame, valid_rows = _rows_of(df, parts["valid"][0])
        valid_frame = _rows_frame(valid_frame[schema.names], valid_rows)
        y_valid = parts["valid"][1]
    del df, parts
    runtime.release_freed_memory(arrow=True)
    if not crossfit:
        X_valid = prep.transform(valid_frame)
        del valid_frame
    extra_info: dict[str, Any] = {}
    t_fit = time.perf_counter()
    # z_held, y_held: the held-out logits and labels that calibration and the threshold are
    # chosen on: the validation split, or with cross-fitting the out-of-fold logits of train + validation.
    if crossfit:
        say(
            f"training {options.model} ({_auto_folds(options, len(y_train))}-fold cross-fit) on {len(y_train)} rows x "
            f"{prep.n_features_out_} features (test {len(y_test)})"
        )
        members, history, z_held, extra_info = _fit_crossfit(
            options, X_train, y_train, len(prep.numeric_), X_linear=X_linear
        )
        y_held = y_train
    else:
        y_held = y_valid
        X_valid_dense = dense_part(X_valid, prep.n_dense_) if schema.text else X_valid
        say(
            f"training {options.model} on {len(y_train)} rows x {X_train.shape[1]} features "
            f"(validation {len(y_held)}, test {len(y_test)})"
        )
        members, history = _fit_members(options, X_train, y_train, X_valid_dense, y_held)
        for m in members:
            m.module.eval()
        z_held = member_logits(members, X_valid)
        del X_valid, X_valid_dense

    timings["fit_seconds"] = time.perf_counter() - t_fit
    for m in members:
        m.module.eval()
    # The test rows' inputs are made only now, once the training inputs are gone:
    # only logits from here on (the bootstrap and the report hold none).
    del X_train, X_linear
    runtime.release_freed_memory()
    X_test = prep.transform(test_frame)
    del test_frame
    z_test = member_logits(members, X_test)
    del X_test
    runtime.release_freed_memory()
    d = decide_on_held_out(z_held, y_held, z_test, y_test, options, notices=notices)
    if crossfit:
        d.calibration_info["fitted_on"] = "out-of-fold predictions of train + validation"
    calibrator, cal_info, policy, p_held, p_test = d.calibrator, d.calibration_info, d.policy, d.p_held, d.p_test
    metrics, intervals, valid_metrics = d.metrics, d.intervals, d.valid_metrics
    seconds = time.perf_counter() - t0
    # Built whole, once everything it holds is fitted (no placeholder calibrator mutated later).
    predictor = Predictor(
        schema=schema,
        target=target,
        preprocessor=prep,
        members=members,
        calibrator=calibrator,
        threshold=policy,
        info={
            "options": options.to_dict(),
            "metrics": {"test": metrics, "valid": valid_metrics},
            "intervals": {k: list(v) for k, v in intervals.items()},
            "calibration": cal_info,
            "history": history,
            "summary": summary,
            **({"crossfit": extra_info} if extra_info else {}),
            "distributed": {"world_size": dist.current().world_size, "backend": dist.current().backend},
            "notices": notices,
            "train_seconds": seconds,
            "timings": timings,
        },
    )
    return TrainResult(
        predictor=predictor,
        metrics=metrics,
        intervals=intervals,
        valid_metrics=valid_metrics,
        notices=notices,
        history=history,
        summary=summary,
        calibration_info=cal_info,
        curves={
            "y_valid": y_held,
            "p_valid_raw": sigmoid(z_held),
            "p_valid": p_held,
            "y_test": y_test,
            "p_test_raw": sigmoid(z_test),
            "p_test": p_test,
        },
        seconds=seconds,
    )


def _rows_frame(df: pd.DataFrame, part: np.ndarray | pd.DataFrame | None) -> pd.DataFrame:
    """A part of the table as a frame: ``df``'s rows at the positions ``part``, or ``part`` itself (a --valid /
    --test table), or ``df`` (None)."""
    if part is None:
        return df
    return df.iloc[part].reset_index(drop=True) if isinstance(part, np.ndarray) else part


def _rows_of(df: pd.DataFrame, part: np.ndarray | pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
    """A part of the table as (frame, positions in it or None for all): ``df`` and the positions
    ``part``, or ``part`` itself (a --valid / --test table); read without copying the rows first."""
    return (df, part) if isinstance(part, np.ndarray) else (part, None)


def _distinct(col: pd.Series) -> int:
    """How many distinct present values ``col`` holds (``nunique(dropna=True)``).

    Numbers are counted on a sorted copy of the column: measured on 3M float32
    values, 0.02 s and 14 MB where pandas' hash table takes 0.27 s and is the
    largest allocation of the run's preparation.
    """
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiu":
        v = np.sort(col.to_numpy())
        if v.dtype.kind == "f":
            v = v[: v.size - int(np.count_nonzero(np.isnan(v)))]  # NaN sorts last
        return int(v.size and 1 + np.count_nonzero(v[1:] != v[:-1]))
    return int(col.nunique(dropna=True))


def _summary(df: pd.DataFrame, schema: Schema, target: TargetInfo, split_rows: dict[str, int], source: str) -> dict:
    """The data summary the report and ``binclf info`` show."""
    columns = []
    for spec in schema.columns:
        col = df[spec.name]
        columns.append(
            {
                "name": spec.name,
                "role": spec.role,
                "dtype": spec.dtype,
                "missing": int(col.isna().sum()),
                "distinct": _distinct(col),
            }
        )
    return {
        "source": source,
        "rows": int(len(df)),
        "positives": int(target.n_positive),
        "negatives": int(target.n_negative),
        "positive_label": target.positive,
        "negative_label": target.negative,
        "columns": columns,
        "dropped": [list(d) for d in schema.dropped],
        "split_rows": split_rows,
    }

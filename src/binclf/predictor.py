"""``Predictor``: the one prediction path (command line, Python API, server, export).

A predictor holds everything a bundle holds and applies it in one order:

1. the fitted :class:`~binclf.data.preprocessing.Preprocessor` turns a table into a
   float matrix;
2. each member model gives logits; the logit shift of its imbalance treatment
   (pos_weight, balanced sampling) is subtracted, so each member speaks of the
   true class prior;
3. members are averaged as probabilities (weights sum to 1), back to a logit;
4. the calibrator maps that logit to the reported probability;
5. the threshold policy turns the probability into a decision.

This is where binary semantics live; models only ever return logits.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from torch import nn

from binclf import __version__
from binclf import runtime
from binclf.infer import MemberPlan, eval_logits
from binclf.io.prefetch import prefetch
from binclf.bundle import BUNDLE_LAYOUT, check_columns, load_bundle, save_bundle
from binclf.io.atomic import atomic_file, check_output_file
from binclf.validate import check_threshold
from binclf.decide.calibration import calibrator_from_dict
from binclf.io.tables import PARQUET_EXTENSIONS, iter_batches, read_columns
from binclf.data.schema import Schema
from binclf.data.target import TargetInfo
from binclf.errors import BundleError, DataError
from binclf.nn.models import build_model
from binclf.numeric import logit, sigmoid
from scipy import sparse

from binclf.data.preprocessing import Preprocessor, UnseenCounts
from binclf.data.text import preprocessor_from_dict
from binclf.decide.thresholds import ThresholdPolicy

__all__ = ["Member", "Predictor", "ABSTAIN", "PREDICTION_EXTENSIONS", "check_prediction_output", "member_logits"]

ABSTAIN = "abstain"
#: The predictions file types :meth:`Predictor.predict_file` writes, by extension.
PREDICTION_EXTENSIONS = (".csv", ".tsv", *PARQUET_EXTENSIONS)


def check_prediction_output(output: str | Path, *, source: str | Path | None = None, option: str = "output") -> Path:
    """Refuse a predictions file that cannot be written, has an unsupported extension, or would destroy an
    input (the ``source`` table, a file of a bundle); see :func:`binclf.io.atomic.check_output_file`."""
    return check_output_file(
        output, option=option, extensions=PREDICTION_EXTENSIONS, inputs=[source] if source else [],
        layouts=(BUNDLE_LAYOUT,),
    )


def _output_format(path: Path) -> str:
    name = Path(path).name.lower()
    return "parquet" if name.endswith(PARQUET_EXTENSIONS) else "tsv" if name.endswith(".tsv") else "csv"


@dataclass
class Member:
    """One model of the predictor: built from its ``kind`` (a registered model name) and ``config``, averaged with ``weight``.

    The bundle stores ``kind`` under the key ``"name"``.
    """

    kind: str
    config: dict[str, Any]
    module: nn.Module
    weight: float = 1.0
    logit_shift: float = 0.0

    def to_dict(self, prefix: str) -> dict[str, Any]:
        return {
            "name": self.kind,
            "config": self.config,
            "weight": self.weight,
            "logit_shift": self.logit_shift,
            "prefix": prefix,
        }


@torch.inference_mode()
def member_logits(members: Sequence[Member], X: Any, *, plan: MemberPlan | None = None) -> np.ndarray:
    """Prior-corrected, member-averaged logits ``(n,)`` from model inputs ``X`` ``(n, d)``.

    Each member's logit shift is subtracted; several members are averaged as
    probabilities with their weights and turned back into a logit. Training
    calls it before the calibrator exists, so it needs no Predictor. ``X`` may be
    a CSR matrix (text columns, :mod:`binclf.data.text`): a member as wide as
    ``X`` (the TF-IDF linear member) multiplies the sparse rows; networks read
    the dense block, the first ``n_features`` columns of their config.

    All members are evaluated together (:class:`binclf.infer.MemberPlan`); a
    ``plan`` built for these members' modules (a :class:`Predictor` keeps one)
    saves preparing their weights again.
    """
    if sparse.issparse(X):
        return _sparse_member_logits(members, X)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    modules = [m.module for m in members]
    if plan is None or not plan.current(modules):
        plan = MemberPlan(modules)
    z = plan(Xt)
    shifts = torch.tensor([m.logit_shift for m in members], dtype=torch.float32)
    if bool(shifts.any()):
        z -= shifts
    if len(members) == 1:
        return z[:, 0].double().numpy()
    weights = torch.tensor([m.weight for m in members], dtype=torch.float64)
    p = torch.sigmoid(z.double()) @ weights
    return logit(p.numpy())


def _sparse_member_logits(members: Sequence[Member], X: Any) -> np.ndarray:
    dense: dict[int, torch.Tensor] = {}
    p = np.zeros(X.shape[0], dtype=np.float64)
    for m in members:
        width = int(m.config.get("n_features", X.shape[1]))
        if width == X.shape[1]:  # the TF-IDF linear member
            w = m.module.output.weight.detach().double().numpy().ravel()
            z = X @ w + float(m.module.output.bias.detach().double())
        else:
            if width not in dense:
                dense[width] = torch.from_numpy(np.ascontiguousarray(X[:, :width].toarray(), dtype=np.float32))
            z = eval_logits(m.module, dense[width]).double().numpy()
        z = z - m.logit_shift
        if len(members) == 1:
            return z
        p += m.weight * sigmoid(z)
    return logit(p)


class Predictor:
    """Applies a trained binclf model to tables. Build it with :meth:`load` or from training.

    It is built whole: the fitted calibrator (``calibrator_from_dict({"method":
    "none"})`` for the raw sigmoid) and the threshold policy are arguments, never
    placeholders filled in later.
    """

    def __init__(
        self,
        *,
        schema: Schema,
        target: TargetInfo,
        preprocessor: Preprocessor,
        members: Sequence[Member],
        calibrator: Any,
        threshold: ThresholdPolicy | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if not members:
            raise ValueError("a Predictor needs at least one member model")
        if not hasattr(calibrator, "predict_proba"):
            raise TypeError(f"calibrator must be a fitted calibrator (see binclf.decide.calibration), got {calibrator!r}")
        self.schema = schema
        self.target = target
        self.preprocessor = preprocessor
        self.members = list(members)
        self.calibrator = calibrator
        self.threshold = threshold
        # Free-form JSON the bundle carries along: training metrics, history, data summary.
        self.info = dict(info or {})
        for m in self.members:
            m.module.eval()
        # The members' weights prepared for prediction (BatchNorm folded, logistic members
        # stacked), built on first use and rebuilt if a module changes (MemberPlan.current).
        self._plan: MemberPlan | None = None

    # -- persistence -------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        """The JSON half of a bundle."""
        return {
            "binclf_version": self.info.get("binclf_version", __version__),
            "versions": self.info.get("versions", _versions()),
            "schema": self.schema.to_dict(),
            "target": self.target.to_dict(),
            "preprocessing": self.preprocessor.to_dict(),
            "members": [m.to_dict(f"m{i}.") for i, m in enumerate(self.members)],
            "calibration": self.calibrator.to_dict(),
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
            "info": {k: v for k, v in self.info.items() if k not in ("binclf_version", "versions")},
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights of every member, keyed ``m{i}.{parameter}``."""
        out = {}
        for i, m in enumerate(self.members):
            for k, v in m.module.state_dict().items():
                out[f"m{i}.{k}"] = v
        if hasattr(self.preprocessor, "tensors"):  # text columns: idf and projections
            out.update(self.preprocessor.tensors())
        return out

    def save(self, path: str | Path, *, force: bool = False, extra_files: dict[str, bytes] | None = None) -> Path:
        """Write the bundle directory atomically (see :func:`binclf.bundle.save_bundle`)."""
        return save_bundle(path, meta=self.to_meta(), tensors=self.tensors(), force=force, extra_files=extra_files)

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        """Load and verify a bundle written by ``binclf train`` or :meth:`save`.

        Every field of ``bundle.json`` is validated (:func:`binclf.bundle_schema.validate_meta`),
        its content and the weights are hash-checked, and each member's tensors must
        have the shapes its config gives: any problem is a one-line BundleError.
        """
        from binclf.bundle_schema import check_member_tensors

        meta, tensors = load_bundle(path)
        if meta.get("kind") == "image":  # an image bundle: same path, images in place of rows
            from binclf.image_predictor import ImagePredictor

            return ImagePredictor.from_meta(meta, tensors, path=path)
        where = Path(path) / "bundle.json"
        members = []
        for i, spec in enumerate(meta["members"]):
            try:
                module = build_model(spec["name"], **spec["config"])
            except Exception as exc:  # noqa: BLE001 - a config from a file: any failure is a bad bundle
                raise BundleError(
                    f"{where}: members[{i}] ({spec['name']!r}) cannot be built from its config "
                    f"({' '.join(str(exc).split())[:200]}); the bundle is damaged or was edited; "
                    "train the model again or restore the original bundle"
                ) from None
            prefix = spec["prefix"]
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            check_member_tensors(
                i, spec, module.state_dict(), state, parameters={n for n, _ in module.named_parameters()},
                where=Path(path) / meta["weights"]["file"],
            )
            module.load_state_dict(state, strict=True)
            members.append(Member(spec["name"], spec["config"], module, float(spec["weight"]), float(spec["logit_shift"])))
        info = dict(meta.get("info") or {})
        info["binclf_version"] = meta.get("binclf_version")
        info["versions"] = meta.get("versions")
        try:
            # validate_meta has checked every field these read; the except is a backstop that
            # keeps anything it missed a one-line BundleError rather than an unexpected crash.
            return cls(
                schema=Schema.from_dict(meta["schema"]),
                target=TargetInfo.from_dict(meta["target"]),
                preprocessor=preprocessor_from_dict(meta["preprocessing"], tensors),
                members=members,
                calibrator=calibrator_from_dict(meta["calibration"]),
                threshold=None if meta.get("threshold") is None else ThresholdPolicy.from_dict(meta["threshold"]),
                info=info,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{where}: does not describe a loadable model ({' '.join(str(exc).split())[:200]})") from None

    # -- the prediction path ----------------------------------------------------------
    def transform(self, df: pd.DataFrame, *, row_offset: int = 0, unseen: UnseenCounts | None = None) -> np.ndarray:
        """Table -> model inputs ``(n, n_features)`` float32 (validates the columns).

        Warns (:class:`~binclf.data.preprocessing.UnseenCategoryWarning`) when a
        categorical column's values are mostly unknown levels; with ``unseen`` the
        counts are collected there instead (one warning per file, not per batch).
        """
        if unseen is not None:
            return self.preprocessor.transform(df, row_offset=row_offset, unseen=unseen)
        counts = UnseenCounts()
        X = self.preprocessor.transform(df, row_offset=row_offset, unseen=counts)
        counts.warn(stacklevel=3)
        return X

    @runtime.entry_point("predict")  # process knobs set here and restored on return (binclf.runtime)
    def uncalibrated_logits(self, X: np.ndarray) -> np.ndarray:
        """Prior-corrected, member-averaged logits ``(n,)`` from model inputs ``(n, d)``."""
        if sparse.issparse(X):
            return member_logits(self.members, X)
        modules = [m.module for m in self.members]
        if self._plan is None or not self._plan.current(modules):
            self._plan = MemberPlan(modules)
        return member_logits(self.members, X, plan=self._plan)

    def member_groups(self) -> list[tuple[str, dict[str, Any], int, float]]:
        """Members grouped by model and config: ``(name, config, count, total weight)``, in order."""
        groups: dict[str, list[Any]] = {}
        for m in self.members:
            key = f"{m.kind}:{json.dumps(m.config, sort_keys=True)}"
            g = groups.setdefault(key, [m.kind, m.config, 0, 0.0])
            g[2] += 1
            g[3] += m.weight
        return [tuple(g) for g in groups.values()]

    def proba_from_inputs(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the positive class ``(n,)`` from model inputs."""
        return self.calibrator.predict_proba(self.uncalibrated_logits(X))

    @runtime.entry_point("predict")
    def predict_proba(self, df: pd.DataFrame, *, row_offset: int = 0) -> np.ndarray:
        """Calibrated probability of the positive class for each row ``(n,)``."""
        return self.proba_from_inputs(self.transform(df, row_offset=row_offset))

    def decide(self, proba: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
        """1 / 0 decisions (and -1 for abstain, with an abstain band) for probabilities ``(n,)``.

        A ``threshold`` given here must be a finite number in [0, 1] (NaN would make every row negative).
        """
        if threshold is not None:
            return (proba >= check_threshold(threshold, name="threshold")).astype(np.int64)
        if self.threshold is None:
            return (proba >= 0.5).astype(np.int64)
        return self.threshold.decide(proba)

    @runtime.entry_point("predict")
    def predict(self, df: pd.DataFrame, *, threshold: float | None = None) -> np.ndarray:
        """Predicted labels ``(n,)`` in the original label values (or ``"abstain"``)."""
        return self._labels(self.decide(self.predict_proba(df), threshold=threshold))

    def _labels(self, decisions: np.ndarray) -> np.ndarray:
        out = np.empty(len(decisions), dtype=object)
        out[decisions == 1] = self.target.positive
        out[decisions == 0] = self.target.negative
        out[decisions == -1] = ABSTAIN
        return out

    @runtime.entry_point("predict")
    def predict_frame(
        self, df: pd.DataFrame, *, keep: Sequence[str] = (), threshold: float | None = None, row_offset: int = 0
    ) -> pd.DataFrame:
        """``keep`` columns, then ``probability`` and ``prediction``, one row per input row."""
        return self._predict_arrow(df, keep=keep, threshold=threshold, row_offset=row_offset).to_pandas()

    def _predict_arrow(
        self,
        df: pd.DataFrame,
        *,
        keep: Sequence[str],
        threshold: float | None,
        row_offset: int,
        unseen: UnseenCounts | None = None,
    ) -> pa.Table:
        proba = self.proba_from_inputs(self.transform(df, row_offset=row_offset, unseen=unseen))
        decisions = self.decide(proba, threshold=threshold)
        labels = [self.target.negative, self.target.positive]
        if threshold is None and self.threshold is not None and self.threshold.abstain is not None:
            # Every batch gets the same (text) column type, abstaining or not.
            dictionary = pa.array([str(v) for v in labels] + [ABSTAIN])
            decisions = np.where(decisions == -1, 2, decisions)
        else:
            dictionary = pa.array(labels)
        # Labels by lookup in C++: no per-row Python objects on the hot path.
        prediction = dictionary.take(pa.array(decisions))
        columns = {name: pa.array(df[name].to_numpy(), from_pandas=True) for name in keep}
        columns["probability"] = pa.array(proba, type=pa.float64())
        columns["prediction"] = prediction
        return pa.table(columns)

    # -- files -----------------------------------------------------------------------------
    @runtime.entry_point("predict")
    def predict_file(
        self,
        source: str | Path,
        output: str | Path | None = None,
        *,
        keep: Sequence[str] = (),
        threshold: float | None = None,
        batch_rows: int = 65_536,
        sep: str | None = None,
        encoding: str | None = None,
        notices: list[str] | None = None,
    ) -> dict[str, Any]:
        """Predict a CSV or Parquet file in chunks (flat memory) into ``output``.

        The output format follows its extension (:data:`PREDICTION_EXTENSIONS`:
        ``.csv``, ``.tsv``, ``.parquet``/``.pq``); ``None`` writes CSV to
        standard output. A file output is checked first (:func:`check_prediction_output`),
        then written to a temporary name and renamed only when complete
        (:func:`binclf.io.atomic.atomic_file`): an error leaves nothing.
        Returns ``{"rows", "seconds", "output"}``.

        ``keep`` columns that are not features are copied as the file spells
        them (CSV: as text, so ``007`` stays ``007``; Parquet: in their own type).
        """
        t0 = time.perf_counter()
        if output is not None:
            output = check_prediction_output(output, source=source)
        keep = list(dict.fromkeys(keep))
        names = read_columns(source, sep=sep, encoding=encoding)
        self._check_columns(source, names, keep, notices)
        wanted = list(dict.fromkeys([*self.schema.names, *keep]))
        types = {k: v for k, v in self.preprocessor.read_types().items() if k in wanted}
        types.update({k: "categorical" for k in keep if k not in types})
        # Read the next chunk while this one is predicted (pyarrow and torch release the GIL).
        # The last chunk is predicted after the reader has finished, on one core:
        # 65,536-row chunks keep that tail short (measured, 1M-row CSV: 1.9-2.2 s
        # vs 2.1-2.8 s with 262,144-row chunks).
        batches = prefetch(
            iter_batches(source, batch_rows=batch_rows, sep=sep, columns=wanted, column_types=types, encoding=encoding)
        )
        if output is None:
            rows = self._write_stream(batches, sys.stdout.buffer, keep=keep, threshold=threshold, source=source)
            return {"rows": rows, "seconds": time.perf_counter() - t0, "output": None}
        with atomic_file(output) as tmp:
            rows = self._write_file(batches, tmp, fmt=_output_format(output), keep=keep, threshold=threshold,
                                    source=source)
        return {"rows": rows, "seconds": time.perf_counter() - t0, "output": str(output)}

    def _check_columns(
        self, source: str | Path, names: Sequence[str], keep: Sequence[str], notices: list[str] | None
    ) -> None:
        check_columns(self.schema, source, list(names), target=self.target.column, keep=keep, notices=notices)

    def _tables(self, batches, *, keep, threshold, source, workers: int | None = None):
        """Arrow tables of predictions, one per batch, in file order.

        With several ``workers`` (default :func:`binclf.runtime.prediction_workers`)
        that many batches are predicted at once in a thread pool (preprocessing,
        members and calibration release the GIL for their array work), while the
        reader reads ahead in its own thread. One worker leaves a core idle
        whenever the model, not the reader, is the slower side (the default
        ensemble: ~6 of its ~7 us of CPU per Parquet row are the members). On
        a 2-core machine loaded 4x over by other processes it changed nothing
        measurable either way (default bundle, 262k rows, in process: 1.7-3.0 s
        vs 1.9-2.7 s; CPU seconds equal). At most ``workers`` batches are in
        flight, so memory stays flat (one batch more than before: ~40 MiB at
        50 columns); the first failing batch raises, in file order, as it would
        one batch at a time.
        """
        workers = runtime.prediction_workers() if workers is None else max(1, int(workers))
        unseen = UnseenCounts()  # one warning per file, with the whole file's fraction

        def predict(df: pd.DataFrame, offset: int, counts: UnseenCounts) -> pa.Table:
            try:
                return self._predict_arrow(df, keep=keep, threshold=threshold, row_offset=offset, unseen=counts)
            except DataError as exc:
                raise DataError(f"{source}: {exc}") from None  # name the file, as the reader does

        def merged(counts: UnseenCounts) -> None:
            for name, (n_unseen, present, example, levels) in counts.counts.items():
                unseen.add(name, n_unseen, present, example, levels)

        offset = 0
        if workers == 1:
            for df in batches:
                counts = UnseenCounts()
                table = predict(df, offset, counts)
                merged(counts)
                yield table
                offset += len(df)
            unseen.warn()
            return
        pending: deque[tuple[Future, UnseenCounts]] = deque()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="binclf-predict")
        try:
            for df in batches:
                counts = UnseenCounts()  # per batch, merged in file order (the first unseen example)
                pending.append((pool.submit(runtime.in_predict_worker, predict, df, offset, counts), counts))
                offset += len(df)
                if len(pending) >= workers:
                    future, counts = pending.popleft()
                    table = future.result()
                    merged(counts)
                    yield table
            while pending:
                future, counts = pending.popleft()
                table = future.result()
                merged(counts)
                yield table
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        unseen.warn()

    def _write_file(self, batches, path: Path, *, fmt: str, keep, threshold, source) -> int:
        rows = 0
        writer = None
        try:
            for table in self._tables(batches, keep=keep, threshold=threshold, source=source):
                if writer is None:
                    if fmt == "parquet":
                        # No dictionary attempt on the probabilities (distinct floats: the writer
                        # tried, then fell back, every page): 0.10 -> 0.05 CPU-s per 1M rows written.
                        text = [f.name for f in table.schema if f.name != "probability"]
                        writer = pq.ParquetWriter(path, table.schema, use_dictionary=text)
                    else:
                        options = pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
                        writer = pacsv.CSVWriter(path, table.schema, write_options=options)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        return rows

    def _write_stream(self, batches, stream, *, keep, threshold, source) -> int:
        rows = 0
        writer = None
        for table in self._tables(batches, keep=keep, threshold=threshold, source=source):
            if writer is None:
                writer = pacsv.CSVWriter(stream, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
        stream.flush()
        return rows

    # -- evaluation ---------------------------------------------------------------------------
    def labels_to_01(self, values: pd.Series, *, source: str = "data") -> np.ndarray:
        """Map a column of the target's labels to 0/1 ``(n,)`` float32.

        Labels match as the training labels did (case-insensitive text, ``1`` ==
        ``1.0``). Missing or unknown labels are a DataError naming the rows.
        """
        return self.target.encode(values, source=source)

    def labelled(
        self, df: pd.DataFrame, *, source: str = "data", notices: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """0/1 labels and calibrated probabilities, both ``(n,)``, of a labelled table.

        Columns the model does not use add a notice to ``notices``.
        """
        if self.target.column not in df.columns:
            raise DataError(
                f"{source}: the target column {self.target.column!r} is not in the data; "
                "evaluation needs labelled rows (use `binclf predict` for unlabelled ones)"
            )
        self._check_columns(source, [str(c) for c in df.columns], (), notices)
        y = self.labels_to_01(df[self.target.column], source=source)
        try:
            return y, self.predict_proba(df)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None

    def evaluate(
        self,
        df: pd.DataFrame,
        *,
        threshold: float | None = None,
        source: str = "data",
        return_intervals: bool = False,
        n_boot: int = 200,
        seed: int = 0,
        notices: list[str] | None = None,
    ):
        """Metrics (ROC-AUC, PR-AUC, log-loss, Brier, ECE, ... at the threshold) on labelled data.

        With ``return_intervals`` returns ``(metrics, intervals)``: 95% bootstrap
        intervals of the headline metrics over ``n_boot`` resamples.
        """
        from binclf.decide.metrics import binary_metrics, bootstrap_intervals

        y, proba = self.labelled(df, source=source, notices=notices)
        metrics = binary_metrics(y, proba, threshold=self.effective_threshold(threshold))
        if not return_intervals:
            return metrics
        return metrics, bootstrap_intervals(y, proba, threshold=metrics["threshold"], n_boot=n_boot, seed=seed)

    def effective_threshold(self, threshold: float | None = None) -> float:
        """``threshold`` when given, else the bundle's, else 0.5."""
        if threshold is not None:
            return check_threshold(threshold, name="threshold")
        return self.threshold.threshold if self.threshold is not None else 0.5


def _versions() -> dict[str, str]:
    import platform

    import sklearn

    return {
        "binclf": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }

"""Calibration: map a model's logits to honest probabilities.

Every method is a pure ``fit_*(logits, y, *, sample_weight)`` returning a plain
dict of numbers (JSON as is), and a small class over it with ``fit``,
``predict_proba``, ``to_dict`` and ``params_``; :func:`calibrator_from_dict`
rebuilds a fitted calibrator from ``to_dict()`` without scikit-learn objects or
pickle. All calibrators take logits ``z`` of shape ``(n,)`` (any finite reals;
``|z|`` up to ``1e4`` is fine) and return ``P(y = 1)`` of shape ``(n,)``
strictly inside ``(0, 1)``.

- ``none``: ``sigmoid(z)``, no parameters;
- ``temperature``: ``sigmoid(z / T)`` with ``T > 0``;
- ``platt``: ``sigmoid(a z + b)``;
- ``beta``: ``sigmoid(a log p - b log(1 - p) + c)`` with ``p = sigmoid(z)``, ``a, b >= 0``;
- ``isotonic``: a monotone piecewise-linear map of ``p = sigmoid(z)``, stored as knots.

:func:`select_calibrator` picks one by cross-validated log-loss. The logit
correction that undoes class weighting or resampling is the trainer's
(:attr:`binclf.train.trainer.Trainer.logit_shift_`), applied before calibration.

The parametric fits are logistic regressions minimised with L-BFGS-B on
standardised features, with a ridge of ``1e-6`` on the standardised slopes: it
changes nothing measurable on real data but keeps the parameters finite when a
tiny calibration set is perfectly separable.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from binclf.runtime import release_freed_memory, with_one_blas_thread
from binclf.errors import ConfigError, DataError, NotFittedError
from binclf.decide.metrics import check_scores, check_target
from binclf.numeric import log_loss, row_log_loss, sigmoid

__all__ = [
    "CALIBRATION_METHODS",
    "fit_platt",
    "fit_temperature",
    "fit_isotonic",
    "fit_beta",
    "IdentityCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "IsotonicCalibrator",
    "BetaCalibrator",
    "calibrator_from_dict",
    "select_calibrator",
]

#: Method names, simplest first: :func:`select_calibrator` breaks ties in this order.
CALIBRATION_METHODS: tuple[str, ...] = ("none", "temperature", "platt", "beta", "isotonic")

#: Calibrated probabilities are clipped to [PROBA_EPS, 1 - PROBA_EPS] so that log-loss and logit of a
# calibrated probability stay finite; float64 sigmoid rounds to exactly 1.0 from z ~ 37.
PROBA_EPS = float(np.finfo(np.float64).eps)
#: Isotonic steps are kept this far inside (0, 1): a bin with only positives
# would otherwise predict exactly 1 and give an infinite loss to the next negative.
ISOTONIC_EPS = 1e-6
_RIDGE = 1e-6


# --------------------------------------------------------------------------- helpers
# scipy and scikit-learn are imported inside the fitting functions: applying a
# fitted calibrator (every `binclf predict`) needs NumPy only, and importing them
# costs about a second per process.




def _log_sigmoid(z: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``log(sigmoid(z)) = -softplus(-z)``, finite for every finite ``z`` (written into ``out`` if given)."""
    if out is None and np.ndim(z) == 0:
        return -np.logaddexp(0.0, -z)
    t = np.negative(z, out=out)
    return np.negative(np.logaddexp(0.0, t, out=t), out=t)


def _proba(s: np.ndarray) -> np.ndarray:
    p = sigmoid(s)
    return np.clip(p, PROBA_EPS, 1.0 - PROBA_EPS, out=p if p.ndim else None)


def _check_inputs(logits, y, sample_weight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(z, y, w)``: ``z`` and ``w`` float64, ``y`` 0/1 as int8; ``w`` None when no weights are given.

    The labels stay a byte a row (an int8 0/1 array is used as given) and there is
    no array of ones: calibrating millions of OOF rows, each fit's copies are tens
    of MB. Every use of ``y`` (``y * s``, ``p - y``, sums, scikit-learn's isotonic
    fit, which converts it) gives the same float64 numbers as 0.0/1.0 would.
    """
    y = check_target(y, dtype=np.int8)
    if y.shape[0] == 0:
        raise DataError("calibration needs at least one row, got an empty y")
    z = check_scores(logits, y.shape[0], name="logits", probabilities=False)
    if sample_weight is None:
        return z, y, None
    w = check_scores(sample_weight, y.shape[0], name="sample_weight", probabilities=False)
    if (w < 0).any() or w.sum() <= 0:
        raise DataError("sample_weight must be >= 0 with a positive sum")
    return z, y, w


def _class_weights(y: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
    """Total weight of the positives and of the negatives (counts when ``w`` is None)."""
    if w is None:  # sums of 0/1: exact, the same numbers as with weights of 1
        pos = float(y.sum())
        return pos, float(y.shape[0] - pos)
    return float((w * y).sum()), float((w * (1.0 - y)).sum())


def _single_class(y: np.ndarray, w: np.ndarray | None, method: str) -> bool:
    """Warn and return True when the (weighted) labels hold one class only."""
    pos, neg = _class_weights(y, w)
    if pos > 0 and neg > 0:
        return False
    only = "1" if pos > 0 else "0"
    warnings.warn(
        f"{method} calibration: all {y.shape[0]} labels are {only}, so nothing can be fitted; "
        "falling back to the identity (sigmoid of the logits). "
        "Calibrate on validation data that holds both classes.",
        UserWarning,
        stacklevel=3,
    )
    return True


@with_one_blas_thread  # a few parameters over n rows: BLAS threads cost more than they save
def _fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    *,
    init: np.ndarray,
    intercept: float | None,
    lower: float | None,
    overwrite_x: bool = False,
) -> tuple[np.ndarray, float]:
    """Weighted logistic regression ``logit P(y=1) = x @ coef + intercept``.

    ``x`` ``(n, k)``; ``init`` ``(k,)`` starting slopes; ``intercept`` its start
    value, or ``None`` to fit without intercept; ``lower`` a lower bound for
    every slope (``None``: unbounded). The features are standardised (centred
    only when there is an intercept) so L-BFGS-B sees a well-conditioned problem
    whatever the scale of the logits; the slope bound survives since the scales
    are positive. ``overwrite_x``: standardise ``x`` in place (a temporary of
    the caller's). ``w`` None: every row weighs the same.
    """
    k = x.shape[1]
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    center = x.mean(axis=0) if intercept is not None else np.zeros(k)
    xs = x if overwrite_x else x - center
    if overwrite_x:
        xs -= center
    xs /= scale
    # No weights: 1/n each, as ones / ones.sum() gives (the sum of n ones is exact).
    w = np.full(x.shape[0], 1.0 / x.shape[0]) if w is None else w / w.sum()
    has_b = intercept is not None

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        # In place: each evaluation made ~6 arrays of the rows (a calibration set of
        # millions of OOF rows is hundreds of MB); the same operations, the same numbers.
        coef = theta[:k]
        s = xs @ coef
        s += theta[k] if has_b else 0.0
        # softplus(s) - y s is the log-loss of sigmoid(s), stable for any s.
        t = np.logaddexp(0.0, s)
        t -= y * s
        loss = float(w @ t + _RIDGE * coef @ coef)
        del t
        r = sigmoid(s)
        r -= y
        r *= w
        grad = xs.T @ r + 2.0 * _RIDGE * coef
        if has_b:
            grad = np.r_[grad, r.sum()]
        return loss, grad

    theta0 = init * scale
    if has_b:
        theta0 = np.r_[theta0, intercept + init @ center]
    if lower is not None:
        theta0[:k] = np.maximum(theta0[:k], lower * scale + 1e-12)
    bounds = [(None if lower is None else lower * s, None) for s in scale]
    if has_b:
        bounds.append((None, None))
    from scipy.optimize import minimize

    res = minimize(
        loss_grad,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-10},
    )
    theta = res.x if np.all(np.isfinite(res.x)) else theta0
    coef = theta[:k] / scale
    b = float(theta[k] - coef @ center) if has_b else 0.0
    return coef, b


# --------------------------------------------------------------------------- pure fits


def fit_platt(
    logits, y, *, sample_weight=None, target_smoothing: bool = False
) -> dict[str, float]:
    """Platt scaling: ``P(y=1) = sigmoid(a * z + b)`` by minimum (weighted) log-loss.

    ``logits`` ``z`` and ``y`` are ``(n,)``. ``target_smoothing=True`` replaces
    the 0/1 targets with Platt's ``1 / (N- + 2)`` and ``(N+ + 1) / (N+ + 2)``,
    which regularises small sets. Returns ``{"a": a, "b": b}``; single-class
    ``y`` warns and returns the identity ``{"a": 1, "b": 0}``.
    """
    z, y, w = _check_inputs(logits, y, sample_weight)
    if _single_class(y, w, "platt"):
        return {"a": 1.0, "b": 0.0}
    if target_smoothing:
        pos, neg = _class_weights(y, w)
        y = np.where(y == 1, (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))
    coef, b = _fit_logistic(z[:, None], y, w, init=np.array([1.0]), intercept=0.0, lower=None)
    return {"a": float(coef[0]), "b": b}


def fit_temperature(logits, y, *, sample_weight=None) -> dict[str, float]:
    """Temperature scaling: ``P(y=1) = sigmoid(z / T)`` with ``T > 0``, by minimum log-loss.

    One parameter, no shift: it only sharpens (``T < 1``) or softens
    (``T > 1``) the model's confidence and never changes the ranking or which
    side of 0.5 a row is on. ``logits``, ``y``: ``(n,)``. Returns ``{"T": T}``;
    single-class ``y`` warns and returns ``{"T": 1}``.
    """
    z, y, w = _check_inputs(logits, y, sample_weight)
    if _single_class(y, w, "temperature"):
        return {"T": 1.0}
    # Fit the inverse temperature as a slope >= a tiny positive bound: log-loss is
    # convex in it, and logits anti-correlated with y end at a huge T (p ~ 0.5).
    coef, _ = _fit_logistic(z[:, None], y, w, init=np.array([1.0]), intercept=None, lower=1e-12)
    inv_t = max(float(coef[0]), 1e-300)
    return {"T": min(1.0 / inv_t, 1e300)}


def fit_beta(logits, y, *, sample_weight=None) -> dict[str, float]:
    """Beta calibration (Kull, Silva Filho & Flach 2017), the 3-parameter version.

    ``P(y=1) = sigmoid(a * log p - b * log(1 - p) + c)`` with ``p = sigmoid(z)``:
    a logistic regression on the features ``log p`` and ``-log(1 - p)``, both
    computed from log-sigmoid so they stay finite at any logit. ``a, b >= 0`` as
    in the paper, which keeps the map monotone (the paper refits without a
    feature whose coefficient comes out negative; the bound-constrained optimum
    used here is what that procedure approximates). ``a = b = 1, c = 0`` is the
    identity. Returns ``{"a": a, "b": b, "c": c}``.
    """
    z, y, w = _check_inputs(logits, y, sample_weight)
    if _single_class(y, w, "beta"):
        return {"a": 1.0, "b": 1.0, "c": 0.0}
    # Both features written into one (n, 2) array: no column temporaries to stack.
    x = np.empty((z.shape[0], 2))
    _log_sigmoid(z, out=x[:, 0])
    np.logaddexp(0.0, z, out=x[:, 1])  # -log(1 - p) = -log_sigmoid(-z) = softplus(z), negations being exact
    coef, c = _fit_logistic(x, y, w, init=np.array([1.0, 1.0]), intercept=0.0, lower=0.0, overwrite_x=True)
    return {"a": float(max(coef[0], 0.0)), "b": float(max(coef[1], 0.0)), "c": c}


def fit_isotonic(logits, y, *, sample_weight=None) -> dict[str, list[float]]:
    """Isotonic regression of ``y`` on ``p = sigmoid(z)``, as interpolation knots.

    scikit-learn's :class:`~sklearn.isotonic.IsotonicRegression` (increasing,
    ``out_of_bounds="clip"``, outputs kept in ``[1e-6, 1 - 1e-6]``) is fitted and
    only its knots are kept: ``{"X_thresholds_": [...], "y_thresholds_": [...]}``,
    applied with ``np.interp``, so no scikit-learn object is stored. Flexible
    (any monotone map) but data hungry: it overfits a few hundred rows.
    Single-class ``y`` warns and returns the identity knots.
    """
    z, y, w = _check_inputs(logits, y, sample_weight)
    if _single_class(y, w, "isotonic"):
        return {"X_thresholds_": [0.0, 1.0], "y_thresholds_": [ISOTONIC_EPS, 1.0 - ISOTONIC_EPS]}
    if w is None:
        knots_x, knots_y = _isotonic_knots(z, y)
    else:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(
            y_min=ISOTONIC_EPS, y_max=1.0 - ISOTONIC_EPS, increasing=True, out_of_bounds="clip"
        )
        iso.fit(sigmoid(z), y, sample_weight=w)
        knots_x, knots_y = iso.X_thresholds_, iso.y_thresholds_
    return {
        "X_thresholds_": [float(v) for v in knots_x],
        "y_thresholds_": [float(v) for v in knots_y],
    }


def _isotonic_knots(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``IsotonicRegression(y_min=ISOTONIC_EPS, y_max=1 - ISOTONIC_EPS).fit(sigmoid(z), y)``
    knots (``X_thresholds_, y_thresholds_``) for unweighted 0/1 ``y``: the same numbers.

    scikit-learn copies the rows ~10 times (weights of ones, masked, sorted, uniqued:
    ~80 bytes a row, the peak of calibrating millions of OOF rows); here the rows
    are sorted once and reduced to their distinct values. Its ``_make_unique``
    merges sorted values less than ``resolution`` (1e-15) above the first of their
    group, keeping that first value, and gives each group the mean label; the mean
    of 0/1 labels with weights 1 is ``positives / count`` in any order of summation,
    so the same float. The pool-adjacent-violators step is scikit-learn's own
    ``isotonic_regression`` on those groups, and the knots are trimmed as it does.
    """
    from sklearn.isotonic import isotonic_regression

    x = sigmoid(z)
    order = np.argsort(x)  # within equal values the order changes no sum
    ys = y[order]
    x = x[order]  # sorted; the unsorted one freed
    del order
    new = np.empty(x.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(x[1:], x[:-1], out=new[1:])
    starts = np.flatnonzero(new).astype(np.int32 if x.shape[0] < 2**31 else np.int64)
    del new
    values = x[starts]
    del x
    counts = np.diff(starts, append=ys.shape[0])
    positives = np.add.reduceat(ys, starts, dtype=counts.dtype)
    del ys, starts
    # Distinct values closer than eps to their group's first one join it, as _make_unique.
    eps = np.finfo(np.float64).resolution
    close = np.flatnonzero(np.diff(values) < eps) + 1  # may join the group before it
    if close.shape[0]:
        first = np.ones(values.shape[0], dtype=bool)
        current = 0
        j = 1
        for k in close:  # only the values with a close neighbour are walked one by one
            if k > j:  # values[j:k] each start a group (their gaps are >= eps)
                current = k - 1
            if values[k] - values[current] >= eps:
                current = k
            else:
                first[k] = False
            j = k + 1
        group = np.flatnonzero(first)
        values = values[group]
        counts = np.add.reduceat(counts, group)
        positives = np.add.reduceat(positives, group)
    y_unique = positives / counts
    weights = counts.astype(np.float64)
    del positives, counts
    fitted = isotonic_regression(
        y_unique, sample_weight=weights, y_min=ISOTONIC_EPS, y_max=1.0 - ISOTONIC_EPS, increasing=True
    )
    del y_unique, weights
    keep = np.ones(fitted.shape[0], dtype=bool)
    keep[1:-1] = np.logical_or(np.not_equal(fitted[1:-1], fitted[:-2]), np.not_equal(fitted[1:-1], fitted[2:]))
    return values[keep], fitted[keep]


# --------------------------------------------------------------------------- classes


class _Calibrator:
    """Shared behaviour: ``fit`` stores ``params_``, ``predict_proba`` needs it."""

    name: str = ""

    def _fit_params(self, z, y, sample_weight) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self, z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, logits, y, *, sample_weight=None):
        """Fit on validation ``logits`` ``(n,)`` and labels ``y`` ``(n,)``; returns ``self``."""
        self.params_ = self._fit_params(logits, y, sample_weight)
        return self

    def predict_proba(self, logits) -> np.ndarray:
        """Calibrated ``P(y = 1)`` of shape ``(n,)`` for logits of shape ``(n,)``."""
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(logits, y) first"
            )
        z = np.asarray(logits, dtype=np.float64)
        z = check_scores(z, z.shape[0] if z.ndim else -1, name="logits", probabilities=False)
        return self._apply(z)

    def to_dict(self) -> dict[str, Any]:
        """``{"method": name, "params": {...}}``, plain JSON; see :func:`calibrator_from_dict`."""
        if not hasattr(self, "params_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; nothing to save")
        return {"method": self.name, "params": dict(self.params_)}

    def __repr__(self) -> str:
        fitted = f"params_={self.params_}" if hasattr(self, "params_") else "unfitted"
        return f"{type(self).__name__}({fitted})"


class IdentityCalibrator(_Calibrator):
    """``"none"``: the sigmoid of the logits, unchanged; ``fit`` learns nothing."""

    name = "none"

    def _fit_params(self, logits, y, sample_weight):
        _check_inputs(logits, y, sample_weight)
        return {}

    def _apply(self, z):
        return _proba(z)


class PlattCalibrator(_Calibrator):
    """``"platt"``: ``sigmoid(a * z + b)``, see :func:`fit_platt`."""

    name = "platt"

    def __init__(self, *, target_smoothing: bool = False) -> None:
        self.target_smoothing = target_smoothing

    def _fit_params(self, logits, y, sample_weight):
        return fit_platt(
            logits, y, sample_weight=sample_weight, target_smoothing=self.target_smoothing
        )

    def _apply(self, z):
        return _proba(self.params_["a"] * z + self.params_["b"])


class TemperatureCalibrator(_Calibrator):
    """``"temperature"``: ``sigmoid(z / T)``, see :func:`fit_temperature`."""

    name = "temperature"

    def _fit_params(self, logits, y, sample_weight):
        return fit_temperature(logits, y, sample_weight=sample_weight)

    def _apply(self, z):
        return _proba(z / self.params_["T"])


class BetaCalibrator(_Calibrator):
    """``"beta"``: ``sigmoid(a log p - b log(1 - p) + c)``, see :func:`fit_beta`."""

    name = "beta"

    def _fit_params(self, logits, y, sample_weight):
        return fit_beta(logits, y, sample_weight=sample_weight)

    def _apply(self, z):
        p = self.params_
        return _proba(p["a"] * _log_sigmoid(z) + p["b"] * -_log_sigmoid(-z) + p["c"])


class IsotonicCalibrator(_Calibrator):
    """``"isotonic"``: monotone piecewise-linear map of ``sigmoid(z)``, see :func:`fit_isotonic`."""

    name = "isotonic"

    def _fit_params(self, logits, y, sample_weight):
        return fit_isotonic(logits, y, sample_weight=sample_weight)

    def _apply(self, z):
        knots_x = np.asarray(self.params_["X_thresholds_"], dtype=np.float64)
        knots_y = np.asarray(self.params_["y_thresholds_"], dtype=np.float64)
        out = np.interp(sigmoid(z), knots_x, knots_y)
        return np.clip(out, ISOTONIC_EPS, 1.0 - ISOTONIC_EPS)


_CLASSES: dict[str, type[_Calibrator]] = {
    "none": IdentityCalibrator,
    "temperature": TemperatureCalibrator,
    "platt": PlattCalibrator,
    "beta": BetaCalibrator,
    "isotonic": IsotonicCalibrator,
}

_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "temperature": ("T",),
    "platt": ("a", "b"),
    "beta": ("a", "b", "c"),
    "isotonic": ("X_thresholds_", "y_thresholds_"),
}


def calibrator_from_dict(d: dict[str, Any]) -> _Calibrator:
    """Rebuild a fitted calibrator from ``calibrator.to_dict()`` (e.g. read from a bundle).

    Raises :class:`~binclf.errors.ConfigError` naming the problem when the
    method is unknown or a parameter is missing.
    """
    if not isinstance(d, dict) or "method" not in d:
        raise ConfigError(
            f"a calibrator must be a dict like {{'method': 'platt', 'params': {{...}}}}, got {d!r}"
        )
    method = d["method"]
    if method not in _CLASSES:
        raise ConfigError(
            f"unknown calibration method {method!r}; choose one of {list(CALIBRATION_METHODS)}"
        )
    params = dict(d.get("params") or {})
    missing = [k for k in _PARAM_KEYS[method] if k not in params]
    if missing:
        raise ConfigError(f"{method} calibrator is missing parameter(s) {missing}; got {sorted(params)}")
    if method == "isotonic":
        if len(params["X_thresholds_"]) != len(params["y_thresholds_"]) or not params["X_thresholds_"]:
            raise ConfigError("isotonic calibrator needs equally long, non-empty knot lists")
        params = {k: [float(v) for v in params[k]] for k in _PARAM_KEYS[method]}
    else:
        params = {k: float(params[k]) for k in _PARAM_KEYS[method]}
    cal = _CLASSES[method]()
    cal.params_ = params
    return cal


# --------------------------------------------------------------------------- selection


@with_one_blas_thread
def select_calibrator(
    logits,
    y,
    *,
    method: str = "auto",
    cv: int = 5,
    seed: int = 0,
    isotonic_min_rows: int = 1000,
    isotonic_margin: float = 0.002,
    tie_tolerance: float = 1e-4,
) -> tuple[_Calibrator, dict[str, Any]]:
    """Choose and fit a calibrator on validation ``logits`` ``(n,)`` and labels ``y`` ``(n,)``.

    ``method`` is one of :data:`CALIBRATION_METHODS` (fit that one) or
    ``"auto"``: each candidate is scored by its out-of-fold log-loss over a
    stratified ``cv``-fold split of the given rows, and

    - among ``none, temperature, platt, beta`` the simplest one whose loss is
      within one standard error of the best (the standard error of the paired
      per-row loss difference, at least ``tie_tolerance``) wins: a tie within
      the noise goes to the simpler method;
    - ``isotonic`` is a candidate only with ``n >= isotonic_min_rows`` and wins
      only if it beats the best other method by ``isotonic_margin``, since it
      overfits small sets and its gains on them are mostly noise.

    The chosen calibrator is refitted on all rows. Returns ``(calibrator, info)``
    with ``info = {"method", "cv_log_loss": {name: loss}, "cv_folds",
    "candidates", "n", "log_loss_before", "log_loss_after", "reason"}``
    (``cv_log_loss`` is empty for an explicit method; the last two are
    in-sample log-losses of the raw sigmoid and of the fitted calibrator).
    With too few rows of a class for cross-validation, ``auto`` warns and uses
    ``none``.
    """
    valid = ("auto", *CALIBRATION_METHODS)
    if method not in valid:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {list(valid)}")
    if not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ConfigError(f"cv must be an integer >= 2, got {cv!r}")
    z, y8, _ = _check_inputs(logits, y, None)
    n = int(y8.shape[0])
    info: dict[str, Any] = {
        "method": method,
        "cv_log_loss": {},
        "cv_folds": 0,
        "candidates": [],
        "n": n,
        "log_loss_before": log_loss(y8, _proba(z)),
    }
    if method == "auto":
        n_minority = int(min(y8.sum(), n - y8.sum()))
        folds = min(cv, n_minority)
        if folds < 2:
            warnings.warn(
                f"auto calibration: {n_minority} row(s) of the rarer class among {n} are too few "
                "to cross-validate a calibrator; using 'none' (the raw sigmoid). "
                "Use a larger validation set.",
                UserWarning,
                stacklevel=2,
            )
            method, reason = "none", f"too few rows of the rarer class ({n_minority}) for cross-validation"
        else:
            candidates = [m for m in CALIBRATION_METHODS if m != "isotonic"]
            if n >= isotonic_min_rows:
                candidates.append("isotonic")
            from sklearn.model_selection import StratifiedKFold

            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            # Each row's fold (one byte a row), the folds' index arrays made from it per method:
            # one method's out-of-fold predictions at a time, kept as row losses for the
            # simple methods only (5 predictions and 5 losses were 80 bytes a row at once).
            fold_of_row = np.empty(n, dtype=np.uint8 if folds <= 255 else np.int32)
            for i, (_, test) in enumerate(splitter.split(z, y8)):
                fold_of_row[test] = i
            # Freed arrays handed back to the OS (binclf.runtime; nothing unless it tuned
            # malloc) after the split and after each method: the next fits' arrays rarely
            # fit the holes they leave, and RSS grew by them method after method.
            release_freed_memory(array_bytes=z.nbytes)

            def oof_fit(m: str) -> list[_Calibrator]:
                # Rows picked with boolean masks (a byte a row, not an index array of 8).
                return [_CLASSES[m]().fit(z[fold_of_row != i], y8[fold_of_row != i]) for i in range(folds)]

            def oof_row_losses(fitted: list[_Calibrator]) -> np.ndarray:
                oof = np.empty(n)
                for i, cal in enumerate(fitted):
                    test = fold_of_row == i
                    oof[test] = cal.predict_proba(z[test])
                    del test
                losses = row_log_loss(y8, oof)
                del oof
                release_freed_memory(array_bytes=z.nbytes)
                return losses

            simple = [m for m in candidates if m != "isotonic"]
            # Each method's fold calibrators are kept (a few numbers each), not its
            # per-row losses (8 bytes a row per method, all alive at the last fit): the
            # losses are made again from them, the same numbers, when the rule below
            # compares two methods row by row.
            fitted = {}
            losses = {}
            for m in simple:
                fitted[m] = oof_fit(m)
                losses[m] = float(oof_row_losses(fitted[m]).mean())
            best_name = min(simple, key=lambda m: losses[m])
            best = losses[best_name]
            # One-standard-error rule: a simpler method whose out-of-fold loss is
            # within the noise of the best one (the standard error of the paired
            # per-row difference, or tie_tolerance) is a tie, and ties go to the
            # simpler method, so calibrated logits are not "fixed" by noise.
            best_losses = oof_row_losses(fitted[best_name])
            gaps = {}
            for m in simple:
                if m == best_name:  # a zero difference: its spread is 0, its gap the tolerance
                    gaps[m] = max(tie_tolerance, 0.0)
                    continue
                diff = oof_row_losses(fitted[m])
                diff -= best_losses
                gaps[m] = max(tie_tolerance, float(diff.std() / math.sqrt(n)))
                del diff
            method = next(m for m in simple if losses[m] <= best + gaps[m])
            del fitted, best_losses
            release_freed_memory(array_bytes=z.nbytes)
            if "isotonic" in candidates:
                losses["isotonic"] = float(oof_row_losses(oof_fit("isotonic")).mean())
            reason = (
                f"simplest of {simple} within one standard error of the lowest "
                f"{folds}-fold log-loss ({best_name})"
            )
            if "isotonic" in losses:
                if losses["isotonic"] < best - isotonic_margin:
                    method = "isotonic"
                    reason = f"isotonic beats the best parametric method by more than {isotonic_margin}"
                else:
                    reason += f"; isotonic did not beat it by {isotonic_margin}"
            else:
                reason += f"; isotonic not tried (n = {n} < {isotonic_min_rows})"
            info.update(cv_log_loss=losses, cv_folds=folds, candidates=candidates)
        info["reason"] = reason
    else:
        info["reason"] = "method given explicitly"
    calibrator = _CLASSES[method]().fit(z, y8)
    info["method"] = method
    info["log_loss_after"] = log_loss(y8, calibrator.predict_proba(z))
    return calibrator, info

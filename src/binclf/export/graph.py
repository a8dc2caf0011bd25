"""One ONNX graph for a whole bundle: raw columns in, calibrated probability and label out.

The graph is written node by node with :mod:`onnx.helper` from the fitted
state the :class:`~binclf.Predictor` holds, in the Predictor's order and
precision:

1. **numbers** (``float32 [N]``, NaN = missing): ``(x - center)`` in float64,
   then float32 ``* 1/scale`` and the soft clip ``c * tanh(x / c)`` (or the
   quantile map), missing values filled after scaling, ``NAME__missing``
   indicators;
2. **categories** (``string [N]``): an ``ai.onnx.ml`` LabelEncoder maps the
   canonical text of each training level to its code (``""`` and the CSV
   reader's null spellings such as ``NA`` to "missing", anything else to
   "unknown"); numeric levels also match by value (``"3.0"`` and ``" 3"`` are
   level ``3``, as :func:`~binclf.data.preprocessing.canonical_labels` reads
   them) and ``true``/``false`` in any case are ``True``/``False``; the code
   then picks a row of a constant one-hot table;
3. every **member** (logistic, MLP with its BatchNorm folded in as the
   Predictor's fast path does, PLE-MLP with its piecewise-linear encoding,
   TabM), minus its logit shift;
4. the **blend** (weighted mean of probabilities, back to a logit) and the
   **calibrator** (none, platt, temperature, beta, isotonic as piecewise-linear
   interpolation) in float64;
5. the **threshold** (or abstain band) on the float64 probability.

Outputs: ``probability`` ``float32 [N]`` and ``label`` ``string [N]``: the
target's label (as text), or ``"abstain"`` inside an abstain band.

Written with onnx.helper rather than ``torch.onnx.export(..., dynamo=True)``:
the fitted state is a few matrices and vectors per stage, the whole ten-member
default bundle takes 0.03 s (dynamo: ~15 s for one member), the string front
end and the float64 blend need hand-written nodes anyway, and each stage can
mirror the Predictor's rounding (e.g. the MLP with BatchNorm folded as
``binclf.infer`` folds it). Parity with the Predictor is checked by
``tests/test_export.py``, not assumed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from binclf import __version__
from binclf.decide.calibration import ISOTONIC_EPS, PROBA_EPS
from binclf.errors import BinclfError

__all__ = ["NULL_SPELLINGS", "OPSET", "THRESHOLD_SLACK", "ExportError", "build_onnx", "export_onnx", "output_signature", "signature"]

OPSET = 20  # RegexFullMatch and string Equal need opset 20
ML_OPSET = 3
# Cells pyarrow's CSV reader (binclf's reader) turns into nulls: they are "missing" in the graph too.
NULL_SPELLINGS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null",
)
# RE2 spelling of binclf.data.schema._NUMBER_RE (full match, so no anchors).
_NUMBER_PATTERN = r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*"
_NUMBER_RE = re.compile(r"^" + _NUMBER_PATTERN + r"$")
# Thresholds are chosen at validation rows' probabilities, so rows tied with that row
# (same inputs) sit exactly on the threshold; the graph's float32 arithmetic differs
# from torch's by ~1e-7, so it compares against the threshold minus this slack to put
# them on the Predictor's side (``>=``).
THRESHOLD_SLACK = 1e-6


class ExportError(BinclfError, ValueError):
    """A bundle part that has no ONNX form (the message names the part and why)."""


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:  # pragma: no cover - depends on the environment
        raise ExportError(
            "binclf export needs the onnx package; install it with: pip install 'binclf[onnx]'"
        ) from None
    return onnx, helper, numpy_helper


class _Graph:
    """A small node builder: every method adds nodes and returns the output name."""

    def __init__(self) -> None:
        self.onnx, self.helper, self.numpy_helper = _onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: Any, hint: str = "c", dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.name(hint)
        if arr.dtype.kind in "OUS":
            tensor = self.helper.make_tensor(
                name, self.onnx.TensorProto.STRING, arr.shape, [str(v).encode() for v in arr.ravel()]
            )
        else:
            tensor = self.numpy_helper.from_array(np.ascontiguousarray(arr), name)
        self.initializers.append(tensor)
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, domain: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], domain=domain, **attrs))
        return out

    # -- small compositions -------------------------------------------------------------
    def cast(self, x: str, to: str) -> str:
        return self.op("Cast", x, to=getattr(self.onnx.TensorProto, to))

    def column(self, x: str) -> str:
        """``[N]`` -> ``[N, 1]``."""
        return self.op("Unsqueeze", x, self.const([1], "axis", np.int64))

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, hint: str) -> str:
        """``x @ weight.T + bias`` for ``x`` ``[..., d]`` (weight ``(h, d)``)."""
        y = self.op("MatMul", x, self.const(np.asarray(weight, np.float32).T, f"{hint}_w"))
        if bias is not None:
            y = self.op("Add", y, self.const(np.asarray(bias, np.float32), f"{hint}_b"))
        return y

    def softplus(self, x: str, dtype: Any) -> str:
        """``log(1 + exp(x))`` without overflow: ``relu(x) + log(1 + exp(-|x|))``."""
        one = self.const(np.array(1.0, dtype), "one")
        tail = self.op("Log", self.op("Add", one, self.op("Exp", self.op("Neg", self.op("Abs", x)))))
        return self.op("Add", self.op("Relu", x), tail)

    def sigmoid(self, x: str, dtype: Any) -> str:
        """Stable sigmoid (as ``binclf.numeric.sigmoid``): ``exp`` of non-positive values only."""
        e = self.op("Exp", self.op("Neg", self.op("Abs", x)))
        one = self.const(np.array(1.0, dtype), "one")
        inv = self.op("Div", one, self.op("Add", one, e))
        pos = self.op("GreaterOrEqual", x, self.const(np.array(0.0, dtype), "zero"))
        return self.op("Where", pos, inv, self.op("Mul", e, inv))

    def interp(self, x: str, knots_x: np.ndarray, knots_y: np.ndarray, dtype: Any) -> str:
        """``np.interp(x, knots_x, knots_y)`` for ``x`` ``[N]`` (increasing knots, ends held flat).

        ``y_0 + sum_j slope_j * clip(x - x_j, 0, x_{j+1} - x_j)``; a zero-width segment
        is a step taken at ``x >= x_j``, as ``np.interp`` does. NaN stays NaN.
        """
        kx = np.asarray(knots_x, np.float64)
        ky = np.asarray(knots_y, np.float64)
        out = self.op("Add", self.op("Mul", x, self.const(np.array(0.0, dtype), "zero")),
                      self.const(np.array(ky[0], dtype), "y0"))
        if len(kx) < 2:
            return out
        width = np.diff(kx)
        rise = np.diff(ky)
        ramp = width > 0
        xc = self.column(x)  # [N, 1]
        if ramp.any():
            lo = self.const(kx[:-1][ramp].astype(dtype)[None, :], "knot_lo")
            w = self.const(width[ramp].astype(dtype)[None, :], "knot_w")
            slope = self.const((rise[ramp] / width[ramp]).astype(dtype)[None, :], "knot_slope")
            zero = self.const(np.array(0.0, dtype), "zero")
            part = self.op("Min", self.op("Max", self.op("Sub", xc, lo), zero), w)
            out = self.op("Add", out, self.op("ReduceSum", self.op("Mul", part, slope),
                                              self.const([1], "axis", np.int64), keepdims=0))
        if (~ramp).any():
            at = self.const(kx[:-1][~ramp].astype(dtype)[None, :], "step_at")
            jump = self.const(rise[~ramp].astype(dtype)[None, :], "step")
            hit = self.cast(self.op("GreaterOrEqual", xc, at), "DOUBLE" if dtype == np.float64 else "FLOAT")
            out = self.op("Add", out, self.op("ReduceSum", self.op("Mul", hit, jump),
                                              self.const([1], "axis", np.int64), keepdims=0))
        return out


# --------------------------------------------------------------------------- preprocessing


def _numeric_block(g: _Graph, pre: Any, inputs: dict[str, str]) -> tuple[list[str], list[str]]:
    """Scaled numbers and missing indicators, each ``[N, 1]`` float32."""
    values, indicators = [], []
    for st in pre.numeric_:
        x = inputs[st["name"]]
        nan = g.op("IsNaN", x)
        if pre.numeric == "quantile":
            y = g.cast(g.interp(g.cast(x, "DOUBLE"), st["quantiles"], st["scores"], np.float64), "FLOAT")
        else:
            # As Preprocessor._scale_block: the subtraction in float64, the rest in float32.
            y = g.cast(g.op("Sub", g.cast(x, "DOUBLE"), g.const(np.float64(st["center"]), "center")), "FLOAT")
            y = g.op("Mul", y, g.const(np.float32(1.0 / st["scale"]), "inv_scale"))
            if pre.clip is not None:
                c = np.float32(pre.clip)
                y = g.op("Mul", y, g.const(np.float32(1.0) / c, "inv_clip"))
                y = g.op("Mul", g.op("Tanh", y), g.const(c, "clip"))
        y = g.op("Where", nan, g.const(np.float32(st["fill"]), "fill"), y)
        values.append(g.column(y))
        if st["indicator"]:
            indicators.append(g.column(g.cast(nan, "FLOAT")))
    return values, indicators


def _category_codes(g: _Graph, st: dict[str, Any], s: str) -> str:
    """Codes ``[N]`` int64 of a string column: 0 missing, 1 unknown, 2.. the training levels."""
    levels = list(st["levels"])
    code = {lvl: i + 2 for i, lvl in enumerate(levels)}
    keys: dict[str, int] = {t: 0 for t in NULL_SPELLINGS}
    keys.update(code)  # a level spelt like a null token (from Parquet) stays that level
    codes = g.op(
        "LabelEncoder", s, domain="ai.onnx.ml", hint=f"{st['name']}_code",
        keys_strings=list(keys), values_int64s=list(keys.values()), default_int64=1,
    )
    # true/false in any case and with spaces are the levels True/False, as canonical_labels reads them.
    for word in ("True", "False"):
        if word in code:
            hit = g.op("RegexFullMatch", s, pattern=r"\s*(?i:" + word + r")\s*")
            codes = g.op("Where", hit, g.const(np.int64(code[word]), "code"), codes)
    numeric = [(lvl, float(lvl)) for lvl in levels if _NUMBER_RE.match(lvl)]
    if numeric:
        # Numeric text matches by value: "3.0", "+3", " 3 " are level "3". Other numbers are unknown.
        is_num = g.op("RegexFullMatch", s, pattern=_NUMBER_PATTERN)
        text = g.op("Where", is_num, s, g.const(np.array("nan", dtype=object), "nan"))
        v = g.column(g.cast(text, "DOUBLE"))  # [N, 1]
        eq = g.cast(g.op("Equal", v, g.const(np.array([[x for _, x in numeric]]), "levels")), "INT64")
        level_codes = g.const(np.array([[code[lvl] - 1 for lvl, _ in numeric]], np.int64), "level_codes")
        # 1 + (level code - 1) where equal: 1 (unknown) when no level has this value.
        by_value = g.op("Add", g.op("ReduceMax", g.op("Mul", eq, level_codes),
                                    g.const([1], "axis", np.int64), keepdims=0), g.const(np.int64(1), "one"))
        codes = g.op("Where", is_num, by_value, codes)
    return codes


def _categorical_block(g: _Graph, pre: Any, inputs: dict[str, str]) -> list[str]:
    """One-hot blocks ``[N, width]`` float32 (missing / unknown columns only where training had them)."""
    blocks = []
    for st in pre.categorical_:
        n_lv = len(st["levels"])
        width = n_lv + int(st["missing"]) + int(st["unknown"])
        if width == 0:
            continue
        # Row `code` of this table is the block: levels first, then <missing>, then <unknown>.
        table = np.zeros((n_lv + 2, width), np.float32)
        table[2 + np.arange(n_lv), np.arange(n_lv)] = 1.0
        pos = n_lv
        if st["missing"]:
            table[0, pos] = 1.0
            pos += 1
        if st["unknown"]:
            table[1, pos] = 1.0
        codes = _category_codes(g, st, inputs[st["name"]])
        blocks.append(g.op("Gather", g.const(table, f"{st['name']}_onehot"), codes, axis=0))
    return blocks


# --------------------------------------------------------------------------- members


def _mlp_layers(module: Any, part: str) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    from binclf.infer import _folded_mlp

    layers = _folded_mlp(module.eval())
    if layers is None:
        raise ExportError(f"{part}: the MLP does not have the Linear/BatchNorm/ReLU layout binclf exports")
    return [(w.detach().numpy(), b.detach().numpy(), relu) for w, b, relu in layers]


def _run_layers(g: _Graph, x: str, layers, hint: str) -> str:
    for i, (w, b, relu) in enumerate(layers):
        x = g.linear(x, w, b, f"{hint}_l{i}")
        if relu:
            x = g.op("Relu", x)
    return x


def _member_logits(g: _Graph, member: Any, x: str, part: str) -> str:
    """Logits ``[N]`` float32 of one member on the feature matrix ``x`` ``[N, d]``."""
    from binclf.nn.models import MLP, PLEMLP, LogisticModel, TabM

    module = member.module.eval()
    squeeze = lambda y: g.op("Squeeze", y, g.const([-1], "axis", np.int64))
    if type(module) is LogisticModel:
        lin = module.output
        return squeeze(g.linear(x, lin.weight.detach().numpy(), lin.bias.detach().numpy(), f"{part}_out"))
    if type(module) is MLP:
        return squeeze(_run_layers(g, x, _mlp_layers(module, part), part))
    if type(module) is PLEMLP:
        k, t = module.n_numeric, module.bins
        if k:
            num = g.op("Slice", x, g.const([0], "s", np.int64), g.const([k], "e", np.int64),
                       g.const([1], "a", np.int64))
            num = g.op("Unsqueeze", num, g.const([2], "axis", np.int64))  # [N, k, 1]
            e = g.op("Sub", num, g.const(module.lo.detach().numpy().astype(np.float32)[None], "ple_lo"))
            e = g.op("Mul", e, g.const(module.inv_width.detach().numpy().astype(np.float32)[None], "ple_inv_w"))
            e = g.op("Clip", e, g.const(np.float32(0.0), "zero"), g.const(np.float32(1.0), "one"))
            e = g.op("Reshape", e, g.const([0, k * t], "shape", np.int64))
        layers = _mlp_layers(module.network, part)
        if k:
            # The first layer on [x, e] as x @ Wx.T + e @ We.T: no concatenated copy of the rows.
            (w, b, relu), d = layers[0], module.n_features
            h = g.op("Add", g.linear(x, w[:, :d], b, f"{part}_l0x"), g.linear(e, w[:, d:], None, f"{part}_l0e"))
            x, layers = (g.op("Relu", h) if relu else h), layers[1:]
        return squeeze(_run_layers(g, x, layers, part))
    if type(module) is TabM:
        h = g.op("Mul", g.column(x), g.const(module.r_in.detach().numpy(), "r_in"))  # [N, k, d]
        for i, layer in enumerate(module.body):
            if isinstance(layer, torch.nn.Linear):
                h = g.linear(h, layer.weight.detach().numpy(), layer.bias.detach().numpy(), f"{part}_l{i}")
            elif isinstance(layer, torch.nn.ReLU):
                h = g.op("Relu", h)
            elif not isinstance(layer, torch.nn.Dropout):  # dropout is the identity in eval mode
                raise ExportError(f"{part}: TabM layer {type(layer).__name__} has no ONNX form in binclf")
        h = g.op("Mul", h, g.const(module.r_out.detach().numpy(), "r_out"))
        z = squeeze(g.linear(h, module.output.weight.detach().numpy(), module.output.bias.detach().numpy(),
                             f"{part}_out"))  # [N, k]
        # logit of the mean member probability: lse(logsigmoid(z)) - lse(logsigmoid(-z)).
        def lse_logsigmoid(v: str) -> str:
            a = g.op("Neg", g.softplus(g.op("Neg", v), np.float32))
            axis = g.const([1], "axis", np.int64)
            m = g.op("ReduceMax", a, axis, keepdims=1)
            s = g.op("ReduceSum", g.op("Exp", g.op("Sub", a, m)), axis, keepdims=0)
            return g.op("Add", g.op("Log", s), g.op("Squeeze", m, axis))

        return g.op("Sub", lse_logsigmoid(z), lse_logsigmoid(g.op("Neg", z)))
    raise ExportError(
        f"{part}: model kind {member.kind!r} ({type(module).__name__}) has no ONNX export; "
        "binclf exports logistic, mlp, ple_mlp and tabm members"
    )


def _blend(g: _Graph, members: list[Any], x: str, *, member_logits: Any = None) -> str:
    """Prior-corrected, member-averaged logit ``[N]`` float64 (as ``Predictor.uncalibrated_logits``).

    ``member_logits(g, member, x, part)``: one member's float32 logits (default: the table members').
    """
    member_logits = member_logits or _member_logits
    zs = []
    for i, m in enumerate(members):
        z = member_logits(g, m, x, f"member {i} ({m.kind})")
        z = g.op("Sub", z, g.const(np.float32(m.logit_shift), "logit_shift"))
        zs.append(g.cast(z, "DOUBLE"))
    if len(zs) == 1:
        return zs[0]
    p = None
    for m, z in zip(members, zs):
        term = g.op("Mul", g.sigmoid(z, np.float64), g.const(np.float64(m.weight), "weight"))
        p = term if p is None else g.op("Add", p, term)
    p = g.op("Clip", p, g.const(np.float64(1e-12), "lo"), g.const(np.float64(1 - 1e-12), "hi"))
    one = g.const(np.float64(1.0), "one")
    return g.op("Sub", g.op("Log", p), g.op("Log", g.op("Sub", one, p)))


def _calibrate(g: _Graph, calibrator: Any, z: str) -> str:
    """Calibrated probability ``[N]`` float64 from the logit ``z`` (as ``calibrator.predict_proba``)."""
    d = calibrator.to_dict()
    method, params = d["method"], d["params"]
    f64 = np.float64

    def proba(s: str) -> str:
        return g.op("Clip", g.sigmoid(s, f64), g.const(f64(PROBA_EPS), "lo"), g.const(f64(1.0 - PROBA_EPS), "hi"))

    if method == "none":
        return proba(z)
    if method == "platt":
        return proba(g.op("Add", g.op("Mul", z, g.const(f64(params["a"]), "a")), g.const(f64(params["b"]), "b")))
    if method == "temperature":
        return proba(g.op("Div", z, g.const(f64(params["T"]), "T")))
    if method == "beta":
        log_p = g.op("Neg", g.softplus(g.op("Neg", z), f64))  # log sigmoid(z)
        log_1mp = g.op("Neg", g.softplus(z, f64))  # log sigmoid(-z)
        s = g.op("Add", g.op("Mul", log_p, g.const(f64(params["a"]), "a")),
                 g.op("Mul", g.op("Neg", log_1mp), g.const(f64(params["b"]), "b")))
        return proba(g.op("Add", s, g.const(f64(params["c"]), "c")))
    if method == "isotonic":
        out = g.interp(g.sigmoid(z, f64), params["X_thresholds_"], params["y_thresholds_"], f64)
        return g.op("Clip", out, g.const(f64(ISOTONIC_EPS), "lo"), g.const(f64(1 - ISOTONIC_EPS), "hi"))
    raise ExportError(f"calibrator: method {method!r} has no ONNX export (binclf exports none, platt, "
                      "temperature, beta and isotonic)")


def _labels(predictor: Any) -> list[str]:
    """The label texts the graph outputs for decisions 0, 1 and -1 (abstain)."""
    from binclf.predictor import ABSTAIN

    return [str(predictor.target.negative), str(predictor.target.positive), ABSTAIN]


def _decide(g: _Graph, predictor: Any, p: str) -> str:
    """``label`` ``[N]`` string from the float64 probability (as ``Predictor.decide``)."""
    policy = predictor.threshold
    f64 = np.float64
    if policy is None or policy.abstain is None:
        t = 0.5 if policy is None else policy.threshold
        index = g.cast(g.op("GreaterOrEqual", p, g.const(f64(t - THRESHOLD_SLACK), "threshold")), "INT64")
    else:
        high = g.cast(g.op("GreaterOrEqual", p, g.const(f64(policy.abstain["high"] - THRESHOLD_SLACK), "high")),
                      "INT64")
        low = g.cast(g.op("Less", p, g.const(f64(policy.abstain["low"] - THRESHOLD_SLACK), "low")), "INT64")
        # 1 above the band, 0 below, 2 ("abstain") inside: 2 - 2*low - high (low and high never both 1).
        two = g.const(np.int64(2), "two")
        index = g.op("Sub", g.op("Sub", two, g.op("Mul", two, low)), high)
    table = g.const(np.array(_labels(predictor), dtype=object), "labels")
    return g.op("Gather", table, index, axis=0)


# --------------------------------------------------------------------------- the model


def signature(predictor: Any) -> dict[str, Any]:
    """The graph's inputs and outputs, plus what a caller needs to read them.

    Parameters
    ----------
    predictor : Predictor
        The loaded bundle.

    Returns
    -------
    dict
        JSON-ready: ``inputs`` (name, type ``float32``/``string``, shape ``["N"]``, the
        missing-value spelling, the known levels of categories), ``outputs``
        (``probability`` and ``label`` with its possible values), ``threshold``,
        ``abstain``, ``calibration``, ``members`` and ``target``.
    """
    pre = predictor.preprocessor
    if _is_image(predictor):
        from binclf.export.images import image_signature

        return image_signature(predictor)
    inputs = [{"name": st["name"], "type": "float32", "shape": ["N"], "missing": "NaN"} for st in pre.numeric_]
    inputs += [
        {"name": st["name"], "type": "string", "shape": ["N"], "missing": "empty string",
         "levels": list(st["levels"])}
        for st in pre.categorical_
    ]
    # The graph's inputs come in the bundle's column order.
    order = {n: i for i, n in enumerate(predictor.schema.names)}
    inputs.sort(key=lambda d: order.get(d["name"], len(order)))
    return {"inputs": inputs, **output_signature(predictor)}


def output_signature(predictor: Any) -> dict[str, Any]:
    """The graph's outputs and the decision they carry (threshold, abstain band, calibration, members, target)."""
    policy = predictor.threshold
    labels = _labels(predictor)
    return {
        "outputs": [
            {"name": "probability", "type": "float32", "shape": ["N"],
             "meaning": f"calibrated P({predictor.target.column} = {labels[1]})"},
            {"name": "label", "type": "string", "shape": ["N"],
             "values": labels if policy is not None and policy.abstain is not None else labels[:2]},
        ],
        "threshold": predictor.effective_threshold(),
        "abstain": None if policy is None or policy.abstain is None else dict(policy.abstain),
        "calibration": predictor.calibrator.to_dict()["method"],
        "members": [m.kind for m in predictor.members],
        "target": predictor.target.column,
    }


def _is_image(predictor: Any) -> bool:
    from binclf.image_predictor import ImagePredictor

    return isinstance(predictor, ImagePredictor)


def _check_exportable(predictor: Any) -> None:
    """Bundle kinds with no ONNX form yet (free text) are refused in one line, before any work."""
    from binclf.data.preprocessing import Preprocessor
    from binclf.errors import BundleError

    pre = predictor.preprocessor
    check = getattr(pre, "check_exportable", None)  # text bundles say which columns (binclf.data.text)
    if check is not None:
        try:
            check()
        except BundleError as exc:
            raise ExportError(str(exc)) from None
    if not isinstance(pre, Preprocessor) and not _is_image(predictor):
        raise ExportError(
            "this is a non-table bundle, which cannot be exported to ONNX yet (only table and image bundles can); "
            "predict with `binclf predict` or binclf.Predictor.load"
        )


def build_onnx(predictor: Any) -> Any:
    """The ONNX model of ``predictor``'s whole prediction path (see the module docstring).

    Parameters
    ----------
    predictor : Predictor
        The loaded bundle.

    Returns
    -------
    onnx.ModelProto
        Inputs: one per feature column, ``float32 [N]`` or ``string [N]`` (an image
        bundle: ``image`` ``float32 [N, C, S, S]``, see :mod:`binclf.export.images`); outputs
        ``probability`` ``float32 [N]`` and ``label`` ``string [N]``; the signature as
        JSON in ``metadata_props["binclf.signature"]``.

    Raises
    ------
    ExportError
        A part of the bundle has no ONNX form (the message names it).
    """
    _check_exportable(predictor)
    if _is_image(predictor):
        from binclf.export.images import build_image_onnx

        return build_image_onnx(predictor)
    g = _Graph()
    onnx, helper = g.onnx, g.helper
    TP = onnx.TensorProto
    pre = predictor.preprocessor
    if pre.numeric not in ("robust", "standard", "quantile"):
        raise ExportError(f"preprocessing: numeric mode {pre.numeric!r} has no ONNX export")
    sig = signature(predictor)
    graph_inputs = [
        helper.make_tensor_value_info(d["name"], TP.FLOAT if d["type"] == "float32" else TP.STRING, ["N"])
        for d in sig["inputs"]
    ]
    inputs = {d["name"]: d["name"] for d in sig["inputs"]}
    values, indicators = _numeric_block(g, pre, inputs)
    blocks = values + indicators + _categorical_block(g, pre, inputs)
    if not blocks:
        raise ExportError("preprocessing: the bundle has no input features")
    x = blocks[0] if len(blocks) == 1 else g.op("Concat", *blocks, axis=1, hint="features")
    z = _blend(g, predictor.members, x)
    p = _calibrate(g, predictor.calibrator, z)
    g.nodes.append(helper.make_node("Cast", [p], ["probability"], to=TP.FLOAT))
    g.nodes.append(helper.make_node("Identity", [_decide(g, predictor, p)], ["label"]))
    graph = helper.make_graph(
        g.nodes, "binclf", graph_inputs,
        [helper.make_tensor_value_info("probability", TP.FLOAT, ["N"]),
         helper.make_tensor_value_info("label", TP.STRING, ["N"])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="binclf", producer_version=__version__,
    )
    model.ir_version = 9  # opset 20 needs IR 9; onnxruntime >= 1.17 reads it
    model.doc_string = f"binclf bundle: P({predictor.target.column} = {sig['outputs'][1]['values'][1]}) and its label"
    onnx.helper.set_model_props(model, {
        "binclf.signature": json.dumps(sig, sort_keys=True),
        "binclf.version": __version__,
    })
    onnx.checker.check_model(model)
    return model


def export_onnx(bundle: str | Path | Any, output: str | Path) -> dict[str, Any]:
    """Write the ONNX graph of a bundle to ``output`` (written whole or not at all).

    Parameters
    ----------
    bundle : path or Predictor
        A bundle directory written by ``binclf train``, or a loaded :class:`~binclf.Predictor`.
    output : path
        The ``.onnx`` file to write.

    Returns
    -------
    dict
        The signature (see :func:`signature`), also stored in the model's
        ``metadata_props`` under ``binclf.signature``.

    Raises
    ------
    ExportError
        A part of the bundle has no ONNX form (the message names it).
    """
    from binclf.predictor import Predictor

    predictor = bundle if isinstance(bundle, Predictor) else Predictor.load(bundle)
    model = build_onnx(predictor)
    output = Path(output)
    if output.is_dir():
        raise ExportError(f"output {output} is a directory: pass a file name ending in .onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return signature(predictor)

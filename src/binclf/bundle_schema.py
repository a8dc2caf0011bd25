"""The one validator of ``bundle.json``: every field, its type, its range.

A bundle is read by ``binclf predict``, ``evaluate``, ``info``, ``report``, the
server and the exporter; each trusts what :func:`validate_meta` let through.
A bundle that was damaged or edited by hand must never give constant or wrong
predictions with exit code 0, nor an unexpected TypeError: every problem is a
:class:`~binclf.errors.BundleError` of one line that names the field
(``threshold.threshold``, ``preprocessing.numeric_[2].scale`` ...).

:func:`validate_meta` needs only the JSON (no torch: the command line checks a
bundle before importing it); :func:`check_member_tensors` compares the tensors
of one member with the shapes its model config gives, once it is built.

The content hash (:func:`meta_digest`) covers the JSON's content, not its
bytes: the SHA-256 of the canonical serialisation (sorted keys, fixed layout)
of every field but the hash itself, so re-indenting the file is not an edit
but changing any value is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from binclf.errors import BundleError

__all__ = ["META_HASH_KEY", "meta_digest", "validate_meta", "check_member_tensors", "confined_path"]

#: The key of ``bundle.json`` that holds the SHA-256 of the rest of its content.
META_HASH_KEY = "meta_sha256"

_FIX = "the bundle is damaged or was edited; train the model again or restore the original bundle"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^m(\d+)\.$")
# Member weights are stored as float64 text: they sum to 1 up to rounding.
_SIMPLEX_TOL = 1e-6


def meta_digest(meta: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``meta`` without :data:`META_HASH_KEY`."""
    body = {k: v for k, v in meta.items() if k != META_HASH_KEY}
    text = json.dumps(body, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def confined_path(bundle: Path, name: Any, *, field: str) -> Path:
    """``bundle / name`` when ``name`` is a plain relative path that stays inside ``bundle``.

    Absolute paths, ``..`` and symbolic links that lead out of the bundle's
    directory are a BundleError: a bundle may only name its own files (else
    ``weights.file: ../data.csv`` would have binclf read and hash a user's file).
    """
    if not isinstance(name, str) or not name:
        raise BundleError(f"{bundle / 'bundle.json'}: {field} must be a file name, found {_show(name)}; {_FIX}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name or "\x00" in name:
        raise BundleError(
            f"{bundle / 'bundle.json'}: {field} {name!r} points outside the bundle directory; "
            f"a bundle may only name files inside it; {_FIX}"
        )
    target = bundle / rel
    root = bundle.resolve()
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise BundleError(
            f"{bundle / 'bundle.json'}: {field} {name!r} is a link to {resolved}, outside the bundle directory; "
            f"a bundle may only name files inside it; {_FIX}"
        )
    return target


# --------------------------------------------------------------------------- helpers


def _show(v: Any) -> str:
    """A short repr of a found value for a message (never a whole list)."""
    text = repr(v) if not isinstance(v, (dict, list)) else f"a {type(v).__name__} of {len(v)}"
    if isinstance(v, float) and not math.isfinite(v):
        text = repr(v)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Problems:
    """Collects problems as ``field: what was expected, found what``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, field: str, expected: str, found: Any) -> None:
        self.items.append(f"{field} must be {expected}, found {_show(found)}")

    def note(self, text: str) -> None:
        self.items.append(text)

    # Each check returns whether the value passed, so callers can skip dependent checks.
    def dict(self, field: str, v: Any) -> bool:
        if not isinstance(v, dict):
            self.add(field, "an object", v)
            return False
        return True

    def list(self, field: str, v: Any, *, nonempty: bool = False) -> bool:
        if not isinstance(v, list) or (nonempty and not v):
            self.add(field, "a non-empty list" if nonempty else "a list", v)
            return False
        return True

    def str(self, field: str, v: Any, *, nonempty: bool = True) -> bool:
        if not isinstance(v, str) or (nonempty and not v):
            self.add(field, "a non-empty text" if nonempty else "a text", v)
            return False
        return True

    def bool(self, field: str, v: Any) -> bool:
        if not isinstance(v, bool):
            self.add(field, "true or false", v)
            return False
        return True

    def int(self, field: str, v: Any, *, low: int = 0) -> bool:
        if not _is_int(v) or v < low:
            self.add(field, f"an integer >= {low}", v)
            return False
        return True

    def number(
        self,
        field: str,
        v: Any,
        *,
        low: float | None = None,
        high: float | None = None,
        positive: bool = False,
        finite: bool = True,
    ) -> bool:
        ok = _is_number(v) and (not finite or math.isfinite(v))
        if ok and low is not None:
            ok = v >= low
        if ok and high is not None:
            ok = v <= high
        if ok and positive:
            ok = v > 0
        if not ok:
            if low is not None and high is not None:
                expected = f"a finite number in [{low:g}, {high:g}]"
            elif positive:
                expected = "a finite number > 0"
            elif low is not None:
                expected = f"a finite number >= {low:g}"
            else:
                expected = "a finite number" if finite else "a number"
            self.add(field, expected, v)
        return ok

    def keys(self, field: str, d: dict, required: tuple[str, ...]) -> bool:
        missing = [k for k in required if k not in d]
        if missing:
            self.note(f"{field} is missing the field(s) {', '.join(map(repr, missing))}")
            return False
        return True


# --------------------------------------------------------------------------- the validator


def validate_meta(meta: Any, *, where: str | Path = "bundle.json") -> int:
    """Check every field of a bundle's JSON ``meta``; returns the number of model inputs.

    Types, ranges and finiteness of the threshold, the abstain band, the
    calibrator's parameters, the preprocessor's statistics (medians, nonzero
    finite scales, category lists), the target's labels (JSON scalars, distinct),
    the members (known prefixes, weights on the simplex, ``n_features`` equal to
    the preprocessor's output width) and the weights entry (a file inside the
    bundle, a SHA-256). The format and its version are checked by the caller.

    Parameters
    ----------
    meta : the parsed ``bundle.json``.
    where : the file named in messages.

    Returns
    -------
    int : the number of model inputs the preprocessor produces (``n_features``).

    Raises
    ------
    BundleError : one line naming the first problems found (``field must be X, found Y``).
    """
    pr = _Problems()
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: the file must hold a JSON object, found {_show(meta)}; {_FIX}")
    image = meta.get("kind") == "image"  # images in place of rows: no table schema (binclf.image_predictor)
    required = ("weights", "target", "preprocessing", "members", "calibration") + (() if image else ("schema",))
    if not pr.keys("bundle.json", meta, required):
        _raise(where, pr)
    _check_weights(pr, meta["weights"])
    if image:
        _check_target(pr, meta["target"], [])
        width = _check_image_preprocessing(pr, meta["preprocessing"])
    else:
        schema_ok = _check_schema(pr, "schema", meta["schema"])
        names = [c["name"] for c in meta["schema"]["columns"]] if schema_ok else []
        _check_target(pr, meta["target"], names)
        width = _check_preprocessing(pr, meta["preprocessing"], meta["schema"] if schema_ok else None)
    _check_members(pr, meta["members"], width)
    _check_calibration(pr, meta["calibration"])
    _check_threshold(pr, meta.get("threshold"))
    if "info" in meta and meta["info"] is not None and pr.dict("info", meta["info"]):
        _check_distributed(pr, meta["info"].get("distributed"))
    if meta.get("versions") is not None:
        pr.dict("versions", meta["versions"])
    if META_HASH_KEY in meta and not (isinstance(meta[META_HASH_KEY], str) and _HEX64.match(meta[META_HASH_KEY])):
        pr.add(META_HASH_KEY, "a SHA-256 in hex (64 characters)", meta[META_HASH_KEY])
    _raise(where, pr)
    return width if width is not None else -1


def _raise(where: str | Path, pr: _Problems) -> None:
    if not pr.items:
        return
    shown = "; ".join(pr.items[:3])
    more = f" (and {len(pr.items) - 3} more problem(s))" if len(pr.items) > 3 else ""
    raise BundleError(f"{where}: {shown}{more}; {_FIX}")


def _check_distributed(pr: _Problems, d: Any) -> None:
    """``info.distributed``: how many processes trained the model, over which backend (absent in older bundles)."""
    if d is None or not pr.dict("info.distributed", d) or not pr.keys("info.distributed", d, ("world_size", "backend")):
        return
    pr.int("info.distributed.world_size", d["world_size"], low=1)
    if d["backend"] is not None and d["backend"] not in ("gloo", "nccl", "mpi", "ucc"):
        pr.add("info.distributed.backend", "null, 'gloo', 'nccl', 'mpi' or 'ucc'", d["backend"])


def _check_weights(pr: _Problems, w: Any) -> None:
    if not pr.dict("weights", w) or not pr.keys("weights", w, ("file", "sha256")):
        return
    pr.str("weights.file", w["file"])
    if not (isinstance(w["sha256"], str) and _HEX64.match(w["sha256"])):
        pr.add("weights.sha256", "a SHA-256 in hex (64 characters)", w["sha256"])
    if "tensors" in w:
        pr.int("weights.tensors", w["tensors"])


def _check_schema(pr: _Problems, field: str, s: Any) -> bool:
    if not pr.dict(field, s) or not pr.keys(field, s, ("columns",)):
        return False
    cols = s["columns"]
    if not pr.list(f"{field}.columns", cols, nonempty=True):
        return False
    ok = True
    for i, c in enumerate(cols):
        f = f"{field}.columns[{i}]"
        if not pr.dict(f, c) or not pr.keys(f, c, ("name", "role", "dtype")):
            ok = False
            continue
        ok &= pr.str(f"{f}.name", c["name"])
        if c["role"] not in ("numeric", "categorical", "text"):
            pr.add(f"{f}.role", "'numeric', 'categorical' or 'text'", c["role"])
            ok = False
        ok &= pr.str(f"{f}.dtype", c["dtype"])
    if ok:
        names = [c["name"] for c in cols]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            pr.note(f"{field}.columns names the column(s) {', '.join(map(repr, dups))} twice")
            ok = False
    dropped = s.get("dropped", [])
    if pr.list(f"{field}.dropped", dropped):
        for i, d in enumerate(dropped):
            if not (isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)):
                pr.add(f"{field}.dropped[{i}]", "a pair [name, reason]", d)
    return ok


def _is_label(v: Any) -> bool:
    return isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))


def _check_target(pr: _Problems, t: Any, names: list[str]) -> None:
    if not pr.dict("target", t) or not pr.keys("target", t, ("column", "positive", "negative")):
        return
    if pr.str("target.column", t["column"]) and t["column"] in names:
        pr.note(f"target.column {t['column']!r} is also a feature column in schema.columns")
    labels_ok = True
    for key in ("positive", "negative"):
        if not _is_label(t[key]):
            pr.add(f"target.{key}", "a label (text, number or true/false)", t[key])
            labels_ok = False
    if labels_ok:
        from binclf.data.target import _label_key

        if _label_key(t["positive"]) == _label_key(t["negative"]):
            pr.note(
                f"target.positive and target.negative must be two different labels, "
                f"found {_show(t['positive'])} and {_show(t['negative'])}"
            )
    for key in ("n_positive", "n_negative"):
        if key in t:
            pr.int(f"target.{key}", t[key])


def _check_image_preprocessing(pr: _Problems, p: Any) -> None:
    """An image bundle's preprocessor (binclf.data.images.ImagePreprocessor): size, channels, mean, std."""
    if not pr.dict("preprocessing", p) or not pr.keys("preprocessing", p, ("size", "channels", "mean", "std")):
        return None
    pr.int("preprocessing.size", p["size"], low=1)
    if p["channels"] not in (1, 3):
        pr.add("preprocessing.channels", "1 or 3", p["channels"])
        return None
    for key, positive in (("mean", False), ("std", True)):
        if pr.list(f"preprocessing.{key}", p[key], nonempty=True):
            if len(p[key]) != p["channels"]:
                pr.note(f"preprocessing.{key} has {len(p[key])} values for {p['channels']} channel(s)")
            for i, v in enumerate(p[key]):
                pr.number(f"preprocessing.{key}[{i}]", v, positive=positive)
    return None  # a CNN's config holds no input width to compare: its tensors' shapes are checked on load


def _check_text_preprocessing(pr: _Problems, p: Any, schema: Any) -> None:
    """Numbers and categories (the inner table preprocessor) plus the text columns' vocabularies."""
    if not pr.keys("preprocessing", p, ("table", "max_chars", "text")):
        return None
    _check_preprocessing(pr, p["table"], None, field="preprocessing.table")
    pr.int("preprocessing.max_chars", p["max_chars"], low=1)
    if pr.list("preprocessing.text", p["text"], nonempty=True):
        for i, col in enumerate(p["text"]):
            f = f"preprocessing.text[{i}]"
            if not pr.dict(f, col) or not pr.keys(f, col, ("name", "terms", "prefix")):
                continue
            pr.str(f"{f}.name", col["name"])
            if pr.dict(f"{f}.terms", col["terms"]):
                for kind, terms in col["terms"].items():
                    if pr.list(f"{f}.terms.{kind}", terms) and not all(isinstance(x, str) for x in terms):
                        pr.add(f"{f}.terms.{kind}", "a list of text n-grams", "other values")
            if pr.str(f"{f}.prefix", col["prefix"]) and not re.match(r"^text\d+\.$", col["prefix"]):
                pr.add(f"{f}.prefix", "like 'text0.'", col["prefix"])
    # Networks read the dense block and the linear member every column: the
    # members' widths differ, so none is compared here (their tensors are, on load).
    return None


def _check_preprocessing(pr: _Problems, p: Any, schema: Any, *, field: str = "preprocessing") -> int | None:
    """Checks the fitted preprocessor; returns its output width (None when unknown)."""
    from binclf.data.preprocessing import _FORMAT
    from binclf.data.text import _FORMAT as _TEXT_FORMAT

    if not pr.dict(field, p):
        return None
    if field == "preprocessing" and p.get("format") == _TEXT_FORMAT:
        return _check_text_preprocessing(pr, p, schema)
    if p.get("format") != _FORMAT:
        pr.add(f"{field}.format", repr(_FORMAT), p.get("format"))
        return None
    required = ("schema", "numeric", "clip", "max_levels", "min_level_count", "n_quantiles", "numeric_", "categorical_")
    if not pr.keys(field, p, required):
        return None
    mode = p["numeric"]
    if mode not in ("robust", "standard", "quantile"):
        pr.add(f"{field}.numeric", "'robust', 'standard' or 'quantile'", mode)
    if p["clip"] is not None:
        pr.number(f"{field}.clip", p["clip"], positive=True)
    pr.int(f"{field}.max_levels", p["max_levels"], low=1)
    pr.int(f"{field}.min_level_count", p["min_level_count"], low=1)
    pr.int(f"{field}.n_quantiles", p["n_quantiles"], low=2)
    inner_ok = _check_schema(pr, f"{field}.schema", p["schema"])
    if inner_ok and schema is not None and p["schema"]["columns"] != schema["columns"]:
        pr.note(f"{field}.schema differs from schema (the two copies of the input columns disagree)")
    numeric = p["numeric_"]
    categorical = p["categorical_"]
    if not (pr.list(f"{field}.numeric_", numeric) & pr.list(f"{field}.categorical_", categorical)):
        return None
    width = 0
    ok = True
    for i, st in enumerate(numeric):
        f = f"{field}.numeric_[{i}]"
        if not pr.dict(f, st) or not pr.keys(f, st, ("name", "median", "center", "scale", "fill", "indicator", "na_tokens")):
            ok = False
            continue
        f = _field_format(f, st["name"])
        name = st["name"]
        ok &= pr.str(f.format("name"), name)
        pr.number(f.format("median"), st["median"])
        pr.number(f.format("center"), st["center"])
        # A zero scale divides by zero; an infinite one maps every value to 0.
        pr.number(f.format("scale"), st["scale"], positive=True)
        pr.number(f.format("fill"), st["fill"])
        if pr.bool(f.format("indicator"), st["indicator"]):
            width += 1 + int(st["indicator"])
        else:
            ok = False
        if pr.list(f.format("na_tokens"), st["na_tokens"]) and not all(isinstance(x, str) for x in st["na_tokens"]):
            pr.add(f.format("na_tokens"), "a list of texts", st["na_tokens"])
        if mode == "quantile":
            _check_quantiles(pr, f, st)
    for i, st in enumerate(categorical):
        f = f"{field}.categorical_[{i}]"
        if not pr.dict(f, st) or not pr.keys(f, st, ("name", "levels", "missing", "unknown")):
            ok = False
            continue
        f = _field_format(f, st["name"])
        name = st["name"]
        ok &= pr.str(f.format("name"), name)
        levels = st["levels"]
        if not pr.list(f.format("levels"), levels) or not all(isinstance(x, str) for x in levels):
            if isinstance(levels, list):
                pr.add(f.format("levels"), "a list of texts", next(x for x in levels if not isinstance(x, str)))
            ok = False
        elif len(set(levels)) != len(levels):
            pr.note(f"{f.format('levels')} lists a level twice")
        else:
            width += len(levels)
        for key in ("missing", "unknown"):
            if pr.bool(f.format(key), st[key]):
                width += int(st[key])
            else:
                ok = False
    if ok and inner_ok:
        cols = p["schema"]["columns"]
        want_num = [c["name"] for c in cols if c["role"] == "numeric"]
        want_cat = [c["name"] for c in cols if c["role"] == "categorical"]
        if [st["name"] for st in numeric] != want_num:
            pr.note(f"{field}.numeric_ does not list the numeric columns of preprocessing.schema in order")
            ok = False
        if [st["name"] for st in categorical] != want_cat:
            pr.note(f"{field}.categorical_ does not list the categorical columns of preprocessing.schema in order")
            ok = False
    return width if ok else None


class _field_format:
    """``fmt.format(key)`` -> ``preprocessing.numeric_[2].key (column 'age')`` (names may hold braces)."""

    def __init__(self, base: str, name: Any) -> None:
        self.base = base
        self.suffix = f" (column {_show(name)})" if isinstance(name, str) else ""

    def format(self, key: str) -> str:
        return f"{self.base}.{key}{self.suffix}"


def _check_quantiles(pr: _Problems, f: str, st: dict) -> None:
    q, s = st.get("quantiles"), st.get("scores")
    if not (isinstance(q, list) and q and all(_is_number(v) and math.isfinite(v) for v in q)):
        pr.add(f.format("quantiles"), "a non-empty list of finite numbers", q)
        return
    if not (isinstance(s, list) and len(s) == len(q) and all(_is_number(v) and math.isfinite(v) for v in s)):
        pr.add(f.format("scores"), f"a list of {len(q)} finite numbers", s)
        return
    if any(b < a for a, b in zip(q, q[1:])):
        pr.note(f"{f.format('quantiles')} must be in increasing order")


def _check_members(pr: _Problems, members: Any, width: int | None) -> None:
    if not pr.list("members", members, nonempty=True):
        return
    weights: list[float] = []
    prefixes: list[str] = []
    for i, m in enumerate(members):
        f = f"members[{i}]"
        if not pr.dict(f, m) or not pr.keys(f, m, ("name", "config", "weight", "logit_shift", "prefix")):
            continue
        pr.str(f"{f}.name", m["name"])
        if pr.dict(f"{f}.config", m["config"]):
            nf = m["config"].get("n_features")
            if nf is not None and pr.int(f"{f}.config.n_features", nf, low=1) and width is not None and nf != width:
                pr.note(
                    f"{f}.config.n_features is {nf} but the preprocessor produces {width} model inputs"
                )
        if pr.number(f"{f}.weight", m["weight"], low=0.0):
            weights.append(float(m["weight"]))
        pr.number(f"{f}.logit_shift", m["logit_shift"])
        if pr.str(f"{f}.prefix", m["prefix"]):
            if not _PREFIX.match(m["prefix"]):
                pr.add(f"{f}.prefix", "like 'm0.'", m["prefix"])
            prefixes.append(m["prefix"])
    if len(set(prefixes)) != len(prefixes):
        pr.note("members: two members have the same prefix")
    if len(weights) == len(members) and abs(math.fsum(weights) - 1.0) > _SIMPLEX_TOL:
        pr.note(f"members[*].weight must sum to 1, found a sum of {math.fsum(weights):.6g}")


def _check_calibration(pr: _Problems, c: Any) -> None:
    from binclf.decide.calibration import _PARAM_KEYS, CALIBRATION_METHODS

    if not pr.dict("calibration", c) or not pr.keys("calibration", c, ("method",)):
        return
    method = c["method"]
    if method not in _PARAM_KEYS:
        pr.add("calibration.method", f"one of {', '.join(CALIBRATION_METHODS)}", method)
        return
    params = c.get("params") or {}
    if not pr.dict("calibration.params", params):
        return
    missing = [k for k in _PARAM_KEYS[method] if k not in params]
    if missing:
        pr.note(f"calibration.params is missing {', '.join(map(repr, missing))} for the {method} calibrator")
        return
    f = "calibration.params.{}"
    if method == "temperature":
        pr.number(f.format("T"), params["T"], positive=True)
    elif method == "platt":
        pr.number(f.format("a"), params["a"])
        pr.number(f.format("b"), params["b"])
    elif method == "beta":
        pr.number(f.format("a"), params["a"], low=0.0)
        pr.number(f.format("b"), params["b"], low=0.0)
        pr.number(f.format("c"), params["c"])
    elif method == "isotonic":
        xs, ys = params["X_thresholds_"], params["y_thresholds_"]
        for key, v in (("X_thresholds_", xs), ("y_thresholds_", ys)):
            if not (isinstance(v, list) and v and all(_is_number(x) and 0.0 <= x <= 1.0 for x in v)):
                pr.add(f.format(key), "a non-empty list of numbers in [0, 1]", v)
                return
            if any(b < a for a, b in zip(v, v[1:])):
                pr.note(f"{f.format(key)} must be in increasing order")
                return
        if len(xs) != len(ys):
            pr.note(f"calibration.params: X_thresholds_ has {len(xs)} knots but y_thresholds_ has {len(ys)}")


_POLICY_KEYS = (
    "objective", "threshold", "value", "threshold_ci", "value_ci", "analytic_threshold", "abstain", "fallback",
    "confidence",
)


def _check_threshold(pr: _Problems, t: Any) -> None:
    if t is None:
        return
    if not pr.dict("threshold", t) or not pr.keys("threshold", t, ("objective", "threshold", "value")):
        return
    unknown = sorted(set(t) - set(_POLICY_KEYS))
    if unknown:
        pr.note(f"threshold has unknown field(s) {', '.join(map(repr, unknown))}")
    pr.str("threshold.objective", t["objective"])
    pr.number("threshold.threshold", t["threshold"], low=0.0, high=1.0)
    # The objective's value and its intervals are reports, not inputs: NaN is allowed.
    pr.number("threshold.value", t["value"], finite=False)
    for key in ("threshold_ci", "value_ci"):
        v = t.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)):
            pr.add(f"threshold.{key}", "null or a pair of numbers", v)
    if t.get("analytic_threshold") is not None:
        pr.number("threshold.analytic_threshold", t["analytic_threshold"], low=0.0, high=1.0)
    if t.get("confidence") is not None:
        pr.number("threshold.confidence", t["confidence"], low=0.0, high=1.0)
    if t.get("fallback") is not None:
        pr.str("threshold.fallback", t["fallback"], nonempty=False)
    band = t.get("abstain")
    if band is None or not pr.dict("threshold.abstain", band) or not pr.keys("threshold.abstain", band, ("low", "high")):
        return
    ok = pr.number("threshold.abstain.low", band["low"], low=0.0, high=1.0)
    ok &= pr.number("threshold.abstain.high", band["high"], low=0.0, high=1.0)
    if ok and band["low"] > band["high"]:
        pr.note(f"threshold.abstain.low ({band['low']:g}) must not be above threshold.abstain.high ({band['high']:g})")


# --------------------------------------------------------------------------- tensors


def check_member_tensors(
    index: int,
    spec: Mapping[str, Any],
    expected: Mapping[str, Any],
    found: Mapping[str, Any],
    *,
    parameters: Collection[str] = (),
    where: str | Path,
) -> None:
    """Compare member ``index``'s tensors with the shapes its model config gives.

    ``expected`` is the freshly built model's ``state_dict()``; ``found`` the
    tensors of the safetensors file under the member's prefix (prefix removed);
    ``parameters`` the names of the trainable ones. Missing, unexpected and
    misshapen tensors, NaN anywhere and infinities in parameters are a BundleError.
    """
    prefix = spec["prefix"]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    problems = []
    if missing:
        problems.append(f"has no tensor(s) {', '.join(prefix + k for k in missing[:3])}")
    if extra:
        problems.append(f"has unexpected tensor(s) {', '.join(prefix + k for k in extra[:3])}")
    for k, v in expected.items():
        if k in found and tuple(found[k].shape) != tuple(v.shape):
            problems.append(
                f"tensor {prefix + k} has shape {list(found[k].shape)} where the config of members[{index}] "
                f"({spec['name']}) gives {list(v.shape)}"
            )
            break
    if not problems:
        import torch

        # Parameters must be finite; buffers may hold infinities on purpose (the
        # open outer bin edges of a piecewise-linear encoding), never NaN.
        for k, v in found.items():
            if not v.is_floating_point():
                continue
            bad = bool(torch.isnan(v).any()) or (k in parameters and not bool(torch.isfinite(v).all()))
            if bad:
                problems.append(f"tensor {prefix + k} holds NaN{' or infinite' if k in parameters else ''} values")
                break
    if problems:
        raise BundleError(f"{where}: {'; '.join(problems)}; {_FIX}")

"""What a decision threshold is chosen for: objectives, their text form and their parameters.

Objectives (the text is what ``--objective`` takes and what ``str()`` gives back):

==========================  ==========================================================
``f1``                      maximise F1
``fbeta:B``                 maximise F-beta (``B > 1`` favours recall)
``youden``                  maximise Youden's J = TPR - FPR
``balanced_accuracy``       maximise (TPR + TNR) / 2
``accuracy``                maximise accuracy
``mcc``                     maximise Matthews correlation
``cost:C_FP,C_FN``          minimise the mean cost ``(C_FP * FP + C_FN * FN) / n``
``precision:P``             maximise recall subject to precision >= P
``recall:R``                maximise precision subject to recall >= R
``fpr:A``                   maximise TPR subject to FPR <= A
==========================  ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from binclf.errors import ConfigError

__all__ = ["OBJECTIVE_FORMS", "Objective", "format_float", "parse_objective"]

#: The accepted objective texts, as shown in error messages and ``--help``.
OBJECTIVE_FORMS = (
    "f1, fbeta:BETA (e.g. fbeta:2), youden, balanced_accuracy, accuracy, mcc, "
    "cost:C_FP,C_FN (e.g. cost:1,10), precision:P (e.g. precision:0.9), "
    "recall:R (e.g. recall:0.95), fpr:A (e.g. fpr:0.01)"
)

# name -> parameter names, in the order they appear in the text.
_PARAMS: dict[str, tuple[str, ...]] = {
    "f1": (),
    "fbeta": ("beta",),
    "youden": (),
    "balanced_accuracy": (),
    "accuracy": (),
    "mcc": (),
    "cost": ("c_fp", "c_fn"),
    "precision": ("target",),
    "recall": ("target",),
    "fpr": ("target",),
}


def format_float(x: float) -> str:
    """Shortest text that reads back as the same float (``2.0 -> "2"``)."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _objective_error(text: str, why: str) -> ConfigError:
    return ConfigError(f"bad threshold objective {text!r}: {why}; valid forms: {OBJECTIVE_FORMS}")


@dataclass(frozen=True)
class Objective:
    """What a threshold is chosen for: a ``name`` and its ``params``.

    Build one with :func:`parse_objective`; ``str(objective)`` gives the text
    back, ``to_dict``/``from_dict`` round-trip through JSON.
    """

    name: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        text = self._text()
        if self.name not in _PARAMS:
            raise _objective_error(text, f"unknown objective {self.name!r}")
        expected = _PARAMS[self.name]
        if set(self.params) != set(expected):
            raise _objective_error(
                text, f"{self.name} takes parameter(s) {list(expected)}, got {sorted(self.params)}"
            )
        try:
            values = {k: float(self.params[k]) for k in expected}
        except (TypeError, ValueError):
            raise _objective_error(text, "parameters must be numbers") from None
        if not all(math.isfinite(v) for v in values.values()):
            raise _objective_error(text, "parameters must be finite numbers")
        if self.name == "fbeta" and not values["beta"] > 0:
            raise _objective_error(text, "beta must be > 0")
        if self.name == "cost" and (
            min(values.values()) < 0 or values["c_fp"] + values["c_fn"] <= 0
        ):
            raise _objective_error(text, "costs must be >= 0 and not both 0")
        if self.name in ("precision", "recall") and not 0.0 < values["target"] <= 1.0:
            raise _objective_error(text, f"the {self.name} target must be in (0, 1]")
        if self.name == "fpr" and not 0.0 <= values["target"] < 1.0:
            raise _objective_error(text, "the false-positive-rate target must be in [0, 1)")
        # Normalise to plain floats in a fixed order so equality and JSON are stable.
        object.__setattr__(self, "params", values)

    def _text(self) -> str:
        try:
            args = ",".join(format_float(self.params[k]) for k in _PARAMS[self.name])
        except (KeyError, TypeError, ValueError):
            return f"{self.name}:{self.params}"
        return f"{self.name}:{args}" if args else self.name

    def __str__(self) -> str:
        return self._text()

    def __hash__(self) -> int:
        # The generated hash would hash the params dict and fail; the text is canonical.
        return hash(self._text())

    @property
    def greater_is_better(self) -> bool:
        """False only for ``cost``, whose value is a mean cost to minimise."""
        return self.name != "cost"

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, plain JSON."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Objective:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or "name" not in d:
            raise ConfigError(f"an objective must be a dict like {{'name': 'f1', 'params': {{}}}}, got {d!r}")
        return cls(name=d["name"], params=dict(d.get("params") or {}))


def parse_objective(text: str | Objective) -> Objective:
    """Parse an objective text such as ``"f1"``, ``"cost:1,10"`` or ``"precision:0.9"``.

    Case and surrounding spaces are ignored. An :class:`Objective` passes
    through. Anything else raises :class:`~binclf.errors.ConfigError` listing
    the valid forms (:data:`OBJECTIVE_FORMS`).
    """
    if isinstance(text, Objective):
        return text
    if not isinstance(text, str):
        raise ConfigError(f"a threshold objective must be text, got {text!r}; valid forms: {OBJECTIVE_FORMS}")
    clean = text.strip().lower().replace(" ", "")
    name, _, args = clean.partition(":")
    if name not in _PARAMS:
        raise _objective_error(text, f"unknown objective {name!r}")
    keys = _PARAMS[name]
    parts = args.split(",") if args else []
    if len(parts) != len(keys):
        want = f"{len(keys)} number(s) after ':'" if keys else "no ':' arguments"
        raise _objective_error(text, f"{name} takes {want}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise _objective_error(text, f"{args!r} is not a number list") from None
    return Objective(name=name, params=dict(zip(keys, values)))

"""What the doctor reports: :class:`Finding` (one problem, with what was observed, why it matters and
the fix) and :class:`Diagnosis` (the findings of one run, errors first, as text or JSON).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FINDING_CODES", "Diagnosis", "Finding", "Report", "Severity"]

Severity = Literal["error", "warning", "hint"]
_SEVERITIES: tuple[str, ...] = ("error", "warning", "hint")

#: Every finding code :func:`check` and :func:`run` can report, with its title.
FINDING_CODES: dict[str, str] = {
    "nonneg-output": "the output is non-negative (ReLU, Softplus, abs ...) before the sigmoid",
    "bounded-output": "the output passes a bounded activation (Tanh, GELU ...) before the sigmoid",
    "double-sigmoid": "the model outputs probabilities and the loss applies a sigmoid again",
    "bce-on-logits": "a loss that expects probabilities is given values outside [0, 1]",
    "sigmoid-bce-unstable": "sigmoid and log are computed separately: unstable at extreme logits",
    "shape-mismatch": "the output's shape does not match the targets'",
    "two-column-output": "two output columns per row",
    "constant-output": "the model returns the same value for every row",
    "bad-targets": "the targets are not 0/1",
    "int-targets": "integer targets where the loss needs floats",
    "imbalance-no-weighting": "strong class imbalance with no weighting and a 0.5 threshold",
    "bias-not-prior": "the output bias does not start at logit(prior)",
    "saturated-logits": "logits saturate the sigmoid at initialisation",
    "unscaled-inputs": "input features on very different scales",
    "lr-too-high": "the loss rises during a short training probe",
    "nonfinite-inputs": "the inputs contain NaN or inf",
    "nonfinite-output": "the model returns NaN or inf",
    "forward-failed": "the model could not be called on the batch",
    "loss-failed": "the loss could not be called on the model's output",
    "target-mapping": "how text or boolean targets were mapped to 0/1",
    "assumed-loss": "no loss was given: binclf assumed BCEWithLogitsLoss",
    "check-skipped": "a check could not run",
}

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Finding:
    """One problem (or note) found by :func:`~binclf.doctor.check`.

    Parameters
    ----------
    code : str
        A stable short id, one of :data:`FINDING_CODES`.
    severity : {"error", "warning", "hint"}
        ``"error"``: the model cannot learn the task as written; ``"warning"``: it
        trains, badly or fragilely; ``"hint"``: a note.
    observed : str
        What was measured, with numbers.
    why : str
        Why it matters.
    fix : str
        The change to make; lines starting with four spaces are code.
    """

    code: str
    severity: Severity
    observed: str
    why: str
    fix: str

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITIES:
            raise ValueError(f"severity must be one of {_SEVERITIES}, got {self.severity!r}")

    @property
    def title(self) -> str:
        """One-line description of the code."""
        return FINDING_CODES.get(self.code, self.code)

    def to_dict(self) -> dict[str, str]:
        """JSON-serialisable form."""
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "observed": self.observed,
            "why": self.why,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Diagnosis:
    """The findings of :func:`~binclf.doctor.check`, errors first, and a few summary lines.

    Iterating a diagnosis yields its findings; ``str(diagnosis)`` is the text the
    command line prints (lines shorter than 100 characters).

    Parameters
    ----------
    findings : tuple of Finding
        In any order; kept sorted by severity (errors, warnings, hints).
    summary : tuple of str
        Lines printed before the findings (the data, the model, the targets).
    """

    findings: tuple[Finding, ...] = ()
    summary: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        order = {s: i for i, s in enumerate(_SEVERITIES)}
        ordered = tuple(sorted(self.findings, key=lambda f: order[f.severity]))
        object.__setattr__(self, "findings", ordered)
        object.__setattr__(self, "summary", tuple(self.summary))

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def has_errors(self) -> bool:
        """True when at least one finding is an error (the CLI then exits 1)."""
        return any(f.severity == "error" for f in self.findings)

    @property
    def codes(self) -> list[str]:
        """The finding codes, in report order."""
        return [f.code for f in self.findings]

    def get(self, code: str) -> Finding | None:
        """The first finding with ``code``, or ``None``."""
        return next((f for f in self.findings if f.code == code), None)

    def format(self, *, width: int = 96) -> str:
        """Plain text: summary, then each finding (observed / why / fix), then a count."""
        lines: list[str] = []
        for s in self.summary:
            lines.extend(textwrap.wrap(s, width=width, subsequent_indent="  ") or [""])
        for f in self.findings:
            lines.append("")
            lines.append(f"[{f.severity}] {f.code}: {f.title}")
            for label, text in (("observed", f.observed), ("why", f.why), ("fix", f.fix)):
                lines.extend(_wrap_field(label, text, width))
        counts = {s: sum(f.severity == s for f in self.findings) for s in _SEVERITIES}
        lines.append("")
        if counts["error"] == counts["warning"] == 0:
            lines.append(f"no errors or warnings ({_plural(counts['hint'], 'hint')})")
        else:
            lines.append(
                f"{_plural(counts['error'], 'error')}, {_plural(counts['warning'], 'warning')}, "
                f"{_plural(counts['hint'], 'hint')}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "has_errors": self.has_errors,
            "summary": list(self.summary),
            "findings": [f.to_dict() for f in self.findings],
        }


#: The former name of :class:`Diagnosis`, still importable (it read like ``binclf.report``, the model report).
Report = Diagnosis


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _wrap_field(label: str, text: str, width: int) -> list[str]:
    # Prose is wrapped; lines indented by four spaces are code and kept whole.
    out: list[str] = []
    head = f"  {label}: "
    first = True
    for line in text.split("\n"):
        if line.startswith("    "):
            out.append("      " + line.strip() if not first else head + line.strip())
        else:
            out.extend(
                textwrap.wrap(
                    line,
                    width=width,
                    initial_indent=head if first else "    ",
                    subsequent_indent="    ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
        first = False
    return out


@dataclass
class _Ctx:
    """State shared by the checks of one :func:`check` call."""

    findings: list[Finding] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def add(self, code: str, severity: Severity, observed: str, why: str, fix: str) -> None:
        self.findings.append(Finding(code, severity, observed, why, fix))

    def has(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def skipped(self, what: str, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_first_line(exc)}"
        self.add(
            "check-skipped",
            "hint",
            f"{what} was skipped: {reason}",
            "The other checks ran; this one could not on this model, loss or batch.",
            "Nothing to change unless the reason above is unexpected.",
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n")[0]
    return text if len(text) <= 160 else text[:157] + "..."


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _fmt_p(p: float) -> str:
    # Saturated probabilities would all print as 1.0000: show the distance to 1.
    if 0.9999 < p < 1.0:
        return f"1 - {1.0 - p:.2g}"
    if 0.0 < p < 1e-4:
        return f"{p:.2g}"
    return f"{p:.4f}"



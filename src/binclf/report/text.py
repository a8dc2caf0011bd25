"""The report's text section: the n-grams the linear member weighs most towards each class."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from binclf.data.text import top_ngrams

if TYPE_CHECKING:
    from binclf.predictor import Predictor

__all__ = ["text_terms", "text_section_html"]


def text_terms(predictor: "Predictor", *, k: int = 15) -> dict[str, Any] | None:
    """``{"positive": [(feature, weight)], "negative": [...], "share": w}`` or None without text columns.

    Weights are the linear members' coefficients on the TF-IDF features,
    averaged over the fold members; ``share`` is the linear member's weight in
    the blend (its n-grams say little when the networks carry the blend).
    """
    prep = predictor.preprocessor
    names = getattr(prep, "feature_names_", None)
    if not getattr(prep, "text_", None) or names is None:
        return None
    linear = [m for m in predictor.members if m.kind == "logistic" and m.config.get("n_features") == len(names)]
    if not linear:
        return None
    w = np.mean([m.module.output.weight.detach().double().numpy().ravel() for m in linear], axis=0)
    out: dict[str, Any] = top_ngrams(w, list(names), k=k)
    out["share"] = float(sum(m.weight for m in linear))
    return out


def _term(name: str) -> str:
    column, rest = name.split("~", 1)
    kind, term = rest.split(":", 1)
    shown = f"“{term}”" if kind == "word" else f"…{term}…"
    return f"{escape(shown)} <span class=\"sub\">({escape(column)}, {escape(kind)})</span>"


def text_section_html(terms: dict[str, Any] | None, labels: tuple[str, str]) -> str:
    """The HTML section (empty without text columns)."""
    if not terms:
        return ""
    neg, pos = (escape(str(x)) for x in labels)

    def rows(items):
        return "".join(f"<tr><td>{_term(n)}</td><td>{w:+.2f}</td></tr>" for n, w in items) or "<tr><td>none</td><td></td></tr>"

    return f"""<h2>Text: n-grams that push the prediction</h2>
<p class="sub">Largest coefficients of the linear member on the TF-IDF features (averaged over its fold models; its share
of the blend is {terms['share']:.2f}). Word n-grams in quotes, character n-grams with dots.</p>
<div class="tables">
<section><h3>towards {pos}</h3><table>{rows(terms['positive'])}</table></section>
<section class="side"><h3>towards {neg}</h3><table>{rows(terms['negative'])}</table></section>
</div>
"""

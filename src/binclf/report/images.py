"""The image report: the table report's plots plus grids of example images.

The most confident mistakes (false positives and false negatives, each with
its probability) and a few correctly classified images per class, all from
the test split. Everything else comes from :func:`binclf.report.render_training_report`.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

__all__ = ["render_image_report", "example_indices", "image_grid_png"]

_SHOW = 8  # images per grid row


def example_indices(y: np.ndarray, p: np.ndarray, threshold: float, *, k: int = _SHOW) -> dict[str, list[int]]:
    """Test indices to show: ``false_positives`` / ``false_negatives`` most confident first, and
    ``correct_positive`` / ``correct_negative`` (the most confidently right of each class)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    order_hi = np.argsort(-p, kind="stable")
    order_lo = np.argsort(p, kind="stable")
    return {
        "false_positives": [int(i) for i in order_hi if pred[i] and not y[i]][:k],
        "false_negatives": [int(i) for i in order_lo if not pred[i] and y[i]][:k],
        "correct_positive": [int(i) for i in order_hi if pred[i] and y[i]][:k],
        "correct_negative": [int(i) for i in order_lo if not pred[i] and not y[i]][:k],
    }


def image_grid_png(images: Any, idx: list[int], captions: list[str]) -> str | None:
    """One row of images ``uint8 (n, C, S, S)`` at ``idx`` with captions, as a base64 PNG (None when empty)."""
    if not idx:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.3 * len(idx), 1.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(idx), squeeze=False)[0]
    for ax, i, cap in zip(axes, idx, captions):
        a = np.asarray(images[i])
        if a.shape[0] == 1:
            ax.imshow(a[0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(a.transpose(1, 2, 0))
        ax.set_title(cap, fontsize=8)
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _examples_html(result: Any) -> str:
    c = result.curves
    y, p = np.asarray(c["y_test"]), np.asarray(c["p_test"])
    predictor = result.predictor
    t = predictor.effective_threshold()
    pos, neg = predictor.target.positive, predictor.target.negative
    groups = example_indices(y, p, t)
    titles = {
        "false_positives": f"Most confident false positives (true {neg}, predicted {pos})",
        "false_negatives": f"Most confident false negatives (true {pos}, predicted {neg})",
        "correct_positive": f"Correct {pos}",
        "correct_negative": f"Correct {neg}",
    }
    parts = ['<section id="image-examples"><h2>Example test images</h2>'
             f"<p>Probability of {html.escape(str(pos))} under each image; threshold {t:.3f}.</p>"]
    for key, title in titles.items():
        idx = groups[key]
        png = image_grid_png(result.test_images, idx, [f"p={p[i]:.2f}" for i in idx])
        body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">' if png else "<p>none</p>"
        names = ", ".join(html.escape(result.test_names[i]) for i in idx) if idx else ""
        parts.append(f'<figure id="{key}"><figcaption>{html.escape(title)}</figcaption>{body}'
                     f'<p class="names"><small>{names}</small></p></figure>')
    parts.append("</section>")
    return "".join(parts)


def render_image_report(result: Any) -> str:
    """The HTML report of an image training run (``report.html`` in the bundle)."""
    from binclf.report import render_training_report

    page = render_training_report(result)
    section = _examples_html(result)
    if "</body>" in page:
        return page.replace("</body>", section + "</body>", 1)
    return page + section

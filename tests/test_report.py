"""The HTML report: every plot present and embedded, tables present, user strings escaped, no external resources."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from binclf.cli import main
from binclf.report import FIGURE_IDS, render_html, report_data
from binclf.decide.thresholds import choose_threshold

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects figures (id -> image sources, caption text), table ids, every src/href, and the tag nesting."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: dict[str, dict] = {}
        self.tables: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []
        self.scripts = 0
        self.stack: list[str] = []
        self.errors: list[str] = []
        self._figure: str | None = None
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key] or "")
        if tag == "script":
            self.scripts += 1
        if tag == "figure":
            self._figure = a.get("id")
            self.figures[self._figure] = {"images": [], "caption": ""}
        elif tag == "img" and self._figure is not None:
            self.figures[self._figure]["images"].append(a.get("src", ""))
        elif tag == "figcaption":
            self._in_caption = True
        elif tag == "table" and a.get("id"):
            self.tables.add(a["id"])

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()
        if tag == "figure":
            self._figure = None
        elif tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_caption and self._figure is not None:
            self.figures[self._figure]["caption"] += data


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def assert_complete(page: str, *, tables=("metrics-table", "data-summary", "threshold-policy", "calibration")) -> _Page:
    """Every figure holds one decodable embedded PNG; the page is well nested and self-contained."""
    p = parse(page)
    assert not p.errors, p.errors[:3]
    assert p.stack == [], f"unclosed tags: {p.stack}"
    assert p.scripts == 0
    for fid in FIGURE_IDS:
        assert fid in p.figures, f"figure #{fid} missing"
        images = p.figures[fid]["images"]
        assert len(images) == 1, f"figure #{fid} has {len(images)} images"
        prefix = "data:image/png;base64,"
        assert images[0].startswith(prefix)
        assert base64.b64decode(images[0][len(prefix):]).startswith(PNG_MAGIC)
        assert p.figures[fid]["caption"].strip()
    assert set(tables) <= p.tables, p.tables
    # Self-contained: nothing is fetched from anywhere.
    assert not [u for u in p.links if not u.startswith("data:")], p.links
    assert "http://" not in page and "https://" not in page
    return p


def _arrays(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    z = rng.normal(0, 1, n) + 2.0 * y - 1.0
    p_raw = 1 / (1 + np.exp(-1.7 * z))
    p = 1 / (1 + np.exp(-z))
    return y, p_raw, p


def _summary(name="<script>alert(1)</script>"):
    return {
        "source": "data.csv",
        "rows": 600,
        "positives": 180,
        "negatives": 420,
        "positive_label": "<b>yes</b>",
        "negative_label": "no & maybe",
        "columns": [
            {"name": name, "role": "numeric", "dtype": "float64", "missing": 3, "distinct": 500},
            {"name": "colour", "role": "categorical", "dtype": "str", "missing": 0, "distinct": 4},
        ],
        "dropped": [["id", "unique per row (an identifier)"]],
        "split_rows": {"train": 360, "valid": 120, "test": 120},
    }


def test_report_has_every_figure_table_and_is_self_contained():
    y, p_raw, p = _arrays()
    policy = choose_threshold(y, p, "f1", n_boot=50)
    history = [{"epoch": i + 1, "train_loss": 0.7 - 0.02 * i, "valid_loss": 0.7 - 0.01 * i} for i in range(10)]
    page = render_html(report_data(y=y, proba=p, proba_uncalibrated=p_raw, policy=policy, history=history,
                                   summary=_summary(), calibration={"method": "platt", "cv_log_loss": {"none": 0.5,
                                   "platt": 0.45}, "cv_folds": 5, "log_loss_before": 0.5, "log_loss_after": 0.45}))
    p_ = assert_complete(page)
    assert "dropped-columns" in p_.tables and "calibration-cv" in p_.tables


def test_user_strings_are_escaped():
    """A column named <script>, and labels with markup, appear as text, never as tags."""
    y, p_raw, p = _arrays()
    page = render_html(report_data(y=y, proba=p, summary=_summary(), notices=["column '<img src=x>' dropped"]))
    assert "<script>" not in page and "<img src=x>" not in page and "<b>yes</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;yes&lt;/b&gt;" in page and "no &amp; maybe" in page
    text = "".join(parse(page).text)
    assert "<script>alert(1)</script>" in text  # what the reader sees


def test_cost_objective_abstain_band_and_ensemble_history_render():
    """Cost objectives (analytic threshold, twin axis), abstain bands and per-member histories all draw."""
    y, p_raw, p = _arrays(seed=1)
    policy = choose_threshold(y, p, "cost:1,5", n_boot=30, abstain_precision=0.9)
    members = [[{"epoch": e + 1, "train_loss": 0.6 / (e + 1 + k), "valid_loss": 0.65 / (e + 1) + 0.01 * k}
                for e in range(5 + k)] for k in range(3)]
    data = report_data(y=y, proba=p, proba_uncalibrated=p_raw, policy=policy, history=members, summary=_summary())
    assert len(data["training"]["runs"]) == 3
    assert data["threshold_metrics"]["objective"]["name"] == "cost:1,5"
    page = render_html(data)
    assert_complete(page, tables=("metrics-table", "data-summary", "threshold-policy"))
    assert "c_fp / (c_fp + c_fn)" in page and "abstain band" in page


def test_missing_history_keeps_the_figure_with_a_note():
    y, _, p = _arrays()
    p_ = parse(render_html(report_data(y=y, proba=p, history=None)))
    assert p_.figures["training-curve"]["images"] == []
    assert all(p_.figures[f]["images"] for f in FIGURE_IDS if f != "training-curve")


def test_threshold_metrics_match_binary_metrics():
    """The metrics-against-threshold curves agree with binary_metrics at the grid thresholds."""
    from binclf.decide.metrics import binary_metrics

    y, _, p = _arrays(n=300, seed=3)
    tm = report_data(y=y, proba=p, n_boot=0)["threshold_metrics"]
    for i in np.linspace(0, len(tm["thresholds"]) - 1, 15).astype(int):
        m = binary_metrics(y, p, threshold=tm["thresholds"][i])
        assert tm["precision"][i] == pytest.approx(m["precision"])
        assert tm["recall"][i] == pytest.approx(m["recall"])
        assert tm["f1"][i] == pytest.approx(m["f1"])
        assert tm["balanced_accuracy"][i] == pytest.approx(m["balanced_accuracy"])


def _page_text(page: str) -> str:
    """The page with each embedded PNG cut to a marker (its pixels depend on matplotlib and fonts)."""
    import re

    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,PNG", page)


def test_page_is_unchanged_for_the_same_inputs(data_dir):
    """The HTML around the images is pinned: a refactor of report/ must not change the page.

    After an intended change, rewrite the file: BINCLF_UPDATE_GOLDEN=1 pytest tests/test_report.py
    """
    import os

    y, p_raw, p = _arrays()
    history = [{"epoch": i + 1, "train_loss": 0.7 - 0.02 * i, "valid_loss": 0.7 - 0.01 * i} for i in range(10)]
    data = report_data(
        y=y, proba=p, proba_uncalibrated=p_raw, proba_uncorrected=np.clip(p_raw * 1.2, 0, 1),
        policy=choose_threshold(y, p, "cost:1,5", n_boot=30, abstain_precision=0.9), history=history,
        summary=_summary(), notices=["a notice <with markup>"], valid_metrics={"roc_auc": 0.8, "log_loss": 0.4},
        calibration={"method": "platt", "reason": "lowest cross-validated log-loss", "cv_log_loss": {"none": 0.5,
                     "platt": 0.45}, "cv_folds": 5, "log_loss_before": 0.5, "log_loss_after": 0.45, "n": 120},
        n_boot=50,
    )
    data["generated"] = "(time)"
    page = _page_text(render_html(data))
    golden = data_dir / "report_page.html"
    if os.environ.get("BINCLF_UPDATE_GOLDEN"):
        golden.write_text(page, encoding="utf-8")
    assert page == golden.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """``binclf train`` (3 epochs) on a small table whose column names need escaping; the bundle dir."""
    tmp = tmp_path_factory.mktemp("report")
    df = pd.read_csv(data_dir / "biopsy.csv").rename(columns={"V1": "<script>"})
    table = tmp / "biopsy.csv"
    df.to_csv(table, index=False)
    out = tmp / "model"
    result = CliRunner().invoke(main, ["train", str(table), "--target", "class", "--out", str(out),
                                       "--max-epochs", "3", "--model", "logistic"])
    assert result.exit_code == 0, result.output
    return table, out


def test_train_writes_report_into_the_bundle(trained):
    _, out = trained
    page = (out / "report.html").read_text(encoding="utf-8")
    p = assert_complete(page)
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert p.figures["training-curve"]["images"]


def test_report_command_writes_the_file(trained, tmp_path):
    table, out = trained
    dest = tmp_path / "sub" / "r.html"
    result = CliRunner().invoke(main, ["report", str(out), str(table), "-o", str(dest)])
    assert result.exit_code == 0, result.output
    assert_complete(dest.read_text(encoding="utf-8"))
    # Replaced on a second run (a report is cheap to regenerate), and no temporary file is left.
    result = CliRunner().invoke(main, ["report", str(out), str(table), "-o", str(dest)])
    assert result.exit_code == 0
    assert [f.name for f in dest.parent.iterdir()] == ["r.html"]


def test_report_command_missing_bundle_is_one_line_exit_2(tmp_path, data_dir):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope"), str(data_dir / "biopsy.csv"),
                                       "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_report_command_unlabelled_data_is_one_line_exit_2(trained, tmp_path):
    table, out = trained
    unlabelled = tmp_path / "x.csv"
    pd.read_csv(table).drop(columns=["class"]).to_csv(unlabelled, index=False)
    result = CliRunner().invoke(main, ["report", str(out), str(unlabelled), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "target column 'class' is not in the data" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_on_rows_of_one_class_still_renders(trained, tmp_path):
    """ROC/PR are undefined on one class; the report says so in its numbers but keeps every figure."""
    table, out = trained
    one = tmp_path / "benign.csv"
    df = pd.read_csv(table)
    df[df["class"] == "benign"].head(40).to_csv(one, index=False)
    dest = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(out), str(one), "-o", str(dest)])
    assert result.exit_code == 0, result.output
    assert_complete(dest.read_text(encoding="utf-8"))

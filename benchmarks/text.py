"""Text tables: binclf's default against TF-IDF + LogisticRegressionCV and a bag-of-words MLP.

    python benchmarks/text.py [--data ../shared/data/rotten_tomatoes.csv] [--rows N]

Tables: rotten_tomatoes (critics' snippets, target ``verdict``) and a generated
mixed table (a review beside a number and a category, all three carrying
signal). Each table is split 80/20 (stratified, seed 0); every model trains on
the 80% and is scored on the 20%: ROC-AUC, log-loss, ECE (15 equal-width bins)
and wall-clock seconds (fit + predict). Prints one table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "rotten_tomatoes.csv"


def mixed_table(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, str, str, list[str]]:
    """A review (sentiment words + filler), a number and a category; the label depends on all three."""
    rng = np.random.default_rng(seed)
    good = "great wonderful superb moving delightful charming sharp clever".split()
    bad = "dull boring awful tedious clumsy bland messy weak".split()
    filler = ("the a film movie plot actor story scene director camera music ending it was and "
              "of with script cast").split()
    tone = rng.normal(size=n)  # the text's signal
    age = rng.normal(40, 12, n)
    plan = rng.choice(["basic", "plus", "pro", "team"], n)
    plan_effect = pd.Series(plan).map({"basic": -0.8, "plus": 0.0, "pro": 0.6, "team": 1.0}).to_numpy()
    logit = 1.2 * tone + 0.06 * (age - 40) + plan_effect
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    texts = []
    for t in tone:
        k = rng.integers(8, 20)
        p_good = 1 / (1 + np.exp(-1.5 * t))
        n_sent = rng.binomial(k, 0.3)
        words = list(rng.choice(filler, k - n_sent))
        words += [rng.choice(good) if rng.random() < p_good else rng.choice(bad) for _ in range(n_sent)]
        rng.shuffle(words)
        texts.append(" ".join(words))
    df = pd.DataFrame({"review": texts, "age": age.round(1), "plan": plan, "label": np.where(y, "yes", "no")})
    return df, "label", "yes", ["review"]


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(y[idx == b].mean() - p[idx == b].mean()) * (idx == b).mean() for b in range(bins) if (idx == b).any()))


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    return {"roc_auc": roc_auc_score(y, p), "log_loss": log_loss(y, p), "ece": _ece(y, p)}


def _tabular_sklearn(train: pd.DataFrame, text: list[str], target: str):
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    others = [c for c in train.columns if c != target and c not in text]
    num = [c for c in others if pd.api.types.is_numeric_dtype(train[c])]
    cat = [c for c in others if c not in num]
    parts = [(f"tfidf_{c}", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2), c) for c in text]
    if num:
        parts.append(("num", make_pipeline(SimpleImputer(), StandardScaler()), num))
    if cat:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore"), cat))
    return ColumnTransformer(parts)


def run_lrcv(train, test, target, positive, text):
    """scikit-learn's usual baseline: TF-IDF word 1-2-grams (+ scaled numbers, one-hot categories), LogisticRegressionCV."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(_tabular_sklearn(train, text, target),
                          LogisticRegressionCV(Cs=10, scoring="neg_log_loss", max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train.drop(columns=[target]), (train[target] == positive).to_numpy())
    return model.predict_proba(test.drop(columns=[target]))[:, 1]


def run_bow_mlp(train, test, target, positive, text, *, epochs: int = 8, seed: int = 0):
    """The textbook PyTorch bag-of-words MLP: TF-IDF -> 64 ReLU (dropout 0.5) -> 1 logit, Adam, best epoch on 10%."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    ct = _tabular_sklearn(train, text, target)
    X = ct.fit_transform(train.drop(columns=[target])).tocsr().astype(np.float32)
    Xt = ct.transform(test.drop(columns=[target])).tocsr().astype(np.float32)
    y = (train[target] == positive).to_numpy().astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    hold, fit = order[: len(y) // 10], order[len(y) // 10:]

    def tensor(A):
        A = A.tocoo()
        return torch.sparse_coo_tensor(np.vstack([A.row, A.col]), A.data, A.shape).coalesce()

    net = nn.Sequential(nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    Xh, yh = tensor(X[hold]), torch.from_numpy(y[hold])
    best, best_state = np.inf, None
    for _ in range(epochs):
        net.train()
        for start in range(0, len(fit), 64):
            rows = fit[start:start + 64]
            opt.zero_grad()
            loss = loss_fn(net(tensor(X[rows])).squeeze(-1), torch.from_numpy(y[rows]))
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            h = float(loss_fn(net(Xh).squeeze(-1), yh))
        if h < best:
            best, best_state = h, {k: v.clone() for k, v in net.state_dict().items()}
        fit = fit[rng.permutation(len(fit))]
    net.load_state_dict(best_state)
    with torch.no_grad():
        return torch.sigmoid(net(tensor(Xt)).squeeze(-1)).numpy().astype(np.float64)


def run_binclf(train, test, target, positive, text, **opts):
    from binclf.train.pipeline import TrainOptions, train_table

    res = train_table(train, TrainOptions(target=target, positive=positive, n_boot=50, **opts))
    return res.predictor.predict_proba(test.drop(columns=[target]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rows", type=int, default=None, help="subsample rotten_tomatoes to this many rows")
    ap.add_argument("--models", default="", help="only the models whose name contains one of these (comma-separated)")
    args = ap.parse_args()
    only = [m for m in args.models.split(",") if m]
    from sklearn.model_selection import train_test_split

    tables = []
    if args.data.exists():
        rt = pd.read_csv(args.data)
        if args.rows:
            rt = rt.sample(args.rows, random_state=0)
        tables.append(("rotten_tomatoes", rt, "verdict", "fresh", ["snippet"]))
    else:
        tables.append(("reviews (tests/data)", pd.read_csv(ROOT / "tests" / "data" / "reviews.csv"), "verdict", "fresh", ["snippet"]))
    mixed, target, positive, text = mixed_table()
    tables.append(("mixed (generated)", mixed, target, positive, text))

    rows = []
    for name, df, target, positive, text in tables:
        y = (df[target] == positive).to_numpy()
        tr, te = train_test_split(np.arange(len(df)), test_size=0.2, stratify=y, random_state=0)
        train, test = df.iloc[tr].reset_index(drop=True), df.iloc[te].reset_index(drop=True)
        y_test = (test[target] == positive).to_numpy().astype(float)
        runs = [
            ("binclf default", lambda: run_binclf(train, test, target, positive, text)),
            ("TF-IDF + LogisticRegressionCV", lambda: run_lrcv(train, test, target, positive, text)),
            ("bag-of-words MLP (PyTorch)", lambda: run_bow_mlp(train, test, target, positive, text)),
        ]
        if len(df.columns) > 2:  # mixed: the text alone and the other columns alone
            runs += [
                ("binclf, text only", lambda: run_binclf(train[text + [target]], test[text + [target]], target, positive, text)),
                ("binclf, columns only", lambda: run_binclf(train.drop(columns=text), test.drop(columns=text), target, positive, [])),
            ]
        for model, fn in runs:
            if only and not any(o in model for o in only):
                continue
            t0 = time.perf_counter()
            p = fn()
            sec = time.perf_counter() - t0
            rows.append({"table": name, "rows": len(df), "model": model, **_scores(y_test, p), "seconds": sec})
            print(f"  {name}: {model} done in {sec:.1f} s", flush=True)
    out = pd.DataFrame(rows)
    print()
    print(out.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()

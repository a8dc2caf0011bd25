"""Quality benchmark: binclf's default model against the usual anchors, same splits.

    PYTHONPATH=src python benchmarks/quality.py                     # every table, 3 seeds
    PYTHONPATH=src python benchmarks/quality.py --data t.csv --target y
    PYTHONPATH=src python benchmarks/quality.py --tables oj,bananas --models binclf,catboost
    PYTHONPATH=src python benchmarks/quality.py --set folds=3 --set hidden=256,128   # a variant
    PYTHONPATH=src python benchmarks/quality.py --tables gen_wide_onehot,gen_wide_numeric --seeds 1   # time budget

Every model sees the same stratified 60/20/20 split per seed (binclf's own
``stratified_split``). The anchors train on the 60% and early-stop (or tune C)
on the 20% validation part; binclf runs ``train_table`` exactly as
``binclf train`` does, given the same train / validation / test rows (its
default model cross-fits over train + validation, as it would on a file).
Nothing sees the test 20% except the scoring. Tables: the development tables
in tests/data plus generated ones (an imbalanced mixed table, a small
near-linear table, a categorical table with missing values, a 25k-row table
for the time budget), so that the defaults are not tuned to six tables.

Prints per-table and mean ROC-AUC, log-loss, Brier, ECE (with the ECE a perfectly
calibrated model would show on the same test rows) and seconds per fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

REAL = {
    "oj": ("oj.csv", "Purchase"),
    "smarket": ("smarket.csv", "Direction"),
    "participation": ("participation.csv", "lfp"),
    "biopsy": ("biopsy.csv", "class"),
    "titanic": ("titanic.csv", "survived"),
    "bananas": ("bananas.csv", "label"),
}
MODELS = ("binclf", "mlp", "logistic", "lightgbm", "catboost")
METRICS = ("roc_auc", "log_loss", "brier", "ece")
THREADS = 2


# ----------------------------------------------------------------------------- generated tables


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _intercept_for(z: np.ndarray, rate: float) -> float:
    """The intercept giving a mean probability of ``rate`` (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(z + mid).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def gen_imbalanced(seed: int = 101) -> pd.DataFrame:
    """10k rows, ~3% positives, skewed numbers, three categorical columns, missing cells."""
    rng = np.random.default_rng(seed)
    n = 10_000
    x = rng.normal(size=(n, 6))
    amount = rng.lognormal(3, 1.2, n)
    tenure = rng.gamma(2, 12, n)
    region = rng.choice([f"r{i}" for i in range(6)], n, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    product = rng.choice([f"p{i:02d}" for i in range(20)], n)
    channel = rng.choice(["web", "store", "phone"], n, p=[0.6, 0.3, 0.1])
    reg_eff = dict(zip([f"r{i}" for i in range(6)], rng.normal(0, 0.6, 6)))
    prod_eff = dict(zip([f"p{i:02d}" for i in range(20)], rng.normal(0, 0.5, 20)))
    z = (
        1.0 * x[:, 0]
        - 0.8 * x[:, 1]
        + 0.7 * x[:, 2] * x[:, 3]
        + 0.9 * np.tanh(2 * x[:, 4])
        + 0.6 * (np.log(amount) - 3)
        - 0.03 * tenure
        + np.vectorize(reg_eff.get)(region)
        + np.vectorize(prod_eff.get)(product)
        + 0.8 * (channel == "phone")
    )
    y = rng.random(n) < _sigmoid(z + _intercept_for(z, 0.03))
    df = pd.DataFrame({f"x{i}": x[:, i] for i in range(6)})
    df["amount"] = amount.round(2)
    df["tenure"] = tenure.round(1)
    df["region"], df["product"], df["channel"] = region, product, channel
    df.loc[rng.random(n) < 0.1, "amount"] = np.nan
    df.loc[rng.random(n) < 0.05, "region"] = None
    df["fraud"] = np.where(y, "yes", "no")
    return df


def gen_linear_small(seed: int = 102) -> pd.DataFrame:
    """600 rows, 12 numeric columns (4 pure noise), a linear log-odds, ~35% positives."""
    rng = np.random.default_rng(seed)
    n, d = 600, 12
    cov = 0.3 * np.ones((d, d)) + 0.7 * np.eye(d)
    x = rng.multivariate_normal(np.zeros(d), cov, n)
    w = np.r_[rng.normal(0, 0.8, 8), np.zeros(4)]
    z = x @ w
    y = rng.random(n) < _sigmoid(z + _intercept_for(z, 0.35))
    df = pd.DataFrame(x.round(4), columns=[f"f{i}" for i in range(d)])
    df["outcome"] = y.astype(int)
    return df


def gen_categorical(seed: int = 103) -> pd.DataFrame:
    """3000 rows, ten categorical columns (3 to 40 levels), three numbers, 15% missing cells."""
    rng = np.random.default_rng(seed)
    n = 3000
    df = pd.DataFrame()
    z = np.zeros(n)
    for j, k in enumerate([3, 4, 5, 6, 8, 10, 12, 20, 30, 40]):
        levels = np.array([f"c{j}_{i}" for i in range(k)])
        p = rng.dirichlet(np.ones(k))
        col = rng.choice(levels, n, p=p)
        eff = dict(zip(levels, rng.normal(0, 0.5 if j < 6 else 0.3, k)))
        z += np.vectorize(eff.get)(col)
        col = col.astype(object)
        col[rng.random(n) < 0.15] = None
        df[f"cat{j}"] = col
    u = rng.normal(size=(n, 3))
    z += 0.8 * u[:, 0] + 0.5 * np.abs(u[:, 1]) - 0.4 * u[:, 2] * (df["cat0"] == "c0_0")
    missing = rng.random(n) < 0.15
    z += 0.7 * missing  # informative missingness in num0
    u[missing, 0] = np.nan
    for i in range(3):
        df[f"num{i}"] = u[:, i].round(3)
    y = rng.random(n) < _sigmoid(z + _intercept_for(z, 0.25))
    df["churn"] = np.where(y, "churned", "stayed")
    return df


def gen_large(seed: int = 104) -> pd.DataFrame:
    """25k rows, 20 numbers and 5 categorical columns, a smooth non-linear log-odds, ~20% positives."""
    rng = np.random.default_rng(seed)
    n = 25_000
    x = rng.normal(size=(n, 20))
    x[:, 10:15] = np.exp(x[:, 10:15])  # skewed
    cats = {f"g{j}": rng.choice([f"v{i}" for i in range(k)], n) for j, k in enumerate([3, 5, 8, 12, 25])}
    z = x[:, :6] @ rng.normal(0, 0.6, 6) + 0.5 * np.sin(2 * x[:, 6]) + 0.4 * x[:, 7] * x[:, 8]
    z += 0.3 * np.log(x[:, 10]) - 0.2 * (x[:, 11] > 2)
    for j, (name, col) in enumerate(cats.items()):
        eff = dict(zip(np.unique(col), rng.normal(0, 0.4, len(np.unique(col)))))
        z += np.vectorize(eff.get)(col)
    y = rng.random(n) < _sigmoid(z + _intercept_for(z, 0.2))
    df = pd.DataFrame(x.round(4), columns=[f"x{i}" for i in range(20)])
    for name, col in cats.items():
        df[name] = col
    df.loc[rng.random(n) < 0.05, "x3"] = np.nan
    df["target"] = y.astype(int)
    return df


def gen_wide_onehot(seed: int = 105) -> pd.DataFrame:
    """22,272 rows, 40 numbers and 45 text columns of 10 to 150 levels (~3,200 inputs): the time budget."""
    rng = np.random.default_rng(seed)
    n = 22_272
    df = pd.DataFrame(rng.normal(size=(n, 40)).round(4), columns=[f"x{i}" for i in range(40)])
    z = df.to_numpy()[:, :5] @ rng.normal(0, 0.5, 5)
    for j in range(45):
        k = int(rng.integers(10, 150))
        col = rng.integers(0, k, n)
        if j < 10:
            z += rng.normal(0, 0.3, k)[col]
        df[f"c{j}"] = np.array([f"v{i}" for i in range(k)])[col]
    df.loc[rng.random(n) < 0.1, "x3"] = np.nan
    df["y"] = (rng.random(n) < _sigmoid(z + _intercept_for(z, 0.2))).astype(int)
    return df


def gen_wide_numeric(seed: int = 106) -> pd.DataFrame:
    """22,272 rows, 80 numbers (10 informative, one step, one curve) and 5 text columns."""
    rng = np.random.default_rng(seed)
    n, d = 22_272, 80
    x = rng.normal(size=(n, d))
    z = x[:, :10] @ rng.normal(0, 0.5, 10) + np.sin(2 * x[:, 10]) + (x[:, 11] > 1)
    df = pd.DataFrame(x.round(4), columns=[f"x{i}" for i in range(d)])
    for j in range(5):
        df[f"s{j}"] = rng.choice([f"v{i}" for i in range(10 + 10 * j)], n)
    df["y"] = (rng.random(n) < _sigmoid(z + _intercept_for(z, 0.15))).astype(int)
    return df


GENERATED = {
    "gen_imbalanced": (gen_imbalanced, "fraud"),
    "gen_linear600": (gen_linear_small, "outcome"),
    "gen_categorical": (gen_categorical, "churn"),
    "gen_large25k": (gen_large, "target"),
}
# Wide tables for the time budget, only with --tables (not in the default set).
EXTRA = {
    "gen_wide_onehot": (gen_wide_onehot, "y"),
    "gen_wide_numeric": (gen_wide_numeric, "y"),
}


def load_tables(names: list[str] | None) -> dict[str, tuple[pd.DataFrame, str]]:
    from binclf.io.tables import read_table

    out = {}
    for name, (file, target) in REAL.items():
        if names is None or name in names:
            out[name] = (read_table(DATA / file), target)
    for name, (make, target) in GENERATED.items():
        if names is None or name in names:
            out[name] = (make(), target)
    for name, (make, target) in EXTRA.items():
        if names is not None and name in names:
            out[name] = (make(), target)
    unknown = set(names or ()) - set(out)
    if unknown:
        raise SystemExit(f"unknown table(s) {sorted(unknown)}; choose from {[*REAL, *GENERATED, *EXTRA]}")
    return out


# ----------------------------------------------------------------------------- the models


def _features(df: pd.DataFrame, target: str):
    from binclf.data.schema import infer_schema

    schema, _ = infer_schema(df, target=target)
    return list(schema.numeric), list(schema.categorical)


def run_binclf(parts, target, *, model: str, overrides: dict, seed: int):
    from binclf.train.pipeline import TrainOptions, train_table

    (tr, _), (va, _), (te, _) = parts
    fields = {"target": target, "seed": seed, **overrides}
    if model != "binclf":
        fields["model"] = model
    opts = TrainOptions(**fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_table(tr, opts, valid_df=va, test_df=te)
    y, p = res.curves["y_test"], res.curves["p_test"]
    return y, p, res


def _sk_preprocess(num, cat):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), num),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="<missing>"),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=5),
                ),
                cat,
            ),
        ]
    )


def _as_frame(df, num, cat):
    out = pd.DataFrame(index=df.index)
    for c in num:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in cat:
        out[c] = df[c].astype(object).where(df[c].notna(), None)
        out[c] = out[c].map(lambda v: v if v is None else str(v)).astype(object)
    return out


def run_logistic(parts, num, cat, seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    (Xtr, ytr), (Xva, yva), (Xte, _) = [(_as_frame(d, num, cat), y) for d, y in parts]
    pre = _sk_preprocess(num, cat).fit(Xtr)
    A, B, C = pre.transform(Xtr), pre.transform(Xva), pre.transform(Xte)
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):  # C tuned lightly on validation
        m = LogisticRegression(C=c, max_iter=2000).fit(A, ytr)
        loss = log_loss(yva, m.predict_proba(B)[:, 1], labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, m)
    return best[1].predict_proba(C)[:, 1]


def run_lightgbm(parts, num, cat, seed):
    import lightgbm as lgb

    frames = []
    for d, _ in parts:
        f = _as_frame(d, num, cat)
        frames.append(f)
    for c in cat:
        levels = sorted(set(frames[0][c].dropna()))
        for f in frames:
            f[c] = pd.Categorical(f[c], categories=levels)
    (ytr, yva) = parts[0][1], parts[1][1]
    m = lgb.LGBMClassifier(n_estimators=2000, learning_rate=0.05, random_state=seed, n_jobs=THREADS, verbose=-1)
    m.fit(frames[0], ytr, eval_set=[(frames[1], yva)], callbacks=[lgb.early_stopping(50, verbose=False)])
    return m.predict_proba(frames[2])[:, 1]


def run_catboost(parts, num, cat, seed):
    from catboost import CatBoostClassifier

    frames = []
    for d, _ in parts:
        f = _as_frame(d, num, cat)
        for c in cat:
            f[c] = f[c].fillna("<missing>").astype(str)
        frames.append(f)
    m = CatBoostClassifier(
        iterations=2000, random_seed=seed, thread_count=THREADS, verbose=False, cat_features=cat or None,
        early_stopping_rounds=50, allow_writing_files=False,
    )
    m.fit(frames[0], parts[0][1], eval_set=(frames[1], parts[1][1]), use_best_model=True)
    return m.predict_proba(frames[2])[:, 1]


# ----------------------------------------------------------------------------- the run


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = tuple(json.loads(p) for p in value.split(",")) if "," in value else value
        out[key] = tuple(v) if isinstance(v, list) else v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a CSV or Parquet table instead of the built-in ones")
    ap.add_argument("--target", help="the target column of --data")
    ap.add_argument("--tables", help="comma-separated subset of the built-in tables")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainOptions field for the binclf default (experiments)")
    ap.add_argument("--json", help="also write every score to this JSON file")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch, LightGBM and CatBoost (default: torch's default); "
                         "1 gives steadier timings on a shared machine")
    args = ap.parse_args(argv)
    global THREADS
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        THREADS = args.threads

    from binclf.data.target import encode_target

    from binclf.data.split import stratified_split

    if args.data:
        if not args.target:
            ap.error("--data needs --target")
        from binclf.io.tables import read_table

        tables = {Path(args.data).stem: (read_table(args.data), args.target)}
    else:
        tables = load_tables(args.tables.split(",") if args.tables else None)
    models = args.models.split(",")
    overrides = _parse_overrides(args.set)
    rows = []
    for tname, (df, target) in tables.items():
        y_all, keep, _, _ = encode_target(df[target], column=target)
        df = df.loc[keep].reset_index(drop=True)
        num, cat = _features(df, target)
        for seed in range(args.seeds):
            idx = stratified_split(y_all, fractions=(0.6, 0.2, 0.2), seed=seed)
            parts = [(df.iloc[i].reset_index(drop=True), y_all[i].astype(int)) for i in idx]
            for model in models:
                t0 = time.perf_counter()
                if model in ("binclf", "mlp"):
                    y, p, _ = run_binclf(parts, target, model=model, overrides=overrides if model == "binclf" else {},
                                         seed=seed)
                else:
                    fn = {"logistic": run_logistic, "lightgbm": run_lightgbm, "catboost": run_catboost}[model]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        p = fn(parts, num, cat, seed)
                    y = parts[2][1]
                seconds = time.perf_counter() - t0
                rows.append({"table": tname, "seed": seed, "model": model, "seconds": seconds, **_scores(y, p)})
                print(f"  {tname:16s} seed {seed} {model:9s} log-loss {rows[-1]['log_loss']:.4f} "
                      f"auc {rows[-1]['roc_auc']:.4f} ece {rows[-1]['ece']:.4f} {seconds:6.2f}s",
                      file=sys.stderr, flush=True)
    res = pd.DataFrame(rows)
    if args.json:
        Path(args.json).write_text(res.to_json(orient="records", indent=1))
    _print(res, models)
    return 0


def _scores(y, p) -> dict:
    from binclf.decide.metrics import binary_metrics, expected_calibration_error

    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    m = binary_metrics(np.asarray(y, float), p)
    out = {k: m[k] for k in METRICS}
    # The ECE a perfectly calibrated model would show on these test rows: labels
    # drawn from p itself. A 15-bin ECE on a few hundred rows is mostly noise;
    # this is its floor, for reading the ECE column.
    rng = np.random.default_rng(0)
    out["ece_floor"] = float(np.mean([
        expected_calibration_error(rng.random(len(p)) < p, p, n_bins=15, strategy="uniform") for _ in range(100)
    ]))
    return out


def _print(res: pd.DataFrame, models: list[str]) -> None:
    per = res.groupby(["table", "model"], sort=False).agg(
        {**{k: "mean" for k in (*METRICS, "ece_floor")}, "seconds": "median"}
    )
    tables = list(dict.fromkeys(res["table"]))
    print()
    print("| table | model | log-loss | ROC-AUC | Brier | ECE | ECE floor | s/fit |")
    print("|---|---|---|---|---|---|---|---|")
    for t in tables:
        best = per.loc[t]["log_loss"].min()
        for m in models:
            r = per.loc[(t, m)]
            mark = " *" if r["log_loss"] == best else ""
            print(f"| {t} | {m} | {r['log_loss']:.4f}{mark} | {r['roc_auc']:.4f} | {r['brier']:.4f} | "
                  f"{r['ece']:.4f} | {r['ece_floor']:.4f} | {r['seconds']:.2f} |")
    print()
    print("Mean over tables (seconds: median per fit); 'ratio' = mean of log-loss / per-table best anchor-or-binclf;")
    print("'worst' = the largest such ratio; 'ECE floor' = the mean ECE of a perfectly calibrated model on the same")
    print("test rows (labels drawn from its own probabilities): test-split noise, not miscalibration:")
    print("| model | log-loss | ROC-AUC | Brier | ECE | ECE floor | s/fit | ratio | worst |")
    print("|---|---|---|---|---|---|---|---|---|")
    table_means = per.reset_index()
    best = table_means.groupby("table")["log_loss"].min()
    for m in models:
        r = table_means[table_means["model"] == m].set_index("table")
        ratio = r["log_loss"] / best.loc[r.index]
        print(f"| {m} | {r['log_loss'].mean():.4f} | {r['roc_auc'].mean():.4f} | {r['brier'].mean():.4f} | "
              f"{r['ece'].mean():.4f} | {r['ece_floor'].mean():.4f} | {r['seconds'].median():.2f} | "
              f"{ratio.mean():.4f} | {ratio.max():.4f} |")


if __name__ == "__main__":
    sys.exit(main())

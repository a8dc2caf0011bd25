"""binclf.infer.MemberPlan and Predictor's member_logits: the members evaluated together equal each member's own forward."""

import numpy as np
import pytest
import torch

from binclf.infer import MemberPlan
from binclf.nn.models import build_model, model_config
from binclf.predictor import Member, member_logits
from binclf.runtime import torch_threads

D, N_NUMERIC = 7, 5


def _trained_like(name: str, seed: int) -> torch.nn.Module:
    """A model with random weights, BatchNorm statistics and PLE edges (as if trained)."""
    config = model_config(name, n_features=D, hidden=(16, 8), n_numeric=N_NUMERIC, bins=6)
    m = build_model(name, seed=seed, **config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    if name == "ple_mlp":
        m.fit_encoding(torch.randn(500, D, generator=g) * (seed + 1))
    return m.eval()


def _reference(members: list[Member], X: np.ndarray) -> np.ndarray:
    """The plain path: each member's forward, one after another, averaged as probabilities."""
    x = torch.from_numpy(X)
    with torch.no_grad():
        z = [m.module(x).double().numpy() - m.logit_shift for m in members]
    if len(members) == 1:
        return z[0]
    p = sum(m.weight / (1 + np.exp(-zi)) for m, zi in zip(members, z))
    return np.log(p) - np.log1p(-p)


KINDS = {
    "logistic": ["logistic"],
    "mlp": ["mlp"],
    "ple_mlp": ["ple_mlp"],
    "tabm": ["tabm"],
    "default ensemble": ["ple_mlp"] * 5 + ["logistic"] * 5,
    "mixed": ["mlp", "ple_mlp", "tabm", "logistic", "ple_mlp", "logistic"],
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("n", [1, 3, 1000, 9000])
def test_members_together_equal_each_members_forward(kind, n):
    names = KINDS[kind]
    w = np.random.default_rng(0).random(len(names))
    members = [
        Member(name, {}, _trained_like(name, seed=i), float(wi / w.sum()), 0.3 * i)
        for i, (name, wi) in enumerate(zip(names, w))
    ]
    X = (np.random.default_rng(n).normal(size=(n, D)) * 2).astype(np.float32)
    want = _reference(members, X)
    got = member_logits(members, X)
    assert got.shape == (n,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    plan = MemberPlan([m.module for m in members])
    np.testing.assert_allclose(member_logits(members, X, plan=plan), got, rtol=0, atol=1e-12)


def test_many_chunks_shared_out_to_threads_give_the_one_thread_numbers_exactly(monkeypatch):
    """Chunks are independent: evaluated by two threads they are the same bits; one torch thread keeps one."""
    from binclf import infer

    names = KINDS["mixed"]
    plan = MemberPlan([_trained_like(name, seed=i) for i, name in enumerate(names)])
    X = torch.from_numpy((np.random.default_rng(5).normal(size=(9000, D)) * 2).astype(np.float32))
    counts = []
    real = infer._eval_workers
    monkeypatch.setattr(infer, "_eval_workers", lambda n, ceiling: counts.append(real(n, ceiling)) or counts[-1])
    monkeypatch.setattr(infer, "usable_cores", lambda: 2)
    with torch_threads(1):
        one = plan(X, chunk_rows=1000)
    with torch_threads(2):
        two = plan(X, chunk_rows=1000)
    if torch.get_num_threads() >= 2:
        assert counts == [1, 2]  # 9 chunks: shared out only where the caller allows two threads
    assert torch.equal(one, two)
    assert torch.get_num_threads() >= 1 and infer._eval_workers(3, 8) == 1  # a few chunks: no threads


def test_a_plan_notices_changed_weights_and_training_mode():
    members = [Member("mlp", {}, _trained_like("mlp", 0), 0.5), Member("logistic", {}, _trained_like("logistic", 1), 0.5)]
    modules = [m.module for m in members]
    plan = MemberPlan(modules)
    assert plan.current(modules)
    with torch.no_grad():
        modules[0].output.bias.add_(1.0)
    assert not plan.current(modules)
    X = np.random.default_rng(0).normal(size=(5, D)).astype(np.float32)
    # A stale plan is rebuilt rather than used.
    np.testing.assert_allclose(member_logits(members, X, plan=plan), _reference(members, X), rtol=1e-5, atol=1e-5)
    plan = MemberPlan(modules)
    modules[1].train()
    assert not plan.current(modules)
    assert not plan.current(modules[::-1])


def test_predictor_keeps_one_plan_and_rebuilds_it_when_a_member_changes():
    from pathlib import Path

    from binclf import Predictor, read_table

    root = Path(__file__).parent
    pred = Predictor.load(root / "fixtures" / "bundle-v1-biopsy-auto")
    df = read_table(root / "data" / "biopsy.csv")
    first = pred.predict_proba(df.iloc[:10])
    plan = pred._plan
    assert plan is not None
    pred.predict_proba(df.iloc[:1])
    assert pred._plan is plan
    with torch.no_grad():
        pred.members[0].module.output.bias.add_(5.0)
    changed = pred.predict_proba(df.iloc[:10])
    assert pred._plan is not plan and not np.allclose(changed, first)


# --------------------------------------------------------------------------- #
# PLE-MLP first layer from per-bin tables (binclf.infer._PLETables)
# --------------------------------------------------------------------------- #


def _edge_inputs(m: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    """Rows of random values, values beyond the outermost bins, exactly on each edge and on each bin's end,
    and NaN: every numeric column of ``m`` gets each of them."""
    g = np.random.default_rng(seed)
    lo, inv = m.lo.double().numpy(), m.inv_width.double().numpy()
    rows = [g.normal(size=(300, D)) * 2, np.full((1, D), -1e6), np.full((1, D), 1e6), np.zeros((1, D))]
    for s in range(m.bins):
        on_edge = g.normal(size=(1, D))
        end = g.normal(size=(1, D))
        finite = np.isfinite(lo[:, s])
        on_edge[0, : N_NUMERIC][finite] = lo[finite, s]
        end[0, : N_NUMERIC][finite] = (lo[:, s] + 1 / inv[:, s])[finite]  # where the bin ends
        rows += [on_edge, end]
    X = np.concatenate(rows).astype(np.float32)
    X[5, 2] = np.nan
    X[7, 0] = np.nan
    return torch.from_numpy(X)


@pytest.mark.parametrize("search", ["comparison passes", "binary search"])
@pytest.mark.parametrize("fitted", ["quantile edges", "few distinct values", "default edges"])
def test_ple_tables_equal_the_forward_on_random_and_edge_inputs(fitted, search, monkeypatch):
    """The table path equals PLEMLP.forward to 1e-6 in probability on random values, values beyond the outermost
    bins, exactly on bin edges and bin ends, with unused (+inf) bins, and gives NaN where the forward does; with
    the bins found either way (a comparison pass per edge for large chunks, torch.searchsorted for few rows)."""
    import binclf.infer
    from binclf.infer import _PLETables

    monkeypatch.setattr(binclf.infer, "_SEARCH_VALUES", 0 if search == "comparison passes" else 10**9)

    m = _trained_like("ple_mlp", seed=3)
    if fitted == "few distinct values":  # ties merge: columns 0, 1, 2 use 2, 1 and none of their 6 bins
        x = torch.randn(400, D)
        x[:, 0] = torch.randint(0, 3, (400,)).float()
        x[:, 1] = torch.randint(0, 2, (400,)).float()
        x[:, 2] = 0.5
        m.fit_encoding(x)
        assert torch.isinf(m.lo[0]).sum() == 4 and torch.isinf(m.lo[2]).all()
    elif fitted == "default edges":
        m = build_model("ple_mlp", seed=3, **model_config("ple_mlp", n_features=D, hidden=(16, 8), n_numeric=N_NUMERIC,
                                                          bins=6)).eval()
    plan = MemberPlan([m])
    assert isinstance(plan.parts[0][1], _PLETables)
    X = _edge_inputs(m)
    with torch.no_grad():
        want = m(X)
    got = plan(X)[:, 0]
    nan = torch.isnan(want)
    assert nan.sum() == 2 and torch.equal(torch.isnan(got), nan)
    torch.testing.assert_close(got[~nan], want[~nan], rtol=1e-5, atol=2e-5)  # +-1e6 inputs: logits ~1e5
    assert (torch.sigmoid(got[~nan]) - torch.sigmoid(want[~nan])).abs().max() < 1e-6


@pytest.mark.parametrize("edges", ["own", "shared"])
def test_a_row_alone_gets_the_logit_it_gets_in_a_large_batch(edges):
    """One row at a time (the PLE-MLPs stacked: bins by binary search, batched products) and 4,096-row chunks (each
    member: a comparison pass per edge, oneDNN's fused kernel where it works) give each row the same logit to float
    rounding, NaN rows included."""
    from binclf.infer import _SEARCH_VALUES

    members = [Member("ple_mlp", {}, _trained_like("ple_mlp", seed=i), 0.5, 0.0) for i in range(2)]
    members.append(Member("mlp", {}, _trained_like("mlp", seed=5), 0.5, 0.0))
    if edges == "shared":  # a cross-fitted bag: one search for both when stacked
        members[1].module.lo.copy_(members[0].module.lo)
        members[1].module.inv_width.copy_(members[0].module.inv_width)
    X = _edge_inputs(members[0].module)
    X = torch.cat([X] * (4096 // len(X) + 1))[:4096]
    assert len(X) * N_NUMERIC > _SEARCH_VALUES
    plan = MemberPlan([m.module for m in members])
    stack = plan.few_parts[-1][1]  # the two PLE-MLPs stack
    assert plan.few_rows >= 1 and (stack.shared is not None) == (edges == "shared")
    batch = plan(X)
    alone = torch.cat([plan(X[i : i + 1]) for i in range(0, 4096, 7)])
    torch.testing.assert_close(alone, batch[::7], rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.isnan(batch[:, 0]).sum() > 0


def test_ple_bins_that_do_not_chain_take_the_encoding_path():
    """Edges that overlap (a bin ending past the next one's start) are not tables' business: the plan encodes, and
    still equals the forward."""
    from binclf.infer import _Folded, _PLETables

    m = _trained_like("ple_mlp", seed=4)
    with torch.no_grad():
        m.inv_width[1, 2] *= 0.5  # bin 2 of column 1 now ends well inside bin 3
    assert not _PLETables.applies(m)
    plan = MemberPlan([m])
    assert isinstance(plan.parts[0][1], _Folded)
    X = _edge_inputs(m)[:300]
    with torch.no_grad():
        torch.testing.assert_close(plan(X)[:, 0], m(X), rtol=1e-5, atol=2e-5, equal_nan=True)


@pytest.mark.parametrize("name", ["logistic", "mlp", "ple_mlp", "tabm"])
def test_each_kind_equals_its_forward_on_edge_inputs(name):
    """Every member kind, alone and in an ensemble, equals its forward on the edge inputs (NaN where it is NaN)."""
    members = [Member(name, {}, _trained_like(name, seed=i), 1.0 / 3, 0.1 * i) for i in range(3)]
    X = _edge_inputs(_trained_like("ple_mlp", seed=0)).numpy()
    want = _reference(members, X)
    got = member_logits(members, X)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    # The +-1e6 rows saturate: the average of probabilities 1.0 is logit 27.6 (clipped) or inf, so logits
    # are compared where they are moderate, probabilities everywhere.
    ok = ~np.isnan(want)
    moderate = ok & (np.abs(want) < 20)
    np.testing.assert_allclose(got[moderate], want[moderate], rtol=1e-5, atol=1e-5)
    with np.errstate(over="ignore"):
        assert np.abs(1 / (1 + np.exp(-got[ok])) - 1 / (1 + np.exp(-want[ok]))).max() < 1e-6


def test_predictor_with_unknown_categories_nan_and_extremes_equals_the_plain_path():
    """Through Predictor (preprocessing fills NaN, unknown categories, values far beyond training): the old
    bundles' probabilities equal each member's forward on the transformed rows, calibrated, to 1e-6."""
    from pathlib import Path

    from binclf import Predictor, read_table

    root = Path(__file__).parent
    for name, data in (("biopsy-auto", "biopsy.csv"), ("titanic-mlp", "titanic.csv"),
                       ("participation-logistic", "participation.csv")):
        pred = Predictor.load(root / "fixtures" / f"bundle-v1-{name}")
        df = read_table(root / "data" / data).iloc[:200].copy()
        for col in pred.schema.numeric:
            df[col] = df[col].astype("float64")
            df.loc[df.index[:5], col] = [np.nan, 1e9, -1e9, 0.0, np.nan]
        for col in pred.schema.categorical:
            df[col] = df[col].astype(object)
            df.loc[df.index[:3], col] = ["never seen", None, "also new"]
        X = pred.transform(df)
        want = pred.calibrator.predict_proba(_reference(pred.members, X))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = pred.predict_proba(df)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_ple_members_with_the_same_edges_share_their_bins_and_give_each_members_numbers():
    """A cross-fitted bag's PLE-MLPs (one set of edges) are one part that finds the bins once; a member with
    other edges stays on its own; every logit equals the member evaluated alone, bit for bit (in chunks too
    large to stack; stacked, a few rows at a time, to float rounding)."""
    from binclf.infer import _PLEGroup, _PLETables

    bag = [_trained_like("ple_mlp", seed=s) for s in (1, 2, 4)]
    for m in bag[1:]:
        m.lo.copy_(bag[0].lo)
        m.inv_width.copy_(bag[0].inv_width)
    other = _trained_like("ple_mlp", seed=5)
    modules = [bag[0], other, bag[1], build_model("logistic", seed=0, n_features=D).eval(), bag[2]]
    plan = MemberPlan(modules)
    kinds = {tuple(cols): type(part) for cols, part in plan.parts}
    assert kinds[(0, 2, 4)] is _PLEGroup and kinds[(1,)] is _PLETables
    X = _edge_inputs(bag[0])
    X = torch.cat([X] * (4096 // len(X) + 1))[:4096]
    assert len(X) > plan.few_rows
    got = plan(X)
    few = torch.cat([plan(X[lo : lo + 5]) for lo in range(0, 400, 5)])
    for i, m in enumerate(modules):
        alone = MemberPlan([m])(X)[:, 0]
        assert torch.equal(torch.isnan(got[:, i]), torch.isnan(alone))
        assert torch.equal(got[:, i].nan_to_num(), alone.nan_to_num())
        torch.testing.assert_close(few[:, i], alone[:400], rtol=1e-5, atol=1e-5, equal_nan=True)

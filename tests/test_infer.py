"""binclf.infer.MemberPlan and Predictor's member_logits: the members evaluated together equal each member's own forward."""

import numpy as np
import pytest
import torch

from binclf.infer import MemberPlan
from binclf.nn.models import build_model, model_config
from binclf.predictor import Member, member_logits

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

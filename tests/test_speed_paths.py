"""binclf.train.fused_step and friends: the fast CPU training paths compute the same things as the plain ones (no timings)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from binclf import runtime
from binclf.train.adamw import FastAdamWStep, FusedAdamW

from binclf.train.fused_step import FusedMLPStep

from binclf.nn.models.hashed_dropout import dropout_key, dropout_multiplier, relu_dropout

from binclf.nn.matmul import mm_nt
from binclf.nn.losses import build_loss
from binclf.nn.models import MLP, LogisticModel
from binclf.train.trainer import TrainConfig, Trainer, predict_logits


def test_hashed_dropout_keeps_one_minus_p_and_scales_kept_units_by_one_over_one_minus_p():
    for p in (0.1, 0.5):
        m = dropout_multiplier((1000, 200), p, torch.tensor(12345))
        kept = m > 0
        rate = kept.float().mean().item()
        assert abs(rate - (1 - p)) < 4 * math.sqrt(p * (1 - p) / m.numel())  # 4 standard errors
        assert torch.allclose(m[kept], torch.full_like(m[kept], 1 / (1 - p)))
        assert torch.all(m[~kept] == 0)


def test_hashed_dropout_has_no_structure_across_rows_or_columns():
    m = dropout_multiplier((2000, 128), 0.5, torch.tensor(7)) > 0
    # Each column and each row keeps about half: no unit or example is favoured.
    assert m.float().mean(0).sub(0.5).abs().max() < 0.05
    assert m.float().mean(1).sub(0.5).abs().max() < 0.15
    # Neighbouring elements are uncorrelated.
    a, b = m[:, :-1].flatten().float(), m[:, 1:].flatten().float()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.02


def test_hashed_dropout_masks_differ_per_key_and_repeat_for_the_same_key():
    a = dropout_multiplier((64, 32), 0.1, torch.tensor(1))
    b = dropout_multiplier((64, 32), 0.1, torch.tensor(2))
    assert not torch.equal(a, b)
    assert torch.equal(a, dropout_multiplier((64, 32), 0.1, torch.tensor(1)))


def test_dropout_keys_follow_torch_manual_seed():
    torch.manual_seed(3)
    k1, k2 = dropout_key(), dropout_key()
    torch.manual_seed(3)
    assert k1 != k2 and dropout_key() == k1


def test_relu_dropout_is_relu_times_the_mask():
    z = torch.randn(300, 40)
    key = torch.tensor(99)
    out, mult = relu_dropout(z, 0.2, key)
    expected = torch.relu(z) * dropout_multiplier(z.shape, 0.2, key)
    assert torch.equal(out, expected)
    assert torch.equal(mult, (z > 0) * dropout_multiplier(z.shape, 0.2, key))


def test_mlp_dropout_differs_per_step_in_training_and_is_identity_in_eval():
    torch.manual_seed(0)
    m = MLP(6, hidden=(64,), dropout=0.5, batchnorm=False)
    x = torch.randn(32, 6)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m.output(torch.relu(m.body[0](x))).squeeze(-1))


def test_mm_nt_matches_matmul_for_transposed_views():
    a, b = torch.randn(70, 30), torch.randn(20, 30)
    assert torch.allclose(mm_nt(a, b), a @ b.t(), atol=1e-4)
    c = torch.randn(70, 40)
    assert torch.allclose(mm_nt(a.t(), c.t()), a.t() @ c, atol=1e-4)


@pytest.mark.parametrize(
    "loss, kwargs, weighted",
    [("bce", {}, False), ("bce", {"pos_weight": 3.0}, True), ("focal", {"focal_alpha": 0.25}, True), ("hinge", {}, False)],
)
@pytest.mark.parametrize("config", [{}, {"batchnorm": False}, {"dropout": 0.0}])
def test_fused_step_gives_autograds_loss_gradients_and_running_stats(loss, kwargs, weighted, config):
    torch.manual_seed(0)
    a = MLP(9, hidden=(16, 8), **config)
    b = MLP(9, hidden=(16, 8), **config)
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    x, y, w = torch.randn(64, 9), (torch.rand(64) < 0.3).float(), torch.rand(64) if weighted else None
    loss_fn = build_loss(loss, **kwargs)
    assert FusedMLPStep.supports(b, loss_fn, torch.device("cpu"))
    torch.manual_seed(5)
    expected = loss_fn(a(x), y, w)
    expected.backward()
    torch.manual_seed(5)  # the same dropout keys
    got = FusedMLPStep(b, loss_fn)(x, y, w)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5), name
    for (name, sa), sb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(sa.float(), sb.float(), atol=1e-6), name


def test_fused_step_is_only_for_binclfs_mlp_on_the_cpu():
    bce = build_loss("bce")
    assert FusedMLPStep.supports(MLP(3), bce, torch.device("cpu"))
    assert not FusedMLPStep.supports(LogisticModel(3), bce, torch.device("cpu"))
    assert not FusedMLPStep.supports(MLP(3), bce, torch.device("cuda"))
    assert not FusedMLPStep.supports(MLP(3).double(), bce, torch.device("cpu"))


def test_fast_adamw_step_equals_optimizer_step():
    def make():
        torch.manual_seed(0)
        m = MLP(5, hidden=(8,))
        decay = [p for p in m.parameters() if p.ndim >= 2]
        rest = [p for p in m.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
        return m, torch.optim.AdamW(groups, lr=1e-2, fused=True)

    (m1, o1), (m2, o2) = make(), make()
    fast = FastAdamWStep(o2)
    assert FastAdamWStep.supports(o2)
    x, y = torch.randn(32, 5), torch.rand(32)
    for i in range(5):
        for m, step in ((m1, o1.step), (m2, fast)):
            torch.manual_seed(i)
            m.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            step()
        o1.param_groups[0]["lr"] = o2.param_groups[0]["lr"] = 1e-2 / (i + 2)  # a scheduler's change is seen
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert o1.state_dict()["state"][0]["step"] == o2.state_dict()["state"][0]["step"] == 5


def test_fused_adamw_without_torch_optim_makes_torch_adamws_updates():
    def make(cls, **kw):
        torch.manual_seed(0)
        m = MLP(5, hidden=(8,))
        decay = [p for p in m.parameters() if p.ndim >= 2]
        rest = [p for p in m.parameters() if p.ndim < 2]
        return m, cls([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-2, **kw)

    (m1, o1), (m2, o2) = make(torch.optim.AdamW, fused=True), make(FusedAdamW)
    assert FusedAdamW.supports(m2.parameters())
    x, y = torch.randn(32, 5), torch.rand(32)
    for i in range(6):
        for m, o in ((m1, o1), (m2, o2)):
            torch.manual_seed(i)
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            if i == 2:
                m.output.bias.grad = None  # a parameter without a gradient is left alone, as torch does
            o.step()
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert o2.state[m2.output.weight]["step"].item() == 6 and o2.state[m2.output.bias]["step"].item() == 5
    assert not FusedAdamW.supports(MLP(3).double().parameters())


def test_a_cpu_fit_does_not_import_torchs_compiler():
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from binclf.nn.models import MLP\n"
        "from binclf.train.trainer import TrainConfig, Trainer\n"
        "X, y = torch.randn(300, 4), (torch.rand(300) < 0.3).float()\n"
        "Trainer(TrainConfig(max_epochs=2, verbose=False)).fit(MLP(4), X, y, X_valid=X, y_valid=y)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # torch.optim would have imported it (~1 s per process)


def test_fast_adamw_step_declines_what_it_does_not_implement():
    p = [nn.Parameter(torch.zeros(3))]
    assert not FastAdamWStep.supports(torch.optim.AdamW(p, amsgrad=True, fused=True))
    assert not FastAdamWStep.supports(torch.optim.AdamW(p, foreach=True))
    assert not FastAdamWStep.supports(torch.optim.Adam(p, fused=True))


def _two_moons(n, seed):
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n, noise=0.25, random_state=seed)
    X = np.hstack([X, np.random.default_rng(seed).normal(size=(n, 6))]).astype(np.float32)
    return X, y.astype(np.float32)


def _fit(monkeypatch, fast: bool, seed: int):
    import binclf.train.trainer as trainer_module

    if not fast:
        monkeypatch.setattr(trainer_module.FusedMLPStep, "supports", staticmethod(lambda *a: False))
        monkeypatch.setattr(trainer_module.FastAdamWStep, "supports", staticmethod(lambda *a: False))
    X, y = _two_moons(3000, 0)
    Xv, yv = _two_moons(2000, 1)
    torch.manual_seed(seed)
    model = MLP(8, hidden=(32, 16))
    Trainer(TrainConfig(max_epochs=15, batch_size=128, seed=seed, verbose=False, compile=False)).fit(model, X, y)
    logits = predict_logits(model, Xv)
    monkeypatch.undo()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(yv)).item()


def test_fast_and_plain_trainer_paths_learn_equally_well(monkeypatch):
    fast = [_fit(monkeypatch, True, s) for s in (0, 1)]
    plain = [_fit(monkeypatch, False, s) for s in (0, 1)]
    assert max(fast + plain) < 0.35, (fast, plain)
    assert abs(np.mean(fast) - np.mean(plain)) < 0.03, (fast, plain)


def test_fast_path_training_is_reproducible_from_the_seed():
    X, y = _two_moons(1000, 0)
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(0)
        model = MLP(8, hidden=(16,))
        torch.manual_seed(global_seed)
        Trainer(TrainConfig(max_epochs=3, seed=4, verbose=False, compile=False)).fit(model, X, y)
        outs.append(predict_logits(model, X))
    assert torch.equal(outs[0], outs[1])


def _inductor_works() -> bool:
    """Whether torch.compile can build CPU code here (it needs a C++ compiler and Python's headers)."""
    try:
        return torch.equal(torch.compile(lambda t: t * 2 + 1)(torch.arange(4.0)), torch.arange(4.0) * 2 + 1)
    except Exception:  # noqa: BLE001
        return False


def test_compiled_and_eager_steps_train_the_same_model(monkeypatch):
    from binclf.train import fused_step

    if not _inductor_works():
        pytest.skip("torch.compile cannot build CPU code on this machine; training stays eager")

    built = []
    real_init = FusedMLPStep.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        built.append(self)

    monkeypatch.setattr(FusedMLPStep, "__init__", spy)
    X, y = _two_moons(1000, 0)
    outs = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = MLP(8, hidden=(16,))
        Trainer(TrainConfig(max_epochs=2, seed=4, verbose=False, compile=compile)).fit(model, X, y)
        outs.append(predict_logits(model, X))
    # The compiled graph really ran (it was checked against the eager step on
    # the first batch), and the two models agree to float32 rounding.
    assert not built[0].compiled_in_use and built[1].compiled_in_use
    assert fused_step.compiled_step_ready()
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    # A later fit of the same shapes uses the built graph without being asked to.
    Trainer(TrainConfig(max_epochs=1, seed=4, verbose=False)).fit(MLP(8, hidden=(16,)), X, y)
    assert built[2].compiled_in_use


def test_the_guard_free_graph_step_equals_the_eager_step_with_weights_and_one_graph_per_signature():
    """GraphStep's flat inputs and outputs: sample weights and pos_weight in, None gradients kept in place."""
    from binclf.train import fused_step

    if not _inductor_works():
        pytest.skip("torch.compile cannot build CPU code on this machine; training stays eager")
    torch.manual_seed(0)
    model = MLP(5, hidden=(8, 4), dropout=0.2)
    step = FusedMLPStep(model, build_loss("bce"))
    params = step.params
    params[2] = None  # a block without a BatchNorm weight: its gradient slot stays None
    x, y = torch.randn(16, 5), (torch.rand(16) < 0.5).float()
    w, pw = torch.rand(16) + 0.5, torch.tensor(3.0)
    keys = [dropout_key(), dropout_key()]
    graphs = fused_step.GraphStep()
    with torch.no_grad():
        got = graphs(x, y, w, pw, params, keys, step.spec, fused_step._bce_and_grad)
        want = fused_step._mlp_step(x, y, w, pw, params, keys, step.spec, fused_step._bce_and_grad)
        assert fused_step._close(got, want)
        assert [g is None for g in got[1]] == [g is None for g in want[1]]
        assert len(got[2]) == len(want[2]) == 2
        # The same shapes reuse the graph; another batch size is another signature, another graph.
        graphs(x, y, w, pw, params, keys, step.spec, fused_step._bce_and_grad)
        assert len(graphs.graphs) == 1
        got = graphs(x[:8], y[:8], None, None, params, keys, step.spec, fused_step._bce_and_grad)
        want = fused_step._mlp_step(x[:8], y[:8], None, None, params, keys, step.spec, fused_step._bce_and_grad)
        assert len(graphs.graphs) == 2 and fused_step._close(got, want)


def test_a_step_whose_compiled_graph_disagrees_falls_back_to_eager(monkeypatch):
    from binclf.train import fused_step

    def wrong(*args):
        loss, grads, stats = fused_step._mlp_step(*args)
        return loss + 1.0, grads, stats

    monkeypatch.setattr(fused_step, "_compiled_mlp_step", lambda: wrong)
    monkeypatch.setattr(runtime, "COMPILE_CACHE", runtime.CompileCache())
    torch.manual_seed(0)
    model = MLP(4, hidden=(8,))
    step = FusedMLPStep(model, build_loss("bce"), compiled=True)
    x, y = torch.randn(32, 4), (torch.rand(32) < 0.5).float()
    torch.manual_seed(1)
    loss = step(x, y, None)
    eager = FusedMLPStep(MLP(4, hidden=(8,)), build_loss("bce"))
    eager.model.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    assert loss.item() == eager(x, y, None).item()  # the eager result, not the wrong one
    assert not step.compiled_in_use and step.compiled is False
    assert runtime.COMPILE_CACHE.failed  # later steps do not try again


def test_shapes_past_torch_compiles_graph_limit_train_eagerly(monkeypatch):
    from binclf.train import fused_step

    # As if this process had already filled torch.compile's graphs for the function.
    monkeypatch.setattr(fused_step, "_recompile_limit", lambda: 0)
    monkeypatch.setattr(fused_step, "_compiled_mlp_step", lambda: pytest.fail("must not compile"))
    step = FusedMLPStep(MLP(4, hidden=(8,)), build_loss("bce"), compiled=True)
    step(torch.randn(16, 4), (torch.rand(16) < 0.5).float(), None)
    assert step.compiled is False and not step.compiled_in_use


def test_an_early_stopped_fit_compiles_its_step_once_it_has_proved_long(monkeypatch):
    import binclf.train.trainer as trainer_module
    from binclf.train import fused_step

    compiled_rows = []

    def fake_compiled():  # stands in for torch.compile: counts the steps it runs
        def run(*args):
            compiled_rows.append(len(args[0]))
            return fused_step._mlp_step(*args)

        return run

    monkeypatch.setattr(fused_step, "_compiled_mlp_step", fake_compiled)
    monkeypatch.setattr(runtime, "COMPILE_CACHE", runtime.CompileCache())
    monkeypatch.setattr(runtime, "PROBES", runtime.ProbeCache())
    # The speed probe's timings, faked without running anything: the compiled step measures faster.
    monkeypatch.setattr(fused_step.probe, "time_interleaved", lambda fns, **kw: {k: 2e-3 if k == "eager" else 1e-3 for k in fns})
    monkeypatch.setattr(trainer_module, "_COMPILE_MIN_ROW_EPOCHS", 4000)
    X, y = _two_moons(1000, 0)
    Xv, yv = _two_moons(300, 1)
    cfg = TrainConfig(max_epochs=8, patience=100, batch_size=250, seed=0, verbose=False)
    Trainer(cfg).fit(MLP(8, hidden=(16,)), X, y, X_valid=Xv, y_valid=yv)
    # With validation the fit may stop early: eager until it has run the
    # break-even 4,000 row-epochs (after epoch 4) with as many still possible,
    # then every step of epochs 5-8 (4 steps of 250 rows each) runs compiled.
    assert compiled_rows == [250] * 16
    # Without validation every epoch runs: a long enough fit compiles from its first step.
    compiled_rows.clear()
    Trainer(cfg).fit(MLP(8, hidden=(16,)), X, y)
    assert compiled_rows == [250] * 32
    # A validated fit that cannot run as long again after break-even stays eager.
    compiled_rows.clear()
    runtime.COMPILE_CACHE.signatures.clear()
    Trainer(TrainConfig(**{**cfg.to_dict(), "max_epochs": 7})).fit(MLP(8, hidden=(16,)), X, y, X_valid=Xv, y_valid=yv)
    assert compiled_rows == []


def test_fused_adamw_steps_a_flat_buffer_and_gives_each_parameter_its_storage_back():
    torch.manual_seed(0)
    m = MLP(5, hidden=(8,))
    opt = FusedAdamW([{"params": list(m.parameters()), "weight_decay": 0.0}], lr=1e-2)
    x, y = torch.randn(32, 5), torch.rand(32)
    for _ in range(2):
        opt.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        opt.step()
    storages = {p.untyped_storage().data_ptr() for p in m.parameters()}
    assert len(storages) == 1  # one buffer, one fused call
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt.release()
    assert len({p.untyped_storage().data_ptr() for p in m.parameters()}) == len(list(m.parameters()))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    opt.zero_grad()
    ((m(x) - y) ** 2).mean().backward()
    opt.step()  # per parameter from now on, from the same moments
    assert all(opt.state[p]["step"].item() == 3 for p in m.parameters())


def test_a_fit_leaves_no_parameters_sharing_memory():
    X, y = _two_moons(300, 0)
    model = MLP(8, hidden=(16,))
    Trainer(TrainConfig(max_epochs=2, batch_size=64, verbose=False, compile=False)).fit(model, X, y)
    ptrs = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(ptrs)) == len(ptrs)

"""The speed choices measured at run time (binclf.probe): the choice logic on fake timings, nothing timed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from binclf import probe, runtime
from binclf.errors import ConfigError
from binclf.nn import matmul
from binclf.nn.losses import build_loss
from binclf.nn.models import MLP
from binclf.train import fused_step
from binclf.train.trainer import TrainConfig, Trainer

# --------------------------------------------------------------------------- #
# threads
# --------------------------------------------------------------------------- #


def test_threads_follow_the_measured_steps_and_prefer_fewer_on_a_near_tie():
    assert probe.choose_threads(ceiling=2, cores=2, seconds={1: 1.0e-3, 2: 0.6e-3}) == 2
    # Two threads only 3% faster: not worth a core taken from everyone else.
    assert probe.choose_threads(ceiling=2, cores=2, seconds={1: 1.0e-3, 2: 0.97e-3}) == 1
    assert probe.choose_threads(ceiling=8, cores=8, seconds={1: 4.0, 2: 2.1, 4: 1.2, 8: 1.19}) == 4


def test_a_busy_machine_gets_one_thread_from_the_timings_alone():
    """One other process spinning: the 2-thread step waits for a core at every barrier (27x measured)."""
    assert probe.choose_threads(ceiling=2, cores=2, seconds={1: 1.1e-3, 2: 30e-3}) == 1


def test_other_processes_load_caps_the_threads_even_when_timings_disagree():
    # One core's worth of other work on 2 cores: at most one thread, whatever a lucky probe saw.
    assert probe.choose_threads(ceiling=2, cores=2, others=1.0, seconds={1: 1.0, 2: 0.5}) == 1
    assert probe.choose_threads(ceiling=8, cores=8, others=3.0, seconds={1: 4, 2: 2, 4: 1, 8: 0.5}) == 4
    assert probe.choose_threads(ceiling=2, cores=2, others=5.0) == 1  # never below one
    assert probe.choose_threads(ceiling=2, cores=2, others=0.2, seconds={1: 1.0, 2: 0.5}) == 2  # tick noise


def test_threads_never_exceed_the_ceiling_or_the_usable_cores():
    # OMP_NUM_THREADS=1 (or torch.set_num_threads(1)) is the ceiling: timings of more do not count.
    assert probe.choose_threads(ceiling=1, cores=8, seconds={1: 1.0, 2: 0.1}) == 1
    assert probe.choose_threads(ceiling=16, cores=2) == 2
    assert probe.choose_threads(ceiling=16, cores=2, seconds={4: 0.1, 2: 0.5, 1: 1.0}) == 2


def test_the_users_thread_count_wins_within_the_ceiling():
    assert probe.choose_threads(ceiling=2, cores=2, override=2, seconds={1: 1.0, 2: 30.0}, others=1.5) == 2
    assert probe.choose_threads(ceiling=2, cores=8, override=4) == 2
    assert probe.thread_override({"BINCLF_THREADS": "3"}) == 3
    assert probe.thread_override({}) is None
    with pytest.raises(ConfigError, match="BINCLF_THREADS must be a whole number >= 1"):
        probe.thread_override({"BINCLF_THREADS": "two"})


# --------------------------------------------------------------------------- #
# kernel and compiled step
# --------------------------------------------------------------------------- #


def test_the_faster_kernel_is_chosen_whichever_it_is():
    assert probe.choose_fastest({"mm": 35e-6, "onednn": 62e-6}, default="mm") == "mm"  # the Intel Xeon measured
    assert probe.choose_fastest({"mm": 62e-6, "onednn": 37e-6}, default="mm") == "onednn"  # the AMD EPYC measured
    assert probe.choose_fastest({"mm": 1.0, "onednn": 0.99}, default="mm", margin=0.03) == "mm"  # a tie: the default
    assert probe.choose_fastest({}, default="mm") == "mm"
    assert probe.choose_fastest({"mm": 1.0, "onednn": 2.0}, default="mm", override="onednn") == "onednn"


def test_the_matmul_override_reads_its_names():
    assert probe.matmul_override({"BINCLF_MATMUL": "MKL"}) == "mm"
    assert probe.matmul_override({"BINCLF_MATMUL": "onednn"}) == "onednn"
    assert probe.matmul_override({"BINCLF_MATMUL": "auto"}) is None
    with pytest.raises(ConfigError, match="BINCLF_MATMUL must be auto, mm"):
        probe.matmul_override({"BINCLF_MATMUL": "cublas"})


def test_the_compiled_step_is_kept_unless_the_eager_one_is_clearly_faster():
    assert probe.choose_fastest({"compiled": 0.9e-3, "eager": 2.4e-3}, default="compiled", margin=0.05) == "compiled"
    assert probe.choose_fastest({"compiled": 1.0e-3, "eager": 0.97e-3}, default="compiled", margin=0.05) == "compiled"
    assert probe.choose_fastest({"compiled": 2.0e-3, "eager": 1.0e-3}, default="compiled", margin=0.05) == "eager"


# --------------------------------------------------------------------------- #
# the timing loop and the guard, on a fake clock
# --------------------------------------------------------------------------- #


class FakeClock:
    """A clock that each fake workload advances by its own cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def run():
            self.now += seconds

        return run


def test_interleaved_timing_gives_medians_and_drops_hopeless_alternatives():
    clock = FakeClock()
    calls = []
    costs = {"fast": 1.0, "slow": 30.0, "near": 1.2}

    def fn(k):
        def run():
            calls.append(k)
            clock.now += costs[k]

        return run

    seconds = probe.time_interleaved({k: fn(k) for k in costs}, rounds=5, clock=clock, budget_s=1e9)
    assert seconds == pytest.approx({"fast": 1.0, "slow": 30.0, "near": 1.2})
    # The 30x one runs once (its warm-up); the others in every round.
    assert calls.count("slow") == 1 and calls.count("fast") == 6 and calls.count("near") == 6
    # Each round starts from a different alternative.
    assert calls[3:5] != calls[5:7]


def test_an_alternative_that_turns_slow_after_the_warm_up_is_dropped_after_two_rounds():
    clock, calls = FakeClock(), []
    costs = {"a": iter([1.0] * 10), "b": iter([1.0] + [10.0] * 10)}

    def fn(k):
        def run():
            calls.append(k)
            clock.now += next(costs[k])

        return run

    seconds = probe.time_interleaved({k: fn(k) for k in costs}, rounds=5, clock=clock, budget_s=1e9)
    assert calls.count("b") == 3 and calls.count("a") == 6 and seconds["b"] == 10.0


def test_interleaved_timing_enters_each_alternatives_context_around_it():
    clock, entered = FakeClock(), []

    class Ctx:
        def __init__(self, k):
            self.k = k

        def __enter__(self):
            entered.append(self.k)

        def __exit__(self, *exc):
            return False

    probe.time_interleaved({1: clock.work(1), 2: clock.work(1)}, rounds=2, clock=clock, context=Ctx)
    assert sorted(entered) == [1] * 3 + [2] * 3


def test_the_guard_drops_to_one_thread_when_steps_slow_down_and_only_then():
    clock = FakeClock()
    guard = probe.ThreadGuard(2, clock=clock)
    assert guard.tick(0) is False  # starts a window
    for per_step in (1e-3, 1.1e-3, 0.9e-3, 1.5e-3):  # noise: no change
        clock.now += 16 * per_step
        assert guard.tick(16) is False
    clock.now += 16 * 30e-3  # another process took a core
    assert guard.tick(16) is True and guard.threads == 1 and guard.tripped
    clock.now += 16 * 90e-3
    assert guard.tick(16) is False  # one thread: nothing further to drop


def test_one_thread_has_no_guard_to_trip():
    clock = FakeClock()
    guard = probe.ThreadGuard(1, clock=clock)
    guard.tick(0)
    clock.now += 1.0
    guard.tick(16)
    clock.now += 100.0
    assert guard.tick(16) is False


# --------------------------------------------------------------------------- #
# in the trainer: overrides and state restored
# --------------------------------------------------------------------------- #


def data(n=600, d=6):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.float32)


def fake_timer(costs):
    """A stand-in for time_interleaved: returns the given seconds per alternative without running any."""

    def timer(fns, **kw):
        return {k: costs[k] for k in fns if k in costs}

    return timer


def test_the_fit_trains_on_the_threads_and_kernel_the_probe_measured_and_restores_them(two_threads, monkeypatch):
    if not matmul.onednn_works():
        pytest.skip("oneDNN's linear kernel does not work here")
    monkeypatch.setattr(probe, "time_interleaved", fake_timer({1: 1e-3, 2: 30e-3, "mm": 2e-4, "onednn": 1e-4}))
    monkeypatch.setattr(probe.LoadMeter, "others", lambda self: 0.0)
    monkeypatch.setattr(probe, "runnable_others", lambda: 0.0)
    seen = []
    X, y = data()
    with runtime.session(purpose="train") as s:
        Trainer(TrainConfig(max_epochs=1, batch_size=128, verbose=False, compile=False),
                callbacks=[lambda t, log: seen.append((torch.get_num_threads(), matmul.current_backend()))]
                ).fit(MLP(6, hidden=(8,)), X, y)
    assert seen == [(1, "mm")]  # the kernel is in force inside the step only
    assert torch.get_num_threads() == 2 and matmul.current_backend() == "mm"
    line = runtime.describe(s)
    assert "oneDNN linear (measured" in line and "torch 1 thread (measured; 1: 1.00 ms, 2: 30.00 ms per step" in line


def test_binclf_threads_and_binclf_matmul_override_the_probe(two_threads, monkeypatch):
    monkeypatch.setattr(probe, "time_interleaved", lambda *a, **k: pytest.fail("an override must not be measured"))
    monkeypatch.setenv("BINCLF_THREADS", "2")
    monkeypatch.setenv("BINCLF_MATMUL", "mm")
    seen = []
    X, y = data()
    with runtime.session(purpose="train") as s:
        Trainer(TrainConfig(max_epochs=1, batch_size=128, verbose=False, compile=False),
                callbacks=[lambda t, log: seen.append(torch.get_num_threads())]).fit(MLP(6, hidden=(8,)), X, y)
    assert seen == [2] and s.pinned
    assert "(set by BINCLF_MATMUL)" in runtime.describe(s) and "fixed by the user" in runtime.describe(s)


def test_a_pinned_session_holds_its_count_through_nested_sessions(two_threads):
    # The inner session is the pipeline's own choice: it yields to the pinned count.
    with runtime.session(purpose="train", threads=2, pinned=True), runtime.session(purpose="train", threads=1) as inner:
        assert torch.get_num_threads() == 2 and inner.pinned and runtime.threads_pinned()
    with runtime.session(purpose="train", threads=8, pinned=True):  # still never above the ceiling
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2 and not runtime.threads_pinned()


def test_lower_threads_acts_inside_a_session_only_and_is_restored(two_threads):
    assert runtime.lower_threads(1) == 2  # outside a session: the host's threads are not touched
    assert torch.get_num_threads() == 2
    with runtime.session(purpose="train") as s:
        assert runtime.lower_threads(1) == 1 and s.torch_threads == 1
        assert runtime.lower_threads(2) == 1  # never raises
    assert torch.get_num_threads() == 2


def test_the_measured_compile_choice_keeps_the_eager_step_where_it_is_faster(monkeypatch):
    """A built, checked graph measured slower than the eager step: the step runs eagerly, the graph stays cached."""
    monkeypatch.setattr(runtime, "COMPILE_CACHE", runtime.CompileCache())
    monkeypatch.setattr(runtime, "PROBES", runtime.ProbeCache())
    monkeypatch.setattr(fused_step, "_compiled_mlp_step", lambda: fused_step._mlp_step)  # "compiled" = eager math
    monkeypatch.setattr(probe, "time_interleaved", fake_timer({"compiled": 3e-3, "eager": 1e-3}))
    X, y = data(256)
    step = fused_step.FusedMLPStep(MLP(6, hidden=(8,)), build_loss("bce"), compiled=True)
    with runtime.session(purpose="train"):
        for _ in range(2):
            step(torch.from_numpy(X), torch.from_numpy(y), None)
    assert step.compiled is False and runtime.COMPILE_CACHE.signatures
    (choice, seconds), = runtime.PROBES.compile.values()
    assert choice is False and seconds == {"compiled": 3e-3, "eager": 1e-3}
    # A later fit of the same shapes (compile=None) takes the measured choice: eager.
    again = fused_step.FusedMLPStep(MLP(6, hidden=(8,)), build_loss("bce"), compiled=None)
    again(torch.from_numpy(X), torch.from_numpy(y), None)
    assert again.compiled is False
    # BINCLF_COMPILE=1 compiles regardless of the measurement.
    monkeypatch.setenv("BINCLF_COMPILE", "1")
    forced = fused_step.FusedMLPStep(MLP(6, hidden=(8,)), build_loss("bce"), compiled=None)
    forced(torch.from_numpy(X), torch.from_numpy(y), None)
    assert forced.compiled is True


def test_the_kernel_probe_times_both_kernels_on_the_layers_products_without_touching_the_random_stream():
    torch.manual_seed(3)
    want = torch.rand(())
    torch.manual_seed(3)
    seen = {}

    def timer(fns, **kw):
        for k, fn in fns.items():
            fn()
            seen[k] = True
        return {k: 1.0 for k in fns}

    out = matmul.probe_backends(64, (6, 8, 4), timer=timer)
    assert set(out) == ({"mm", "onednn"} if matmul.onednn_works() else {"mm"}) == set(seen)
    assert torch.equal(torch.rand(()), want)


def test_both_kernels_compute_the_same_products():
    a, b = torch.randn(33, 17), torch.randn(9, 17)
    for backend in ("mm", "onednn"):
        with matmul.use_backend(backend):
            torch.testing.assert_close(matmul.mm_nt(a, b), a @ b.t())
            torch.testing.assert_close(matmul.mm_nt(a, b.t().contiguous().t()), a @ b.t())
    assert matmul.current_backend() == "mm"


def test_usable_cores_counts_the_affinity_mask():
    assert 1 <= probe.usable_cores() <= (len(__import__("os").sched_getaffinity(0)))


def test_probe_module_leaves_torch_unloaded():
    import subprocess
    import sys

    code = "import sys, binclf.probe; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"




def test_the_load_meter_counts_other_processes_cpu_not_this_ones(monkeypatch):
    clock, own = FakeClock(), [10.0]
    busy = [100.0]
    monkeypatch.setattr(probe, "_cpu_busy_seconds", lambda cpus: busy[0])
    monkeypatch.setattr(probe.time, "process_time", lambda: own[0])
    meter = probe.LoadMeter(clock=clock)
    # Half a second: this process used 0.4 s of CPU, another process spun on one core (0.5 s).
    clock.now += 0.5
    own[0] += 0.4
    busy[0] += 0.9
    assert meter.others() == pytest.approx(1.0)
    # A window too short for the kernel's ticks says nothing.
    short = probe.LoadMeter(clock=clock)
    clock.now += 0.01
    assert short.others() is None


def test_runnable_others_takes_this_process_off_and_the_median_of_snapshots(monkeypatch):
    monkeypatch.setattr(probe, "usable_cores", lambda: 2)
    monkeypatch.setattr(probe.os, "cpu_count", lambda: 2)
    snapshots = iter([(3, 1), (3, 1), (9, 1), (2, 1), (3, 2)])  # one blip of 8 others
    got = probe.runnable_others(read=lambda: next(snapshots), sleep=lambda s: None)
    assert got == 2.0
    assert probe.runnable_others(read=lambda: None, sleep=lambda s: None) is None
    # On 2 of a host's 8 CPUs, the host-wide count is scaled to their share.
    monkeypatch.setattr(probe.os, "cpu_count", lambda: 8)
    assert probe.runnable_others(read=lambda: (9, 1), sleep=lambda s: None) == 2.0


def test_a_machine_busy_now_is_not_timed_on_more_threads_than_its_free_cores(two_threads, monkeypatch):
    monkeypatch.setattr(probe, "runnable_others", lambda: 1.0)  # one other process running on 2 cores
    timed = []
    monkeypatch.setattr(probe, "time_interleaved", lambda fns, **kw: timed.append(list(fns)) or {k: 1e-3 for k in fns})
    X, y = data()
    with runtime.session(purpose="train") as s:
        Trainer(TrainConfig(max_epochs=1, batch_size=128, verbose=False, compile=False)).fit(MLP(6, hidden=(8,)), X, y)
    assert all(1 not in keys and 2 not in keys for keys in timed)  # no thread count was timed
    assert s.fits and all(threads == 1 for _, threads in s.fits)
    assert "torch 1 thread (others running now" in runtime.describe(s)

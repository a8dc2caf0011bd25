"""binclf.runtime: the entry points set the process knobs visibly and leave them as they found them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

from binclf import runtime
from binclf.errors import DataError
from binclf.estimator import BinaryClassifier
from binclf.io.prefetch import prefetch
from binclf.nn.models import MLP
from binclf.train import pipeline
from binclf.train.pipeline import TrainOptions, train_table
from binclf.train.trainer import TrainConfig, Trainer

SMALL = TrainOptions(target="y", model="mlp", hidden=(8,), max_epochs=2, n_boot=0)


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["u", "v"], size=n)})
    df["y"] = np.where(df["a"] + 0.5 * rng.normal(size=n) > 0, "yes", "no")
    return df


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def knobs() -> tuple[int, list[int]]:
    """What a session may change and must restore: torch's threads (this thread) and BLAS's."""
    return torch.get_num_threads(), blas_threads()


@pytest.fixture
def two_blas_threads():
    """BLAS on two threads before the call, so that a call limiting it to one shows (and must undo it)."""
    import importlib

    from threadpoolctl import threadpool_limits

    importlib.import_module("scipy.linalg")  # its BLAS is one of those limited

    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library here")
    with threadpool_limits(limits=2, user_api="blas"):
        yield


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def predictor():
    torch.set_num_threads(2)
    return train_table(frame(), SMALL).predictor


# --------------------------------------------------------------------------- #
# nothing at import
# --------------------------------------------------------------------------- #


def test_importing_every_binclf_module_changes_nothing_in_the_process():
    """torch threads, BLAS limits and malloc are untouched by importing all of binclf (a fresh process)."""
    code = """
import importlib, json, pkgutil
import numpy, scipy.linalg, torch
from threadpoolctl import threadpool_info
def knobs():
    return [torch.get_num_threads(), [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]]
before = knobs()
import binclf
for m in pkgutil.walk_packages(binclf.__path__, "binclf."):
    if m.name.split(".")[1] not in ("serve", "export", "dist", "__main__"):
        importlib.import_module(m.name)
from binclf import runtime
print(json.dumps({"before": before, "after": knobs(), "state": runtime.state()}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["after"] == got["before"]
    assert got["state"]["malloc_tuned"] is None  # mallopt never called
    assert got["state"]["compiled_step"] is False


def test_malloc_is_tuned_once_at_the_first_session_and_can_be_refused():
    """The one lasting effect, applied at a session and never at import; BINCLF_MALLOC=0 keeps glibc's defaults."""
    code = (
        "from binclf import runtime; a = runtime.state()['malloc_tuned']\n"
        "with runtime.session(purpose='predict'): pass\n"
        "print(a, runtime.state()['malloc_tuned'], 'malloc' in runtime.describe())"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MALLOC_")}
    tuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    refused = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "BINCLF_MALLOC": "0"},
        timeout=120,
        check=True,
    )
    glibc = sys.platform.startswith("linux")
    assert tuned.stdout.split() == ["None", str(glibc), "True"]
    assert refused.stdout.split() == ["None", "False", "True"]


# --------------------------------------------------------------------------- #
# the session itself
# --------------------------------------------------------------------------- #


def test_a_session_lowers_but_never_raises_torch_threads_and_restores_them(two_torch_threads):
    with runtime.session(purpose="train", threads=1) as s:
        assert torch.get_num_threads() == 1 and s.torch_threads == 1
        with runtime.session(purpose="train", threads=8) as inner:  # nested: the outer choice is the ceiling
            assert torch.get_num_threads() == 1 and inner.torch_threads == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)  # the user's own setting is the ceiling too
    with runtime.session(purpose="train", threads=2):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 1


def test_a_train_session_runs_blas_on_one_thread_and_restores_it_also_on_error(two_blas_threads):
    before = knobs()
    with pytest.raises(RuntimeError, match="boom"), runtime.session(purpose="train", threads=1) as s:
            assert blas_threads() == [1] * len(before[1]) and s.blas_threads == 1
            raise RuntimeError("boom")
    assert knobs() == before
    with runtime.session(purpose="predict"):
        assert blas_threads() == before[1]  # prediction leaves BLAS alone


def test_overlapping_sessions_in_two_threads_leave_blas_and_torch_as_they_were(two_blas_threads):
    """Sessions entered and left in an interleaved order from two threads: both knobs end as before."""
    before = knobs()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    errors = []

    def a():
        try:
            with runtime.session(purpose="train", threads=1):
                a_in.set()
                assert b_in.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            a_out.set()

    def b():
        try:
            assert a_in.wait(10)
            with runtime.session(purpose="train", threads=1):
                b_in.set()
                assert a_out.wait(10)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            b_in.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert knobs() == before


# --------------------------------------------------------------------------- #
# the entry points
# --------------------------------------------------------------------------- #


def test_train_table_sets_its_knobs_inside_and_restores_them_after(two_blas_threads, two_torch_threads, monkeypatch):
    before = knobs()
    inside = []

    class Spy(Trainer):
        def fit(self, *a, **kw):
            inside.append(knobs())
            return super().fit(*a, **kw)

    monkeypatch.setattr(pipeline, "Trainer", Spy)
    train_table(frame(), SMALL)
    assert inside == [(1, [1] * len(before[1]))]  # a small network trains on one torch thread, BLAS on one
    assert knobs() == before
    line = runtime.describe()
    assert line.startswith("fast path: ") and "fused step (1 fit on 1 torch thread)" in line and "BLAS 1 thread" in line


def test_train_table_restores_the_knobs_when_it_raises(two_blas_threads, two_torch_threads, monkeypatch):
    before = knobs()

    def fail(*a, **kw):
        assert runtime.state()["in_session"] and blas_threads() == [1] * len(before[1])
        raise RuntimeError("calibration failed")

    monkeypatch.setattr(pipeline, "select_calibrator", fail)
    with pytest.raises(RuntimeError, match="calibration failed"):
        train_table(frame(), SMALL)
    assert knobs() == before


def test_train_table_respects_a_users_single_torch_thread(two_blas_threads, monkeypatch):
    """A wide network keeps the caller's threads: here the user's one, never more."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seen = []
        monkeypatch.setattr(pipeline, "_SHARED_FLOPS_PER_ROW", 0.0)  # every network counts as wide

        class Spy(Trainer):
            def fit(self, *a, **kw):
                seen.append(torch.get_num_threads())
                return super().fit(*a, **kw)

        monkeypatch.setattr(pipeline, "Trainer", Spy)
        train_table(frame(), SMALL)
        assert seen == [1] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before_threads)


@pytest.mark.parametrize("step_seconds, inside", [({1: 2e-3, 2: 1e-3}, 2), ({1: 1e-3, 2: 30e-3}, 1)])
def test_trainer_fit_trains_on_the_measured_threads_within_the_callers_and_restores_them(
    two_blas_threads, two_torch_threads, monkeypatch, step_seconds, inside
):
    """The probe (binclf.probe) may lower the caller's threads for the fit, never raise them; all restored after."""
    from binclf import probe

    monkeypatch.setattr(runtime, "PROBES", runtime.ProbeCache())
    monkeypatch.setattr(probe, "time_interleaved", lambda fns, **kw: {k: step_seconds.get(k, 1e-4) for k in fns})
    monkeypatch.setattr(probe.LoadMeter, "others", lambda self: 0.0)
    monkeypatch.setattr(probe, "runnable_others", lambda: 0.0)
    before = knobs()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    seen = []

    def cb(trainer, log):
        seen.append(knobs())

    Trainer(TrainConfig(max_epochs=1, verbose=False), callbacks=[cb]).fit(MLP(3, hidden=(4,)), X, y)
    assert seen == [(inside, [1] * len(before[1]))]
    assert knobs() == before


def test_binary_classifier_fit_and_predict_leave_the_knobs_as_they_were(two_blas_threads, two_torch_threads):
    before = knobs()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = BinaryClassifier(hidden=(4,), max_epochs=2, random_state=0).fit(X, y)
    assert knobs() == before
    clf.predict_proba(X)
    assert knobs() == before
    with pytest.raises(ValueError, match="needs two classes"):
        BinaryClassifier(max_epochs=1).fit(X, np.zeros(80))
    assert knobs() == before


def test_predictor_predict_leaves_the_knobs_as_they_were_also_when_it_raises(predictor, two_blas_threads):
    before = knobs()
    predictor.predict(frame(50, seed=1))
    assert knobs() == before
    with pytest.raises(DataError):
        predictor.predict(frame(50, seed=1).drop(columns=["b"]))
    assert knobs() == before


def test_one_predictor_from_several_threads_gives_the_serial_answers(predictor):
    chunks = [frame(500, seed=s) for s in range(8)]
    serial = [predictor.predict_proba(c) for c in chunks]
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            parallel = list(pool.map(predictor.predict_proba, chunks))
            for a, b in zip(serial, parallel):
                np.testing.assert_array_equal(a, b)
    assert torch.get_num_threads() == threads


# --------------------------------------------------------------------------- #
# the compile policy
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("env", ["1", "0"])
def test_binclf_compile_0_keeps_the_step_eager(monkeypatch, env):
    """With BINCLF_COMPILE=0 a fit that would compile never builds the compiled step."""
    import binclf.train.trainer as trainer_module
    from binclf.train import fused_step

    built = []

    def fake_compile():  # stands in for torch.compile: records that the compiled step was asked for
        built.append(True)
        return fused_step._mlp_step

    monkeypatch.setenv("BINCLF_COMPILE", env)
    monkeypatch.setattr(runtime, "COMPILE_CACHE", runtime.CompileCache())
    monkeypatch.setattr(fused_step, "_compiled_mlp_step", fake_compile)
    monkeypatch.setattr(trainer_module, "_COMPILE_MIN_ROW_EPOCHS", 10)  # every fit counts as long
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    Trainer(TrainConfig(max_epochs=3, batch_size=64, verbose=False)).fit(MLP(4, hidden=(8,)), X, y)
    Trainer(TrainConfig(max_epochs=6, batch_size=64, patience=100, verbose=False)).fit(
        MLP(4, hidden=(8,)), X, y, X_valid=X, y_valid=y
    )
    assert bool(built) == (env == "1")
    if env == "0":
        assert runtime.COMPILE_CACHE.signatures == set() and "BINCLF_COMPILE=0" in runtime.describe()


def test_reset_compile_cache_forgets_the_built_shapes(monkeypatch):
    monkeypatch.setattr(runtime, "COMPILE_CACHE", runtime.CompileCache(step=object(), signatures={(1,)}, failed=True))
    runtime.reset_compile_cache()
    assert runtime.COMPILE_CACHE == runtime.CompileCache()


# --------------------------------------------------------------------------- #
# the prefetch thread
# --------------------------------------------------------------------------- #


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "binclf-prefetch" and t.is_alive()]


def test_closing_the_consumer_early_stops_the_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = prefetch(endless(), depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert _prefetch_threads() == []
    n = len(produced)
    assert n <= 2 + 2 + 1  # consumed, queued, and the one being put when the stop came
    assert len(produced) == n  # nothing is produced after the close


def test_an_error_in_the_producer_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad chunk at row 3")

    got = []
    with pytest.raises(ValueError, match="bad chunk at row 3"):
        for item in prefetch(items()):
            got.append(item)  # noqa: PERF402 - each item must arrive before the error
    assert got == [1, 2]
    assert _prefetch_threads() == []


def test_release_freed_memory_only_where_malloc_is_tuned():
    """A subprocess: untuned, nothing is trimmed; once tune_malloc is in force (glibc), freed pages go back."""
    code = (
        "import os, sys\n"
        "from binclf import runtime\n"
        "assert runtime.release_freed_memory() is False\n"
        "tuned = runtime.tune_malloc()\n"
        "blocks = [bytearray(1 << 20) for _ in range(64)]\n"
        "del blocks\n"
        "assert runtime.release_freed_memory(array_bytes=1 << 20) is False  # too small a step to bother\n"
        "print(tuned, runtime.release_freed_memory(array_bytes=64 << 20))\n"
    )
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "BINCLF_MALLOC"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    # Tuned (glibc) -> trimmed; off glibc neither.
    assert out in (["True", "True"], ["False", "False"])
    import platform

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert out == ["True", "True"]

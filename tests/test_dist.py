"""binclf.dist: sharding, the single-process no-ops, and real 2-process runs through torchrun (gloo, loopback).

The multi-process tests start ``python -m torch.distributed.run --standalone``
(torchrun picks a free port on 127.0.0.1) or ``binclf train --nproc 2`` as
subprocesses on a 600-row table with ``--max-epochs 3``: a few seconds each,
most of it the processes' start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from binclf import dist
from binclf.dist.context import DistContext
from binclf.dist.launch import strip_nproc
from binclf.errors import BinclfError, ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"
FLAGS = ("--target", "y", "--max-epochs", "3", "--no-report", "--seed", "0")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    for k in ("BINCLF_DEBUG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=_env(),
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """600 rows: four numbers with a curved boundary, one category, a 0/1 target."""
    rng = np.random.default_rng(0)
    n = 600
    X = rng.normal(size=(n, 4))
    z = 1.5 * X[:, 0] - X[:, 1] + 0.8 * X[:, 2] * X[:, 3]
    df = pd.DataFrame(X, columns=list("abcd"))
    df["color"] = rng.choice(["red", "green", "blue"], n)
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    path = tmp_path_factory.mktemp("dist") / "small.csv"
    df.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------- shard
@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (5, 8), (1, 4), (1000, 7)])
def test_shard_gives_every_rank_the_same_count_disjoint_and_covering(n, world):
    shards = [dist.shard(n, rank=r, world_size=world) for r in range(world)]
    size = -(-n // world)
    assert all(len(s) == size == dist.shard_size(n, world_size=world) for s in shards)  # equal steps
    together = np.concatenate(shards)
    assert set(together.tolist()) == set(range(n))  # covering
    # Disjoint but for the padding: exactly size * world - n positions appear twice (wrapped to the start).
    assert len(together) - len(set(together.tolist())) == size * world - n
    assert all(s.dtype == np.int64 and ((0 <= s) & (s < n)).all() for s in shards)


def test_shard_in_one_process_is_every_row_in_order_and_bad_arguments_are_refused():
    assert dist.shard(5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        dist.shard(5, rank=2, world_size=2)
    with pytest.raises(ValueError, match="n_rows >= 1"):
        dist.shard(0, rank=0, world_size=2)


# ---------------------------------------------------------------------------- one process
def test_every_function_is_a_no_op_in_one_process():
    import torch

    ctx = dist.current()
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.distributed, ctx.is_main) == (0, 1, None, False, True)
    assert dist.is_main() and not dist.launched()
    t = torch.arange(3.0)
    assert dist.all_reduce_sum(t) is t and t.tolist() == [0.0, 1.0, 2.0]
    obj = {"a": [1, 2]}
    assert dist.broadcast_object(obj) is obj
    assert dist.all_gather_object(obj) == [obj]
    dist.barrier()
    assert dist.main_only(lambda x: x + 1)(1) == 2
    with pytest.raises(ConfigError, match="bad"):  # errors of the guarded call pass through unchanged
        dist.main_only(lambda: (_ for _ in ()).throw(ConfigError("bad")))()
    assert dist.data_parallel() is None
    with dist.init() as inside:
        assert inside == DistContext() and dist.current() is inside and dist.data_parallel() is None
    assert not torch.distributed.is_initialized()  # no process group was created


def test_every_public_name_is_the_function_even_after_its_module_is_imported():
    import importlib

    for module in ("context", "collectives", "sharding", "parallel", "launch"):
        importlib.import_module(f"binclf.dist.{module}")  # sets the package attribute of that name
    for name in dist.__all__:
        assert callable(getattr(dist, name)) and not isinstance(getattr(dist, name), type(dist)), name


def test_importing_dist_loads_no_torch():
    code = "import sys, binclf.dist, binclf.dist.context, binclf.dist.launch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60,
                         check=False)
    assert out.stdout.strip() == "False", out.stderr


def test_context_from_torchrun_environment(monkeypatch):
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert DistContext.from_env() == DistContext(rank=3, world_size=4, local_rank=1, local_world_size=2,
                                                 backend="gloo", device="cpu")
    cuda = DistContext.from_env(device="cuda")
    assert (cuda.backend, cuda.device) == ("nccl", "cuda:1")
    assert dist.launched() and not DistContext.from_env().is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="do not fit WORLD_SIZE=4"):
        DistContext.from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="must be integers"):
        DistContext.from_env()
    with pytest.raises(ConfigError, match="device must be one of cpu, cuda"):
        DistContext.from_env(device="tpu")


def test_rank_threads_share_the_cores_and_restore(monkeypatch):
    import torch

    from binclf import runtime

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's default: not a ceiling
    before = torch.get_num_threads()
    cores = runtime.available_cores()
    with runtime.rank_threads(2) as n:
        assert n == max(1, cores // 2) == torch.get_num_threads()
    with runtime.rank_threads(10 * cores) as n:
        assert n == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice above 1 caps it
    with runtime.rank_threads(1) as n:
        assert n == min(2, cores)


def test_strip_nproc_keeps_every_other_argument():
    assert strip_nproc(["d.csv", "--nproc", "2", "-t", "y", "--nproc=3", "--lr", "0.1"]) == [
        "d.csv", "-t", "y", "--lr", "0.1"]


def test_bundle_validation_of_the_distributed_record():
    from binclf.bundle_schema import _check_distributed, _Problems

    pr = _Problems()
    _check_distributed(pr, {"world_size": 2, "backend": "gloo"})
    _check_distributed(pr, None)  # bundles from before have none
    assert pr.items == []
    _check_distributed(pr, {"world_size": 0, "backend": "smoke"})
    assert len(pr.items) == 2 and "world_size must be an integer >= 1" in pr.items[0]


# ---------------------------------------------------------------------------- two processes
def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.mark.slow
def test_two_processes_under_torchrun_write_one_bundle_close_to_one_process(small, tmp_path):
    from binclf.predictor import Predictor

    two = _run("-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "binclf", "train",
               small, *FLAGS, "-o", "two", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _run("-m", "binclf", "train", small, *FLAGS, "-o", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    # One bundle, written once (by rank 0): one "bundle written" line, nothing else left in the directory.
    assert two.stdout.count("bundle written to two/") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["bundle.json", "model.safetensors"]
    meta = json.loads((tmp_path / "two" / "bundle.json").read_text())
    assert meta["info"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((tmp_path / "one" / "bundle.json").read_text())["info"]["distributed"] == {
        "world_size": 1, "backend": None}
    # Rank 1 printed nothing: the training lines appear once.
    assert two.stderr.count("training auto") == 1
    df = pd.read_csv(small)
    y = df["y"].to_numpy(float)
    p_two = Predictor.load(tmp_path / "two").predict_proba(df)
    p_one = Predictor.load(tmp_path / "one").predict_proba(df)
    # The same global batch, seed and epochs: the same algorithm up to how rows fall into batches,
    # BatchNorm over half-batches and dropout masks. On this table the log-loss of runs with other seeds
    # spreads by ~0.01-0.02; the two runs must agree within that (0.03), and their probabilities closely.
    assert abs(_log_loss(y, p_two) - _log_loss(y, p_one)) < 0.03
    assert float(np.mean(np.abs(p_two - p_one))) < 0.05
    assert float(np.corrcoef(p_two, p_one)[0, 1]) > 0.97


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing target", "existing bundle"])
def test_bad_input_on_two_processes_is_one_line_exit_2(case, small, tmp_path):
    if case == "missing target":
        args = [small, "--target", "nope", "-o", "m"]
        want = "target column 'nope' is not in the table"
    else:
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "mine.txt").write_text("keep me")
        args = [small, *FLAGS, "-o", "m"]
        want = "--out"
    r = _run("-m", "binclf", "train", *args, "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr and r.stdout == ""
    if case == "existing bundle":
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["mine.txt"]
    else:
        assert not (tmp_path / "m").exists()


def test_nproc_is_refused_inside_torchrun(monkeypatch):
    from binclf.dist.launch import launch_train

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--nproc cannot be used inside torchrun"):
        launch_train(2, [])
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ConfigError, match="--nproc must be at least 2"):
        launch_train(1, [])
    assert issubclass(ConfigError, BinclfError)


_EXACT = '''
import json, torch
from binclf import dist
from binclf.nn.models import MLP, LogisticModel
from binclf.train.trainer import TrainConfig, Trainer

g = torch.Generator().manual_seed(1)
X = torch.randn(64, 5, generator=g)
y = (torch.rand(64, generator=g) < 0.4).float()
cfg = TrainConfig(batch_size=16, max_epochs=3, seed=0, verbose=False, compile=False, lr=0.01)

def fitted(kind, dp):
    torch.manual_seed(0)
    model = MLP(5, hidden=(8,), dropout=0.0, batchnorm=False) if kind == "mlp" else LogisticModel(5)
    Trainer(cfg, data_parallel=dp).fit(model, X, y)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

with dist.init() as ctx:
    diffs = {}
    for kind in ("mlp", "logistic"):  # the fused step and the autograd step
        two = fitted(kind, dist.data_parallel())
        one = fitted(kind, None)
        diffs[kind] = float((two - one).abs().max())
    # The average itself (Adam's update hardly changes if the gradients were summed instead).
    dp = dist.data_parallel()
    model = LogisticModel(5)
    dp.start(model, seed=0)
    for p in model.parameters():
        p.grad = torch.full_like(p, float(ctx.rank + 1))
    dp.sync_grads()
    diffs["mean"] = max(float((p.grad - 1.5).abs().max()) for p in model.parameters())
    if ctx.is_main:
        print(json.dumps(diffs))
'''


@pytest.mark.slow
def test_averaged_gradients_equal_the_single_process_gradient_of_the_global_batch(tmp_path):
    """No BatchNorm, no dropout: 2 ranks of 8 rows a step make exactly the steps of 1 process on 16 rows."""
    script = tmp_path / "exact.py"
    script.write_text(_EXACT)
    r = _run("-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    diffs = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(diffs) == {"mlp", "logistic", "mean"}
    assert all(d < 1e-5 for d in diffs.values()), diffs


def test_device_cuda_without_a_gpu_is_one_line_exit_2(small, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda trains on it")
    r = _run("-m", "binclf", "train", small, *FLAGS, "-o", "m", "--device", "cuda", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --device cuda: no CUDA GPU is visible to torch; use --device cpu"), r.stderr[-2000:]
    assert not (tmp_path / "m").exists()

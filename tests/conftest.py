"""Shared fixtures: the project's own copies of the development tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def bananas_splits():
    """The bananas table (curved boundary), split 60/20/20 with a fixed seed."""
    df = pd.read_csv(DATA / "bananas.csv")
    X = df[["x1", "x2"]].to_numpy(np.float32)
    y = df["label"].to_numpy(np.float32)
    idx = np.random.default_rng(0).permutation(len(y))
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return tuple((X[i], y[i]) for i in (idx[:a], idx[a:b], idx[b:]))


@pytest.fixture
def two_threads():
    """Two torch threads and no cached thread/kernel probes; both restored after the test."""
    import torch

    from binclf import runtime

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    runtime.reset_probes()
    yield
    torch.set_num_threads(before)
    runtime.reset_probes()

"""binclf.runtime: numpy/scipy BLAS on one thread around training, restored after, torch untouched."""

import importlib

import numpy as np
import pytest
import torch

from binclf.runtime import one_blas_thread, with_one_blas_thread


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_runs_on_one_thread_inside_and_is_restored_after():
    importlib.import_module("scipy.linalg")  # its BLAS is one of those limited
    before = _blas_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS library here")
    torch_threads = torch.get_num_threads()
    with one_blas_thread():
        assert _blas_threads() == [1] * len(before)
        assert torch.get_num_threads() == torch_threads  # torch's own pool is not numpy's BLAS
    assert _blas_threads() == before


def test_the_decorator_limits_the_call_and_keeps_its_result():
    seen = []

    @with_one_blas_thread
    def f(a, *, b):
        seen.append(_blas_threads())
        return np.ones((3, 3)) @ np.full(3, a) + b

    assert f(2.0, b=1.0).tolist() == [7.0, 7.0, 7.0]
    assert f.__name__ == "f"
    assert all(n == 1 for n in seen[0])

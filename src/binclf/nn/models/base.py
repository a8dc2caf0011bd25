"""What every binclf model shares: the output-bias initialisation and a registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from binclf.numeric import logit

__all__ = ["encoded_network", "init_output_bias", "build_model", "model_config", "model_names", "register"]

_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: make a model buildable by name from a JSON config."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        _REGISTRY[name] = cls
        cls.model_name = name
        return cls

    return deco


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`: the model kinds a bundle may hold (``--model`` offers fewer)."""
    return sorted(_REGISTRY)


def build_model(name: str, *, seed: int | None = None, **config: Any) -> nn.Module:
    """Build a registered model from its name and constructor arguments.

    With ``seed`` the initial weights are reproducible, without touching the
    caller's global random state.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {model_names()}") from None
    if seed is None:
        return cls(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**config)


# Ensemble members of a TabM built by binclf (its class default, 16, is for larger tables).
TABM_K = 8


def model_config(
    name: str,
    *,
    n_features: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    batchnorm: bool = True,
    n_numeric: int = 0,
    bins: int | None = None,
) -> dict[str, Any]:
    """Constructor arguments of model ``name``, as ``train_table`` and ``BinaryClassifier`` build it.

    The one place a model's config is assembled; the result is what a bundle
    stores (``build_model(name, **config)`` rebuilds the model).

    Parameters
    ----------
    name : str
        ``"logistic"``, ``"mlp"``, ``"ple_mlp"`` or ``"tabm"``.
    n_features : int
        Width of the model's input.
    hidden, dropout, batchnorm
        The network's layer widths, dropout rate and BatchNorm (MLP, PLE-MLP;
        TabM has no BatchNorm).
    n_numeric : int
        ``ple_mlp``: how many leading inputs are numbers to encode.
    bins : int, optional
        ``ple_mlp``: encoding bins per number (the model's default if None).

    Returns
    -------
    dict
        Keyword arguments for :func:`build_model`.
    """
    if name == "logistic":
        return {"n_features": n_features}
    body = {"n_features": n_features, "hidden": list(hidden), "dropout": dropout}
    if name == "tabm":
        return {**body, "k": TABM_K}
    body["batchnorm"] = batchnorm
    if name == "ple_mlp":
        body["n_numeric"] = n_numeric
        if bins is not None:
            body["bins"] = bins
    return body


@torch.no_grad()
def init_output_bias(model: nn.Module, prior: float) -> None:
    """Set the output bias to ``logit(prior)``, the loss-minimising constant logit.

    Starting there, the first steps learn features instead of the base rate, and
    the initial loss equals the entropy of the prior rather than ``log 2``.
    ``prior`` is the (weighted) fraction of positives in the training labels.
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    output = getattr(model, "output", None)
    if not isinstance(output, nn.Linear) or output.bias is None:
        raise TypeError(f"{type(model).__name__} has no `output` nn.Linear with a bias")
    output.bias.fill_(float(logit(prior, eps=0.0)))


def encoded_network(model: nn.Module) -> nn.Module | None:
    """The network behind a model's parameter-free ``encode`` stage (e.g. PLEMLP), or None.

    Such a model computes ``network(encode(x))``: the trainer encodes the rows
    once and trains the network, and prediction runs the network's fast path.
    """
    network = getattr(model, "network", None)
    if callable(getattr(model, "encode", None)) and isinstance(network, nn.Module):
        return network
    return None

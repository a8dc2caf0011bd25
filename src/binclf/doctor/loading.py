"""Building the user's objects from ``FILE.py:NAME``: import the file, then instantiate a class
(passing the number of features), call a factory, or return a function or instance as it is.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from binclf.doctor.findings import _first_line
from binclf.errors import ConfigError

__all__ = ["load_object"]

# Constructor parameters that take the number of input features.
_FEATURE_PARAMS = (
    "n_features",
    "in_features",
    "num_features",
    "n_inputs",
    "num_inputs",
    "input_dim",
    "in_dim",
    "dim_in",
    "input_size",
    "input_features",
    "n_in",
    "d_in",
    "d_features",
)

def _import_file(path: Path) -> Any:
    name = f"_binclf_doctor_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses, pickling-free torch.jit etc. can find it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"importing {path} raised {type(exc).__name__}: {_first_line(exc)}") from exc
    return module


def _required_params(fn: Callable[..., Any], *, skip_self: bool) -> list[inspect.Parameter] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if skip_self and params and params[0].name == "self":
        params = params[1:]
    return [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _call_with_features(
    obj: Callable[..., Any], label: str, n_features: int | None, *, is_class: bool
) -> Any:
    required = _required_params(obj, skip_self=False)
    kwargs: dict[str, Any] = {}
    args: tuple[Any, ...] = ()
    if required:
        # One required argument is the number of features: by its name, or, for a
        # class, whatever it is called (``Net(in_size)``).
        if len(required) == 1 and (required[0].name in _FEATURE_PARAMS or is_class):
            if n_features is None:
                raise ConfigError(
                    f"{label} needs `{required[0].name}` (the number of features), but it is unknown here"
                )
            if required[0].kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[required[0].name] = n_features
            else:
                args = (n_features,)
        else:
            names = ", ".join(p.name for p in required)
            raise ConfigError(
                f"cannot build {label}: it requires ({names}); binclf doctor can only pass the "
                f"number of features (as one of {', '.join(_FEATURE_PARAMS[:4])} ...). "
                "Write a factory function in the file that builds it, and name that instead"
            )
    try:
        return obj(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        given = f"{n_features}" if args or kwargs else ""
        raise ConfigError(f"{label}({given}) raised {type(exc).__name__}: {_first_line(exc)}") from exc


def load_object(spec: str, *, n_features: int | None = None) -> Any:
    """Load ``"path/to/file.py:NAME"`` and build it.

    - an ``nn.Module`` subclass (or any class) is instantiated; a single required
      constructor argument (``n_features``, ``in_features``, ``input_dim`` ..., or
      whatever its name) gets ``n_features``;
    - a function with no required arguments is a factory and is called; one whose
      only required argument is named like ``n_features`` is called with it;
    - any other function (e.g. ``def my_loss(output, target)``) and any instance
      (``criterion = nn.BCELoss()``) is returned as is.

    Parameters
    ----------
    spec : str
        ``"FILE.py:NAME"``.
    n_features : int, optional
        The number of input features, for a constructor or factory that needs it.

    Returns
    -------
    object
        The built object (a model, a loss) or the named object itself.

    Raises
    ------
    ConfigError
        The file or the name is missing, the file fails to import, or the object
        cannot be built.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name or not name.isidentifier():
        raise ConfigError(f"expected FILE.py:NAME (e.g. model.py:Net), got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"file not found: {path} (from {spec!r})")
    module = _import_file(path)
    if not hasattr(module, name):
        available = sorted(
            k
            for k, v in vars(module).items()
            if not k.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
            and (inspect.isclass(v) or inspect.isfunction(v))
        )
        raise ConfigError(
            f"{path} has no {name!r}; classes and functions defined there: "
            f"{', '.join(available) or 'none'}"
        )
    obj = getattr(module, name)
    label = f"{path.name}:{name}"
    if inspect.isclass(obj):
        return _call_with_features(obj, label, n_features, is_class=True)
    if inspect.isfunction(obj):
        required = _required_params(obj, skip_self=False)
        if required is not None and (
            not required or (len(required) == 1 and required[0].name in _FEATURE_PARAMS)
        ):
            return _call_with_features(obj, label, n_features, is_class=False)
        return obj  # a loss function (output, target) or similar: used as is
    return obj

"""User code named in a config by ``package.module:function`` (custom clean steps, rule rewards)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def import_function(path: str, what: str = "function") -> Callable[..., Any]:
    """``package.module:function`` -> the function, with an error that names the path when it fails;
    ``what`` names the kind of plug-in in that error ("custom step", "reward")."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'{what}: {path!r} is not of the form "package.module:function"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r}: {e}") from e
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as e:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no {attr!r}") from e
    if not callable(target):
        raise ValueError(f"{what} {path!r}: {attr!r} is not callable")
    return target

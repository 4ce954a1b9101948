"""User code named in a config: by ``package.module:function`` (custom clean steps, rule rewards),
or by a name registered in a table (rewards, advantage estimators, policy losses)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def registrar(table: dict[str, F], what: str) -> Callable[[str], Callable[[F], F]]:
    """A decorator factory: ``@register("name")`` adds a function to ``table``; a second function
    under a name already taken is an error (``what`` names the kind in it)."""

    def register(name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in table and table[name] is not fn:
                raise ValueError(
                    f"a {what} named {name!r} is already registered ({table[name].__qualname__})"
                )
            table[name] = fn
            return fn

        return add

    return register


def import_function(path: str, what: str = "function") -> Callable[..., Any]:
    """``package.module:function`` -> the function, with an error that names the path when it fails;
    ``what`` names the kind of plug-in in that error ("custom step", "reward")."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'{what}: {path!r} is not of the form "package.module:function"')
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ImportError, and a SyntaxError or any error the module raises
        raise ValueError(
            f"{what} {path!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}"
        ) from e
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as e:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no {attr!r}") from e
    if not callable(target):
        raise ValueError(f"{what} {path!r}: {attr!r} is not callable")
    return target

"""The strategies by name: the built-in ones, and those registered with :func:`register_strategy`.

The ``strategy`` option, the CLI's ``--strategy`` choices, the eval's specs, the served
graph's and ``llava-cot serve``'s allowed values all read this registry, so a registered
strategy is accepted everywhere at once::

    register_strategy(MyStrategy())
    ChatLlavaCoT(strategy="my_strategy")

A built-in strategy is one module of this package, imported the first time it is asked
for (its module builds on :mod:`langchain_llava_cot.graph`, which reads the options, which
read this registry); adding one is that module and one line of :data:`BUILTIN`.
"""

from __future__ import annotations

import importlib
import threading

from langchain_llava_cot.strategies.base import SearchStrategy

__all__ = ["BUILTIN", "get_strategy", "register_strategy", "strategy_names"]

BUILTIN: dict[str, str] = {
    "greedy": "langchain_llava_cot.strategies.greedy:Greedy",
    "best_of_n": "langchain_llava_cot.strategies.best_of_n:BestOfN",
    "vote": "langchain_llava_cot.strategies.vote:Vote",
    "stage_beam": "langchain_llava_cot.strategies.stage_beam:StageBeam",
    "retrace": "langchain_llava_cot.strategies.retrace:Retrace",
    "dvts": "langchain_llava_cot.strategies.dvts:DVTS",
    "particle_filter": "langchain_llava_cot.strategies.particle_filter:ParticleFilter",
}
"""The built-in strategies: each name and the class (``module:Class``) that runs it."""

_registered: dict[str, SearchStrategy] = {}
_lock = threading.Lock()


def register_strategy(strategy: SearchStrategy, *, replace: bool = False) -> SearchStrategy:
    """Make ``strategy`` available as ``strategy=strategy.name`` everywhere; returns it.

    Raises:
        TypeError: ``strategy`` is not a :class:`SearchStrategy`.
        ValueError: its name is not a plain identifier, or is taken (pass ``replace=True`` to
            replace a strategy you registered; a built-in one cannot be replaced).
    """
    if not isinstance(strategy, SearchStrategy):
        msg = f"register_strategy takes a SearchStrategy instance, got {type(strategy).__name__}."
        raise TypeError(msg)
    name = strategy.name
    if not isinstance(name, str) or not name.isidentifier():
        msg = f"A strategy's name must be a plain identifier such as 'my_search', got {name!r}."
        raise ValueError(msg)
    with _lock:
        if name in BUILTIN:
            msg = f"{name!r} is a built-in strategy; give yours another name."
            raise ValueError(msg)
        if name in _registered and not replace and _registered[name] is not strategy:
            msg = f"A strategy named {name!r} is registered already; pass replace=True to replace it."
            raise ValueError(msg)
        _registered[name] = strategy
    return strategy


def get_strategy(name: str) -> SearchStrategy:
    """The strategy registered as ``name`` (a built-in one is loaded on first use)."""
    found = _registered.get(name)
    if found is not None:
        return found
    if name not in BUILTIN:
        msg = f"Unknown strategy {name!r}: use one of {', '.join(strategy_names())}."
        raise ValueError(msg)
    module, _, cls = BUILTIN[name].partition(":")
    strategy = getattr(importlib.import_module(module), cls)()
    with _lock:  # two threads may load it at once: both get the first one kept
        return _registered.setdefault(name, strategy)


def strategy_names() -> tuple[str, ...]:
    """Every strategy's name: the built-in ones in their order, then those registered since."""
    return (*BUILTIN, *(name for name in _registered if name not in BUILTIN))

"""Search strategies as plug-ins: one module per strategy behind one small interface, and a registry.

==================  ==========================  ===========================================
module              ``strategy=``               what it does
==================  ==========================  ===========================================
``stage_beam``      ``stage_beam``              N candidates per stage, the judge keeps one
                                                (the paper's method; the base of most others)
``greedy``          ``greedy``                  1 candidate per stage at temperature 0
``best_of_n``       ``best_of_n``               N whole answers, judged once
``vote``            ``vote``                    N whole answers, a (score-weighted) majority
``retrace``         ``retrace``                 stage_beam keeping ``keep`` captions, going
                                                back when no reasoning scores well (SWIRES)
``dvts``            ``dvts``                    N/M independent subtrees, each a beam of width
                                                M kept by score; the best leaf wins
``particle_filter`` ``particle_filter``         N particles, resampled at each stage in
                                                proportion to their scores
``adaptive``        (``adaptive=True``)         a step sampled in rounds (stage_beam, retrace)
``paths``           --                          what dvts and particle_filter share: several
                                                paths sampled in one call and scored alike
==================  ==========================  ===========================================

:class:`SearchStrategy` (:mod:`.base`) is the interface; :func:`register_strategy` makes a
strategy of your own a ``strategy=`` value everywhere (the chat model, the graph's context,
the CLI, the eval, the served graph)::

    from langchain_llava_cot.strategies import register_strategy
    from langchain_llava_cot.strategies.stage_beam import StageBeam

    class Wide(StageBeam):
        name = "wide"

        def width(self, options):
            return 2 * options.candidates

    register_strategy(Wide())
    ChatLlavaCoT(strategy="wide")

The built-in strategies' classes are importable from here too (``from
langchain_llava_cot.strategies import StageBeam``); each module is loaded the first time
it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from langchain_llava_cot.strategies.base import Expanded, Judged, MaybeStep, SearchStrategy
from langchain_llava_cot.strategies.registry import BUILTIN, get_strategy, register_strategy, strategy_names

__all__ = [
    "BUILTIN",
    "DVTS",
    "BestOfN",
    "Expanded",
    "Greedy",
    "Judged",
    "MaybeStep",
    "ParticleFilter",
    "Retrace",
    "SearchStrategy",
    "StageBeam",
    "Vote",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]

_CLASSES = {path.partition(":")[2]: path.partition(":")[0] for path in BUILTIN.values()}


def __getattr__(name: str) -> Any:
    """The built-in strategies' classes, each module imported when first asked for."""
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)

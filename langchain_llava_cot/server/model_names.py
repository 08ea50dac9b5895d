"""Search options in the model's name, as optillm chooses its approach: ``SEARCH@MODEL``.

Clients that can set nothing but the model (Open WebUI's model list, many scripts) choose the
search by name. ``SEARCH`` is a strategy, then dash-separated parts, each a whole number
(``candidates``), a judge (``judge``) or the word ``adaptive``; ``MODEL`` is the served name:

==========================================  =====================================================
model                                       search options
==========================================  =====================================================
``llava-cot-demo``                          the server's defaults
``greedy@llava-cot-demo``                   ``strategy="greedy"``
``stage_beam-8@llava-cot-demo``             ``strategy="stage_beam", candidates=8``
``best_of_n-4-verifier@llava-cot-demo``     ``strategy="best_of_n", candidates=4, judge="verifier"``
``stage_beam-8-adaptive@llava-cot-demo``    ``strategy="stage_beam", candidates=8, adaptive=True``
==========================================  =====================================================

>>> search_of("best_of_n-4-verifier@llava-cot-demo", "llava-cot-demo")
{'strategy': 'best_of_n', 'candidates': 4, 'judge': 'verifier'}
"""

from __future__ import annotations

from typing import Any, get_args

from langchain_llava_cot.judges import BuiltinJudge
from langchain_llava_cot.server.errors import APIError
from langchain_llava_cot.strategies import strategy_names

__all__ = ["CLIENT_JUDGES", "listed_models", "search_of"]

CLIENT_JUDGES: tuple[str, ...] = tuple(j for j in get_args(BuiltinJudge) if j != "human")
"""The judges a client may name (the human judge waits for a person at the server)."""


def listed_models(served: str) -> list[str]:
    """What ``GET /v1/models`` lists: the served name, then one name per strategy."""
    return [served, *(f"{strategy}@{served}" for strategy in strategy_names())]


def search_of(model: str, served: str) -> dict[str, Any]:
    """The search options a request's ``model`` names; raises :class:`APIError` (404, 400)."""
    search, at, name = model.rpartition("@")
    if name != served:
        msg = (
            f"The model {model!r} does not exist here: this server serves {served!r} "
            "(GET /v1/models lists the names)."
        )
        raise APIError(404, msg, code="model_not_found", param="model")
    if not at:
        return {}
    strategy, *parts = search.split("-")
    if strategy not in strategy_names():
        msg = (
            f"The model name {model!r} starts with {strategy!r}, which is no strategy: write "
            f"STRATEGY[-N][-JUDGE][-adaptive]@{served}, with STRATEGY one of {', '.join(strategy_names())}."
        )
        raise APIError(400, msg, code="invalid_model_name", param="model")
    options: dict[str, Any] = {"strategy": strategy}
    for part in parts:
        option, value = _option_of(part, model)
        if option in options:
            msg = f"The model name {model!r} sets {option} twice."
            raise APIError(400, msg, code="invalid_model_name", param="model")
        options[option] = value
    return options


def _option_of(part: str, model: str) -> tuple[str, Any]:
    if part.isdigit():
        return "candidates", int(part)
    if part in CLIENT_JUDGES:
        return "judge", part
    if part == "adaptive":
        return "adaptive", True
    msg = (
        f"The model name {model!r} has the part {part!r}; after the strategy, each part is a number of "
        f"candidates, a judge ({', '.join(CLIENT_JUDGES)}) or 'adaptive'."
    )
    raise APIError(400, msg, code="invalid_model_name", param="model")

"""Forced tool calls on a server that decodes under a grammar.

    SampleRequest with a tool-call constraint, continuing its prefix, on a server
    whose probe found grammars
      -> :func:`server_grammar`: the call's grammar
         (:func:`~langchain_llava_cot.backends._grammar.tool_call_ebnf`) in the field the
         server reads: vLLM's ``structured_outputs`` (EBNF), llama.cpp's ``grammar`` (GBNF)
      -> :meth:`ServerGrammar.stops`: only the stop strings the grammar writes at its
         end, sent and cut: any other could match inside the call and end it there
      -> :meth:`ServerGrammar.closed`: a reply its token limit cut inside the call,
         completed the shortest way the grammar allows (the server cannot know how many
         tokens the call has left, so it cannot close in time itself)

Without xgrammar installed a forced call is asked for by the prompt alone (a warning says so).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from langchain_llava_cot.backends._grammar import completed_call, stops_under_grammar, to_gbnf, tool_call_ebnf
from langchain_llava_cot.backends.base import Sample, SampleRequest, ToolCallConstraint
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities

__all__ = ["CLOSED_AT_THE_LIMIT", "ServerGrammar", "server_grammar"]

logger = logging.getLogger(__name__)

CLOSED_AT_THE_LIMIT = "the token limit cut the forced call; its grammar closed it"
"""The repair a :class:`Sample` reports when :meth:`ServerGrammar.closed` completed its call."""


@dataclasses.dataclass(frozen=True)
class ServerGrammar:
    """A forced call's grammar as one server gets it."""

    constraint: ToolCallConstraint
    prefix: str
    payload_field: dict[str, Any]
    """The grammar's field of the request body."""

    def stops(self, stop: tuple[str, ...]) -> tuple[str, ...]:
        """The stop strings that end the reply, on the server and when it is read back."""
        return stops_under_grammar(stop)

    def closed(self, sample: Sample) -> Sample:
        """``sample``, its call completed if its token limit cut it inside the call."""
        if sample.finish_reason != "length":
            return sample
        text = completed_call(self.constraint, self.prefix, sample.text)
        if text is None:
            return sample
        repairs = (*sample.repairs, CLOSED_AT_THE_LIMIT)
        return dataclasses.replace(sample, text=text, finish_reason="stop", repairs=repairs)


def server_grammar(request: SampleRequest, continues: bool, caps: ServerCapabilities) -> ServerGrammar | None:
    """The grammar ``request``'s forced call is decoded under on this server, if any.

    Only a continuation of the prefix (``continues``) on a server that decodes under a
    grammar (vLLM's EBNF, llama.cpp's GBNF) is.
    """
    if request.tool_call is None or not continues or not (caps.grammar or caps.gbnf):
        return None
    ebnf = _call_ebnf(request)
    if ebnf is None:
        return None
    field = {"structured_outputs": {"grammar": ebnf}} if caps.grammar else {"grammar": _gbnf(ebnf)}
    return ServerGrammar(request.tool_call, request.prefix, field)


def _call_ebnf(request: SampleRequest) -> str | None:
    """The forced call's grammar as EBNF, or None (the tools prompt alone) without xgrammar."""
    assert request.tool_call is not None
    try:
        return tool_call_ebnf(request.tool_call, request.prefix)
    except ImportError:
        logger.warning("xgrammar is not installed: a forced tool call is asked for by the prompt alone.")
        return None


@functools.lru_cache(maxsize=64)
def _gbnf(ebnf: str) -> str:
    return to_gbnf(ebnf)

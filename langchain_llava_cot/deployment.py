"""The served graph's trust boundary: what a deployer configures, what a client may choose.

A client of the served graph (``graphs/llava_cot.py`` under ``langgraph dev`` or a
LangGraph server) sends a JSON context with each run. Two objects keep apart what each
side decides:

- :class:`Deployment` is the deployer's, read from environment variables (``langgraph.json``'s
  ``env``, or the server's environment): which backend runs (an OpenAI-compatible server, or
  models in-process on a device), the models a client may choose among, the judges, the limits,
  and how many models stay loaded.
- :class:`ClientContext` is what a client sends: the search options (:class:`SearchOptions`,
  checked as everywhere else) and ``model``, one of the deployer's models by name. A field that
  names a URL to call, a folder to load, a device, a backend or a limit is refused with an error
  that says it is the deployer's.

:meth:`Deployment.search_context` turns a client's context into the search's
:class:`SearchContext`, refusing what is beyond the deployer's limits before any model work.

==============================  ==================================  ===============================
variable                        default                             what it sets
==============================  ==================================  ===============================
``LLAVA_COT_MODELS``            the bundled demo model              models a client may name,
                                                                    comma-separated; the first is
                                                                    the default (folders, or with
                                                                    a base URL the served names)
``LLAVA_COT_BASE_URL``          none: models run in-process         an OpenAI-compatible server
``LLAVA_COT_API_KEY``           none                                that server's key
``LLAVA_COT_DEVICE``            ``cpu``                             device of in-process models
``LLAVA_COT_JUDGES``            every built-in judge                judges a client may name (one
                                                                    who names none gets auto, or
                                                                    the first if auto is not listed)
``LLAVA_COT_MAX_CANDIDATES``    16                                  cap on ``candidates``
``LLAVA_COT_MAX_RETRACES``      3                                   cap on ``max_retraces``
``LLAVA_COT_MAX_STAGE_TOKENS``  1024                                cap on any stage's token limit
``LLAVA_COT_MAX_LOADED_MODELS`` 2                                   models kept loaded at once
==============================  ==================================  ===============================

Example::

    deployment = Deployment.from_env()
    context = deployment.search_context({"strategy": "stage_beam", "candidates": 4})
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

from pydantic import model_validator
from typing_extensions import Self

from langchain_llava_cot.backends import create_backend
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges import BuiltinJudge
from langchain_llava_cot.options import (
    MAX_RETRACES,
    SearchContext,
    SearchOptions,
    checked,
    model_or_demo,
    whole_number,
)

__all__ = ["BUILTIN_JUDGES", "ClientContext", "Deployment"]

BUILTIN_JUDGES: tuple[str, ...] = get_args(BuiltinJudge)
"""The judges a client may name by default: every built-in one."""

_DEPLOYERS = {
    "base_url": "LLAVA_COT_BASE_URL",
    "device": "LLAVA_COT_DEVICE",
    "backend": "LLAVA_COT_MODELS and LLAVA_COT_BASE_URL",
    "max_candidates": "LLAVA_COT_MAX_CANDIDATES",
}
"""Fields a client may not set, and the variable that sets each on the server."""


def _refused(name: str, value: object) -> None:
    msg = (
        f"{name} is the deployer's choice, not a client's: the server sets it ({_DEPLOYERS[name]}). "
        "Leave it out of the context."
    )
    raise ValueError(msg)


class ClientContext(SearchOptions):
    """What a client of the served graph may choose: the search options, and one of the deployer's models.

    It is the served graph's ``context_schema``. ``base_url``, ``device``, ``backend`` and
    ``max_candidates`` are listed only to be refused: the server never takes a URL to call,
    a folder to load, a device or a limit from a client.
    """

    model: str | None = None
    """One of the deployer's models, by the name the deployer gave (None: the deployer's first)."""
    base_url: Annotated[None, checked(_refused, none=True)] = None
    """Refused: the deployer sets the server to call."""
    device: Annotated[None, checked(_refused, none=True)] = None
    """Refused: the deployer sets the device."""
    backend: Annotated[None, checked(_refused, none=True)] = None
    """Refused: the deployer sets the backend."""

    @model_validator(mode="after")
    def _no_limits_from_clients(self) -> Self:
        if "max_candidates" in self.model_fields_set:
            _refused("max_candidates", self.max_candidates)
        return self


@dataclass
class Deployment:
    """The deployer's configuration of the served graph (see the module's table of variables).

    Args:
        models: Models a client may name (folders, or with ``base_url`` the served names);
            the first is the default. Empty: the bundled demo model alone.
        base_url: An OpenAI-compatible server that serves ``models``; None runs them in-process.
        api_key: That server's key.
        device: Device of in-process models.
        judges: Built-in judges a client may name.
        max_candidates: Cap on a client's ``candidates``.
        max_retraces: Cap on a client's ``max_retraces``.
        max_stage_tokens: Cap on any stage's token limit a client asks for.
        max_loaded_models: Models kept loaded at once; the least recently used goes first.
        make_backend: How a model's name becomes a backend (None: :func:`create_backend` with
            ``base_url``, ``api_key`` and ``device``).
    """

    models: tuple[str, ...] = ()
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    device: str = "cpu"
    judges: tuple[str, ...] = BUILTIN_JUDGES
    max_candidates: int = 16
    max_retraces: int = 3
    max_stage_tokens: int = 1024
    max_loaded_models: int = 2
    make_backend: Callable[[str], VLMBackend] | None = field(default=None, repr=False)
    _loaded: OrderedDict[str, VLMBackend] = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.models = tuple(self.models) or (str(model_or_demo(None)),)
        if not all(isinstance(m, str) and m.strip() for m in self.models):
            msg = f"models must be names or folders, got {self.models!r} (LLAVA_COT_MODELS)."
            raise ValueError(msg)
        self.judges = tuple(self.judges)
        unknown = sorted(set(self.judges) - set(BUILTIN_JUDGES))
        if unknown or not self.judges:
            msg = (
                f"judges must be some of {', '.join(BUILTIN_JUDGES)}, got {self.judges!r} (LLAVA_COT_JUDGES)."
            )
            raise ValueError(msg)
        whole_number("max_candidates (LLAVA_COT_MAX_CANDIDATES)", self.max_candidates, low=1)
        whole_number("max_retraces (LLAVA_COT_MAX_RETRACES)", self.max_retraces, low=0, high=MAX_RETRACES)
        whole_number("max_stage_tokens (LLAVA_COT_MAX_STAGE_TOKENS)", self.max_stage_tokens, low=1)
        whole_number("max_loaded_models (LLAVA_COT_MAX_LOADED_MODELS)", self.max_loaded_models, low=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Deployment:
        """The deployment the ``LLAVA_COT_*`` environment variables describe (unset: the defaults)."""
        env = os.environ if environ is None else environ
        options: dict[str, Any] = {}
        if models := env.get("LLAVA_COT_MODELS", "").strip():
            options["models"] = tuple(m.strip() for m in models.split(","))
        if judges := env.get("LLAVA_COT_JUDGES", "").strip():
            options["judges"] = tuple(j.strip() for j in judges.split(","))
        for name in ("base_url", "api_key", "device"):
            if value := env.get(f"LLAVA_COT_{name.upper()}", "").strip():
                options[name] = value
        for name in ("max_candidates", "max_retraces", "max_stage_tokens", "max_loaded_models"):
            variable = f"LLAVA_COT_{name.upper()}"
            if value := env.get(variable, "").strip():
                try:
                    options[name] = int(value)
                except ValueError:
                    msg = f"{variable} must be a whole number, got {value!r}."
                    raise ValueError(msg) from None
        return cls(**options)

    def search_context(
        self, context: ClientContext | SearchContext | Mapping[str, Any] | None
    ) -> SearchContext:
        """The search's context for a client's, once it is within this deployment's limits.

        A :class:`SearchContext` is taken as it is: only code in the server's own process can
        make one (a client's JSON becomes a :class:`ClientContext`).
        """
        if isinstance(context, SearchContext):
            return context
        client = context if isinstance(context, ClientContext) else ClientContext(**dict(context or {}))
        model = self._check_limits(client)
        judge = self._judge_of(client)
        return SearchContext.of(client, self.backend(model), max_candidates=self.max_candidates, judge=judge)

    def _judge_of(self, client: ClientContext) -> Any:
        """The client's judge; one who named none gets ``auto``, or the deployer's first judge without it."""
        if "judge" in client.model_fields_set or client.judge in self.judges:
            return client.judge
        return self.judges[0]

    def _check_limits(self, client: ClientContext) -> str:
        """Refuse what is beyond this deployment's limits; return the model the client chose."""
        model = client.model or self.models[0]
        if model not in self.models:
            msg = f"model {client.model!r} is not served here: choose one of {list(self.models)}."
            raise ValueError(msg)
        judge = self._judge_of(client)
        if not isinstance(judge, str) or judge not in self.judges:
            msg = f"judge {judge!r} is not offered here: choose one of {list(self.judges)}."
            raise ValueError(msg)
        limits = (
            ("candidates", client.candidates, self.max_candidates, "LLAVA_COT_MAX_CANDIDATES"),
            ("max_retraces", client.max_retraces, self.max_retraces, "LLAVA_COT_MAX_RETRACES"),
            ("max_stage_tokens", max(client.stage_tokens.values()), self.max_stage_tokens,
             "LLAVA_COT_MAX_STAGE_TOKENS"),
        )  # fmt: skip
        for name, value, cap, variable in limits:
            if value > cap:
                msg = f"{name}={value} is above this server's cap of {cap} (set by its deployer, {variable})."
                raise ValueError(msg)
        return model

    def backend(self, model: str) -> VLMBackend:
        """The backend of one of :attr:`models`, loaded on first use; at most ``max_loaded_models`` stay."""
        if model not in self.models:
            msg = f"model {model!r} is not one of this deployment's models {list(self.models)}."
            raise ValueError(msg)
        with self._lock:
            if model in self._loaded:
                self._loaded.move_to_end(model)
                return self._loaded[model]
            while len(self._loaded) >= self.max_loaded_models:
                self._loaded.popitem(last=False)  # runs still using it keep their reference
            backend = self._make(model)
            self._loaded[model] = backend
            return backend

    @property
    def loaded_models(self) -> tuple[str, ...]:
        """The models loaded now, least recently used first."""
        with self._lock:
            return tuple(self._loaded)

    def _make(self, model: str) -> VLMBackend:
        if self.make_backend is not None:
            return self.make_backend(model)
        return create_backend(model, self.base_url, api_key=self.api_key, device=self.device)

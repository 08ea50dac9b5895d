"""Backend calls as values, so search logic is written once for sync and async.

Search steps and judges are generators: they ``yield`` a call and receive its result.
:func:`drive` runs such a generator with the backend's sync methods and
:func:`adrive` with its async ones (both through :mod:`langchain_llava_cot._driving`,
the one generator driver), so no search logic has a sync/async twin::

    def step(backend):
        [samples] = yield SampleCall((request,))
        return samples

    drive(step(backend), backend)          # or: await adrive(step(backend), backend)

:func:`together` runs several such steps side by side, merging the sample (or choice)
calls they ask for at once into one call: one batch for the judges of many paths.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from langchain_llava_cot import _driving
from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest, VLMBackend

T = TypeVar("T")


@dataclass(frozen=True)
class SampleCall:
    """Call :meth:`VLMBackend.sample` (of ``backend`` when given, else the search's own)."""

    requests: tuple[SampleRequest, ...]
    backend: VLMBackend | None = None

    def run(self, backend: VLMBackend) -> Any:
        return (self.backend or backend).sample(self.requests)

    async def arun(self, backend: VLMBackend) -> Any:
        return await (self.backend or backend).asample(self.requests)


@dataclass(frozen=True)
class ChoiceCall:
    """Call :meth:`VLMBackend.choose` (of ``backend`` when given, else the search's own)."""

    requests: tuple[ChoiceRequest, ...]
    backend: VLMBackend | None = None

    def run(self, backend: VLMBackend) -> Any:
        return (self.backend or backend).choose(self.requests)

    async def arun(self, backend: VLMBackend) -> Any:
        return await (self.backend or backend).achoose(self.requests)


@dataclass(frozen=True)
class FunctionCall:
    """Call a user function that may be sync or async."""

    function: Callable[..., Any | Awaitable[Any]]
    argument: Any
    blocking: bool = False
    """A sync function that computes for long (a model's forward pass): async runs give it a thread."""

    def run(self, backend: VLMBackend) -> Any:
        result = self.function(self.argument)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            msg = f"{self.function!r} is async: use ainvoke/astream, or pass a sync function."
            raise TypeError(msg)
        return result

    async def arun(self, backend: VLMBackend) -> Any:
        if self.blocking and not inspect.iscoroutinefunction(self.function):
            result = await asyncio.to_thread(self.function, self.argument)
        else:
            result = self.function(self.argument)
        return await result if inspect.isawaitable(result) else result


@dataclass(frozen=True)
class ClientCall:
    """Call a client that has a sync and an async form of one request (a served reward model)."""

    run_sync: Callable[[Any], Any]
    run_async: Callable[[Any], Awaitable[Any]]
    argument: Any

    def run(self, backend: VLMBackend) -> Any:
        return self.run_sync(self.argument)

    async def arun(self, backend: VLMBackend) -> Any:
        return await self.run_async(self.argument)


Call = Union[SampleCall, ChoiceCall, FunctionCall, ClientCall]  # noqa: UP007 - a runtime alias on Python 3.10
Step = Generator[Call, Any, T]
"""A piece of search logic that yields backend calls and returns a ``T``."""


def drive(step: Step[T], backend: VLMBackend) -> T:
    """Run ``step`` to completion with the backend's sync methods."""
    return _driving.drive(step, lambda call: call.run(backend))


async def adrive(step: Step[T], backend: VLMBackend) -> T:
    """Run ``step`` to completion with the backend's async methods."""
    return await _driving.adrive(step, lambda call: call.arun(backend))


def together(steps: Sequence[Step[T]]) -> Step[tuple[list[T], int]]:
    """Run ``steps`` side by side; the calls they ask for at the same time go out merged.

    The sample calls waiting at one moment, to the same backend, become one call with every
    step's requests (and so do choice calls), and each step gets its own part of the result:
    N judges of N paths cost one batched call. Other calls go one after another. Returns
    each step's value, in order, and how many calls the merging saved (the steps' own counts
    of calls, less that, is what was made).
    """
    values: dict[int, T] = {}
    waiting: dict[int, Call] = {}
    saved = 0

    def advance(i: int, answer: Any) -> None:
        try:
            waiting[i] = steps[i].send(answer)
        except StopIteration as done:
            values[i] = done.value
            waiting.pop(i, None)

    for i in range(len(steps)):
        advance(i, None)
    while waiting:
        batches: dict[tuple[type, int], list[int]] = {}
        for i, call in waiting.items():
            key: tuple[type, int]
            if isinstance(call, (SampleCall, ChoiceCall)):
                key = (type(call), id(call.backend))
            else:
                key = (type(call), -1 - i)  # a call of its own
            batches.setdefault(key, []).append(i)
        answers: dict[int, Any] = {}
        for members in batches.values():
            calls = [waiting[i] for i in members]
            if len(calls) == 1:
                answers[members[0]] = yield calls[0]
                continue
            sizes = [len(call.requests) for call in calls]  # type: ignore[union-attr]
            results = yield _merged(calls)
            saved += len(calls) - 1
            for i, start, size in zip(members, itertools.accumulate([0, *sizes]), sizes):
                answers[i] = results[start : start + size]
        for i, answer in answers.items():
            advance(i, answer)
    return [values[i] for i in range(len(steps))], saved


def _merged(calls: Sequence[Call]) -> Call:
    """One call with the requests of ``calls`` (sample or choice calls to one backend), in order."""
    first = calls[0]
    if isinstance(first, SampleCall):
        samples = tuple(r for call in calls if isinstance(call, SampleCall) for r in call.requests)
        return SampleCall(samples, first.backend)
    assert isinstance(first, ChoiceCall)
    choices = tuple(r for call in calls if isinstance(call, ChoiceCall) for r in call.requests)
    return ChoiceCall(choices, first.backend)


def finished(value: T) -> Step[T]:
    """A step that makes no call and returns ``value``."""
    return value
    yield  # pragma: no cover - makes this a generator

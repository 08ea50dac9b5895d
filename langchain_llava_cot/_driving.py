"""One driver for logic written as generators: each yielded request is handled and its result sent back.

Logic that waits on the outside world is written once, as a generator that yields what
it needs and receives the result, so it has no sync and async twins: search steps and
judges yield backend calls (:mod:`langchain_llava_cot._calls`), the OpenAI-compatible
backend's plans yield the posts to make, and its retry loop yields posts and pauses.
:func:`drive` runs such a generator with a sync handler, :func:`adrive` with an async
one. A handler's exception ends the run and reaches the caller.

>>> def doubled():
...     a = yield 1
...     b = yield 2
...     return a + b
>>> drive(doubled(), lambda asked: asked * 10)
30
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

__all__ = ["adrive", "drive"]

Asked = TypeVar("Asked")
Answer = TypeVar("Answer")
T = TypeVar("T")


def drive(logic: Generator[Asked, Answer, T], handle: Callable[[Asked], Answer]) -> T:
    """Run ``logic`` to completion, answering each request with ``handle``; its return value."""
    try:
        asked = next(logic)
        while True:
            asked = logic.send(handle(asked))
    except StopIteration as done:
        return done.value


async def adrive(logic: Generator[Asked, Answer, T], handle: Callable[[Asked], Awaitable[Answer]]) -> T:
    """Run ``logic`` to completion, answering each request with the awaited ``handle``."""
    try:
        asked = next(logic)
        while True:
            asked = logic.send(await handle(asked))
    except StopIteration as done:
        return done.value

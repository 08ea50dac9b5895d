"""One request's search as a task of its own, cancelled when its client goes away.

:class:`SearchRun` runs a chat model's chunk stream in its own task and hands the chunks out
in order; :func:`cancel_on_disconnect` cancels it when the client's connection closes. The
cancellation reaches the graph's running node, which stops waiting on the backend: the
transformers backend drops the run's queued model calls and a call already in its batch
finishes without it, so the engine goes back to the other clients' work.

>>> import asyncio
>>> async def chunks():
...     yield "summary"
...     yield "caption"
>>> async def read():
...     run = SearchRun(chunks())
...     return [await run.next(), await run.next(), await run.next()]
>>> asyncio.run(read())
['summary', 'caption', None]
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["ClientGone", "SearchRun", "cancel_on_disconnect"]

_END = object()
_CANCELLED = object()


class ClientGone(Exception):
    """The client closed its connection; its search was cancelled."""


class SearchRun:
    """The chunks of ``chunks`` (an async iterator), produced by a task of their own.

    ``on_done`` is called with the run once its task has ended, however it ended.
    """

    def __init__(
        self, chunks: AsyncIterator[Any], on_done: Callable[[SearchRun], object] | None = None
    ) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(chunks), name="llava-cot search")
        self._task.add_done_callback(self._note_cancelled)  # also when cancelled before it started
        if on_done is not None:
            self._task.add_done_callback(lambda _: on_done(self))

    async def _pump(self, chunks: AsyncIterator[Any]) -> None:
        try:
            async for chunk in chunks:
                self._queue.put_nowait(chunk)
        except Exception as error:  # noqa: BLE001 - handed to the reader, never lost
            self._queue.put_nowait(error)
        else:
            self._queue.put_nowait(_END)

    def _note_cancelled(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._queue.put_nowait(_CANCELLED)

    async def next(self) -> Any:
        """The next chunk, or None after the last; raises the search's error, or :class:`ClientGone`."""
        item = await self._queue.get()
        if item is _END or item is _CANCELLED or isinstance(item, Exception):
            self._queue.put_nowait(item)  # every later call answers the same
        if item is _END:
            return None
        if item is _CANCELLED:
            raise ClientGone
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> None:
        """Stop the search (nothing happens if it has finished)."""
        self._task.cancel()

    @property
    def done(self) -> bool:
        """Whether the search's task has ended."""
        return self._task.done()


async def cancel_on_disconnect(receive: Any, run: SearchRun) -> None:
    """Cancel ``run`` once the ASGI ``receive`` channel says the client disconnected.

    Call it after the request body was read: every later message is the disconnect.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            run.cancel()
            return

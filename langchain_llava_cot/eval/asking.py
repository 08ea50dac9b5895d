"""Asking one question with one strategy: through one shared backend, or in worker processes.

An :class:`Answerer` owns what answers: a ready backend or LangChain chat model, a served model
(checked before the first question, :func:`~langchain_llava_cot.eval.serving.served_backend`), the
bundled demo model or a model folder loaded in-process at first use, or ``workers`` processes that
each load their own copy with one torch thread. Each question is asked through a
:class:`~langchain_llava_cot.chat_models.ChatLlavaCoT` made for the strategy (:func:`chat_model`),
seeded by its position so runs repeat, and comes back as an :class:`Answer`: the conclusion, the
search record, the token counts and the seconds it took.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_llava_cot.eval.strategies import StrategySpec
from langchain_llava_cot.options import model_or_demo

__all__ = ["Answer", "Answerer", "chat_model", "local_model"]


@dataclass(frozen=True)
class Answer:
    """One answer as the model gave it, before scoring."""

    content: str
    """The conclusion (the message's content)."""
    record: dict[str, Any]
    """The search record (``response_metadata["llava_cot"]``): candidates, judge decisions, usage."""
    usage: dict[str, Any]
    """The message's token counts (``usage_metadata``)."""
    seconds: float
    """Wall time of this question alone."""


class Answerer:
    """Asks questions with a strategy: through one shared backend, or in worker processes.

    Args:
        model: Model folder answered in-process (None: the bundled demo model).
        backend: A ready ``VLMBackend`` or LangChain chat model.
        base_url: An OpenAI-compatible server.
        served_model: The served model's name (None: the one the server lists).
        api_key: The server's API key.
        timeout: Seconds one reply of the server may take (None: the backend's default).
        workers: Processes that each load the in-process model (1: none, answer in this process).
        concurrency: Questions in flight at once in this process.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        backend: Any = None,
        base_url: str | None = None,
        served_model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        workers: int = 1,
        concurrency: int = 1,
    ) -> None:
        self._model, self._backend, self._base_url = model, backend, base_url
        self._served_model, self._api_key, self._timeout = served_model, api_key, timeout
        self._workers, self._concurrency = workers, concurrency
        self._pool: Any = None

    def ready_backend(self) -> Any:
        """The shared backend, made (the model loaded, or the server checked) at first use."""
        if self._backend is None:
            if self._base_url is not None:
                from langchain_llava_cot.eval.serving import served_backend

                self._backend = served_backend(
                    self._base_url,
                    self._served_model,
                    self._api_key,
                    max_concurrency=max(8, self._concurrency),
                    timeout=self._timeout,
                )
            else:
                from langchain_llava_cot.backends.transformers import TransformersBackend

                self._backend = TransformersBackend(str(self._model_folder()))
        return self._backend

    def _model_folder(self) -> Path:
        return local_model(model_or_demo(self._model))

    def _ready_pool(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(self._model_folder()),),
            )
        return self._pool

    async def ask(self, spec: StrategySpec, item: Any, options: dict[str, Any]) -> Answer:
        """Ask ``item`` (an eval question or a demo example) with ``spec``'s search and ``options``."""
        if self._workers > 1:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._ready_pool(), _worker_ask, spec, item, options)
        llm = chat_model(self.ready_backend(), spec, options)
        seed = _seed(item, options)
        random.seed(seed)
        started = time.perf_counter()
        message = await llm.ainvoke([item.message()], seed=seed)
        return _answer(message, time.perf_counter() - started)

    @property
    def in_flight(self) -> int:
        """Questions asked at once."""
        return self._workers if self._workers > 1 else self._concurrency

    def close(self) -> None:
        """Stop the worker processes, if any ran (a shared backend stays the caller's)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def chat_model(backend: Any, spec: StrategySpec, options: dict[str, Any]) -> Any:
    """The :class:`~langchain_llava_cot.chat_models.ChatLlavaCoT` answering with ``spec`` on ``backend``."""
    from langchain_llava_cot.chat_models import ChatLlavaCoT

    return ChatLlavaCoT(
        backend=backend,
        strategy=spec.strategy,  # type: ignore[arg-type]
        candidates=spec.candidates,
        adaptive=spec.adaptive,
        judge=spec.judge or "pairwise",
        temperature=options["temperature"],
        top_p=options["top_p"],
        max_stage_tokens=options["max_stage_tokens"],
    )


def local_model(model: str | Path) -> Path:
    """The model folder ``model`` names; a :class:`FileNotFoundError` that says what to pass if missing."""
    path = Path(model).expanduser()
    if not path.is_dir():
        msg = f"Model folder {str(path)!r} does not exist; pass a model folder, or --base-url for a server."
        raise FileNotFoundError(msg)
    return path


def _seed(item: Any, options: dict[str, Any]) -> int:
    """The question's seed: the run's seed plus its position (a file's row, the demo's index)."""
    return int(options["seed"]) + int(getattr(item, "position", item.index))


def _answer(message: Any, seconds: float) -> Answer:
    return Answer(
        str(message.content),
        message.response_metadata["llava_cot"],
        dict(message.usage_metadata or {}),
        seconds,
    )


_WORKER: dict[str, Any] = {}
"""A worker process's backend, loaded once by :func:`_init_worker`."""


def _init_worker(model: str) -> None:
    import torch

    from langchain_llava_cot.backends.transformers import TransformersBackend

    torch.set_num_threads(1)
    _WORKER["backend"] = TransformersBackend(model)


def _worker_ask(spec: StrategySpec, item: Any, options: dict[str, Any]) -> Answer:
    llm = chat_model(_WORKER["backend"], spec, options)
    seed = _seed(item, options)
    random.seed(seed)
    started = time.perf_counter()
    message = llm.invoke([item.message()], seed=seed)
    return _answer(message, time.perf_counter() - started)

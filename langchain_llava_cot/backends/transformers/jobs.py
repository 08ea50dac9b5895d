"""Requests as jobs of the batch queue: their checks, how they group into shared calls, the worker."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.backends._batching import BatchQueue, Job
from langchain_llava_cot.backends._grammar import stages_to_write
from langchain_llava_cot.backends.base import SampleRequest

if TYPE_CHECKING:
    from langchain_llava_cot.backends.transformers.backend import TransformersBackend
    from langchain_llava_cot.backends.transformers.inputs import Inputs
    from langchain_llava_cot.backends.transformers.prefill import Prefill
    from langchain_llava_cot.backends.transformers.prompts import Prompts


def checked_samples(requests: Sequence[SampleRequest]) -> list[SampleRequest]:
    """Validate in the caller's thread, so a bad request fails before it is queued."""
    for request in requests:
        if request.tool_call is not None:
            stages_to_write(request.prefix)  # a constrained continuation starts after a stage's tag
    return list(requests)


def group_key(request: SampleRequest, caller: int) -> tuple:
    """Requests with equal keys can share one ``generate`` call.

    Seeded sampling keeps its caller in the key: a seeded call must give the same
    samples whoever else is asking at the same time. A forced tool call puts its grammar
    in the key: one ``generate`` call decodes under one grammar.
    """
    has_images = bool(request.conversation.images)
    grammar = None if request.tool_call is None else (request.tool_call.key, stages_to_write(request.prefix))
    if request.temperature == 0:
        return (0.0, None, None, has_images, grammar)
    owner = caller if request.seed is not None else None
    return (request.temperature, request.top_p, request.seed, owner, has_images, grammar)


def chunks(members: list, sizes: list[int], limit: int) -> Iterator[list]:
    """Split ``members`` into runs whose ``sizes`` add up to at most ``limit`` (one at least)."""
    chunk: list = []
    total = 0
    for member, size in zip(members, sizes):
        if chunk and total + size > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(member)
        total += size
    if chunk:
        yield chunk


def weak_runner(backend: TransformersBackend) -> Callable[[Sequence[Job]], list[Any]]:
    """The queue's batch runner, holding the backend weakly so it can be collected."""
    ref = weakref.ref(backend)

    def run(jobs: Sequence[Job]) -> list[Any]:
        found = ref()
        if found is None:
            msg = "The TransformersBackend was garbage-collected; keep a reference while calling it."
            raise RuntimeError(msg)
        return found._run_jobs(jobs)

    return run


def shut_down(queue: BatchQueue, prompts: Prompts, inputs: Inputs, prefill: Prefill) -> None:
    """Stop the worker and release the caches (the backend's finalizer)."""
    queue.close()
    prompts.close()
    inputs.close()
    prefill.clear()

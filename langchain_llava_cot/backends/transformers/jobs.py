"""Requests as jobs of the batch queue: their checks, how they group into shared calls, the worker."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.backends._batching import BatchQueue, Job
from langchain_llava_cot.backends._grammar import stages_to_write
from langchain_llava_cot.backends._prefix_cache import (
    PrefixCache,
    common_length,
)
from langchain_llava_cot.backends._vision_cache import (
    ImageFeatureCache,
    content_key,
)
from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, SampleRequest
from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.images import decode_image

if TYPE_CHECKING:
    from langchain_llava_cot.backends.transformers.backend import TransformersBackend


def _pictures_of(prompts: list[tuple[Conversation, str]]) -> list[bytes]:
    """Every picture of the prompts, row by row, in the order the processor sees them."""
    return [image for conversation, _ in prompts for image in conversation.images]


def _checked_samples(requests: Sequence[SampleRequest]) -> list[SampleRequest]:
    """Validate in the caller's thread, so a bad request fails before it is queued."""
    for request in requests:
        _check_images(request.conversation)
        if request.tool_call is not None:
            stages_to_write(request.prefix)  # a constrained continuation starts after a stage's tag
    return list(requests)


def _checked_choices(requests: Sequence[ChoiceRequest]) -> list[ChoiceRequest]:
    for request in requests:
        _check_images(request.conversation)
    return list(requests)


def _check_images(conversation: Conversation) -> None:
    """Decode every image now (cached), so unreadable bytes fail in the caller."""
    for image in conversation.images:
        decode_image(image)


def _group_key(request: SampleRequest, caller: int) -> tuple:
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


def _chunks(members: list, sizes: list[int], limit: int) -> Iterator[list]:
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


def _weak_runner(backend: TransformersBackend) -> Callable[[Sequence[Job]], list[Any]]:
    """The queue's batch runner, holding the backend weakly so it can be collected."""
    ref = weakref.ref(backend)

    def run(jobs: Sequence[Job]) -> list[Any]:
        found = ref()
        if found is None:
            msg = "The TransformersBackend was garbage-collected; keep a reference while calling it."
            raise RuntimeError(msg)
        return found._run_jobs(jobs)

    return run


def _shut_down(queue: BatchQueue, images: ImageFeatureCache, prefixes: PrefixCache) -> None:
    queue.close()
    images.close()
    prefixes.clear()


@dataclass
class _Prompt:
    """One prompt as the model reads it: token ids, image positions and image inputs."""

    conversation: Conversation
    text: str
    ids: list[int]
    key: tuple[str, ...]
    """Content keys of the prompt's images: the prefix cache's namespace."""
    images: tuple[int, ...]
    """Positions of the image tokens in ``ids``."""
    inputs: dict[str, Any] | None = None
    """The processor's image inputs (features or pixels) for this prompt alone."""
    tiles: Any = None
    """Mllama, one picture: its ``[1, tiles]`` cross-attention mask row (None otherwise)."""

    def extras(self, backend: TransformersBackend) -> dict[str, Any]:
        """The image inputs, made on first use."""
        if self.inputs is None:
            inputs = backend._encode([(self.conversation, self.text)])
            self.inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        return self.inputs


def _choice_results(
    splits: list, rows: list[_Prompt], logits: Any, starts: list[int], *, single: bool
) -> list[ChoiceResult]:
    """Option log-probabilities read from the tail logits of :meth:`TransformersBackend._read_tails`."""
    import torch

    results = []
    if single:
        for index, (options, row, start) in enumerate(zip(splits, rows, starts)):
            last = torch.log_softmax(logits[index, len(row.ids) - start - 1].float(), dim=-1)
            results.append(
                ChoiceResult(
                    logprobs=tuple(float(last[tokens[0]]) for tokens in options), prompt_tokens=len(row.ids)
                )
            )
        return results
    index = 0
    for options in splits:
        scores = []
        for tokens in options:
            row, start = rows[index], starts[index]
            end = len(row.ids) - start  # suffix length; the option is its last len(tokens) tokens
            picked = torch.log_softmax(logits[index, end - len(tokens) - 1 : end - 1].float(), dim=-1)
            targets = torch.tensor(row.ids[len(row.ids) - len(tokens) :], device=picked.device)
            scores.append(float(picked.gather(-1, targets.unsqueeze(-1)).sum()))
            index += 1
        prompt_tokens = len(rows[index - len(options)].ids) - len(options[0])
        results.append(ChoiceResult(logprobs=tuple(scores), prompt_tokens=prompt_tokens))
    return results


def _shared_lengths(rows: list[_Prompt], needs: list[int]) -> dict[tuple, tuple[int, int, int]] | None:
    """Per image key: (first row, tokens its rows share, rows), leaving ``needs[row]`` tokens to each.

    None when some group's shared part would not hold all of its image tokens or
    would be empty (those prompts are read whole instead).
    """
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(row.key, []).append(index)
    shared = {}
    for key, members in groups.items():
        first = rows[members[0]]
        length = min(len(rows[i].ids) - needs[i] for i in members)
        for i in members[1:]:
            length = min(length, common_length(first.ids, rows[i].ids))
        if length < 1 or any(row.images and row.images[-1] >= length for row in (rows[i] for i in members)):
            return None
        shared[key] = (members[0], length, len(members))
    return shared


def _image_key(conversation: Conversation) -> tuple[str, ...]:
    return tuple(content_key(image) for image in conversation.images)

"""In-process backend: a Hugging Face vision-language model loaded with ``transformers``.

:class:`TransformersBackend` is the public face; its collaborators each own one part:

- :mod:`.prompts`: each request's prompt prepared once, in the caller's thread (the
  decoded picture, the chat template, the tokens, the processed pixels);
- :mod:`.inputs`: prepared prompts as batches, and the image feature cache
  (:mod:`.vision_cache`: each distinct picture encoded once, its features handed to
  ``generate`` and ``forward`` instead of pixels where the architecture allows);
- :mod:`.attention`: where the model's pictures live in its KV cache, chosen once
  (prompt tokens, or Mllama's cross-attention layers);
- :mod:`.prefill`: prompts read once through the prefix KV cache (:mod:`.prefix_cache`),
  and its counters;
- :mod:`.decoding`: generation settings and seeds, per-row stops, the cut samples;
- :mod:`.constrained`: forced tool calls decoded under their grammar, each row ended and closed in time;
- :mod:`.scoring`: the options' log-probabilities for judges;
- :mod:`.jobs`: request checks, grouping into shared calls, the worker's lifetime.

The way of :meth:`TransformersBackend.sample`: the requests are checked and their
prompts prepared in the caller's thread (:mod:`.prompts`), then queued; the worker
groups them by what ``generate`` must share (sampling settings, seed, whether they
have images, a tool-call grammar; stop strings and token limits may differ per row).
Each group is one left-padded batch in which every request appears ``n`` times: its
prompts are read once through the prefix cache and their caches repeated for the ``n``
rows, and one ``generate`` call makes all of the group's candidates, each row ending at
its own limit or stop string. A seed makes
a call reproducible (the same requests in one call give the same samples) without
touching the global random state. :meth:`TransformersBackend.choose` reads each
option's log-probability after the prompt from one batched forward pass over the
prompts' uncached tokens (one for single-token options, one for longer ones).

Stage tags: the tiny models of :mod:`langchain_llava_cot.model_builders` have each tag as
one non-special token, and real LLaVA-CoT writes them as ordinary text. Decoding
uses ``skip_special_tokens=True``, so tags stay in the text and chat tokens
(``<|eot_id|>``, padding) do not: stop strings must be plain text, not special tokens.

Concurrency: one backend may be shared by threads and coroutines. Every ``sample``
and ``choose`` call becomes a job on a :class:`~langchain_llava_cot.backends._batching.BatchQueue`;
its worker thread is the only one that touches the model (callers prepare prompts
with a processor of their own, one at a time), and it merges the jobs of concurrent
callers (greedy and unseeded requests with the same sampling settings; seeded requests
stay in their own call so they stay reproducible) into shared ``generate`` and forward
calls. :meth:`close` stops it.
Neither the model's generation config nor the processor is changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from langchain_llava_cot.backends._batching import BatchQueue, Job
from langchain_llava_cot.backends.base import (
    ChoiceRequest,
    ChoiceResult,
    PromptTooLongError,
    Sample,
    SampleRequest,
    VLMBackend,
)
from langchain_llava_cot.backends.transformers.attention import attention_of
from langchain_llava_cot.backends.transformers.constrained import ToolCallGrammars
from langchain_llava_cot.backends.transformers.decoding import Decoder, as_set, chosen_logprobs
from langchain_llava_cot.backends.transformers.inputs import Inputs
from langchain_llava_cot.backends.transformers.jobs import (
    checked_samples,
    chunks,
    group_key,
    shut_down,
    weak_runner,
)
from langchain_llava_cot.backends.transformers.loading import (
    check_is_vlm,
    has_plain_kv_cache,
    import_transformers,
    is_encoder_decoder,
    name_of,
    resolve_source,
)
from langchain_llava_cot.backends.transformers.prefill import Prefill
from langchain_llava_cot.backends.transformers.prefix_cache import cache_argument, output_cache
from langchain_llava_cot.backends.transformers.prompts import PreparedChoice, PreparedSample, Prompt, Prompts
from langchain_llava_cot.backends.transformers.scoring import (
    choose_sequences,
    choose_single_tokens,
    choose_through_prefill,
)
from langchain_llava_cot.backends.transformers.vision_cache import image_token_id
from langchain_llava_cot.conversation import Conversation

__all__ = ["BackendSettings", "TransformersBackend"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSettings:
    """How a :class:`TransformersBackend` batches and caches (see its constructor)."""

    batch_window: float = 0.005
    max_batch_rows: int = 64
    max_cached_images: int = 64
    share_prefill: bool = True
    max_cached_prefixes: int = 64

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            msg = f"max_batch_rows must be at least 1, got {self.max_batch_rows}."
            raise ValueError(msg)

    @classmethod
    def of(cls, **settings: Any) -> BackendSettings:
        """The settings named, the defaults for the rest; an unknown name says which are known."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in fields(cls))
            msg = f"Unknown backend setting(s) {', '.join(unknown)}; the settings are {known}."
            raise TypeError(msg)
        return cls(**settings)


class TransformersBackend(VLMBackend):
    """A local vision-language model run with ``transformers`` (batched, on CPU or GPU).

    Setup:
        ``pip install 'langchain-llava-cot[transformers]'``

    Key init args:
        model: A local folder or a Hugging Face model id (in the local cache when offline).
        dtype: Weight dtype passed to ``from_pretrained`` (``"auto"``, ``"bfloat16"`` ...).
        device: Where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        trust_remote_code: Allow the model folder's own Python code. Off unless asked.
        batch_window: Seconds the generation queue waits for more concurrent work
            before it runs a batch (0 runs at once; work arriving during a batch
            always joins the next one).
        max_batch_rows: Most rows (candidates) in one ``generate`` call.
        max_cached_images: Distinct images whose features are kept (0: no cache). For
            Mllama these are the keys and values of every cross-attention layer:
            ``2 x cross layers x kv_heads x head_dim x vision tokens x dtype bytes``
            each, about 210 MB for the 11B model in bfloat16 with four tiles.
        share_prefill: Read each prompt once: keep prompts' KV caches (see
            ``max_cached_prefixes``), read only the tokens a cached prompt lacks, and
            copy the cache to the ``n`` candidate rows; judge pairs read their shared
            part once. Models with full self-attention, Mllama included (with the
            image cache on and one picture per prompt; otherwise every candidate row
            reads its whole prompt).
        max_cached_prefixes: Prompts whose KV caches are kept (LRU; 0 keeps none, so
            only the rows of one call share a prefill). Each costs
            ``2 x self-attention layers x kv_heads x head_dim x dtype bytes`` per token, and also
            holds what the last ``generate`` calls from it wrote (each candidate's
            tokens, up to 64 rows), so the next stage continues the winner.

    Instantiate:
        ```python
        from langchain_llava_cot.backends.transformers import TransformersBackend
        from langchain_llava_cot.model_builders import build_tiny_vlm

        backend = TransformersBackend(build_tiny_vlm("/tmp/tiny-llava-cot", arch="mllama"))
        ```

    Sample:
        ```python
        from langchain_llava_cot.backends.base import SampleRequest
        from langchain_llava_cot.conversation import Conversation, Turn

        conversation = Conversation((Turn("user", "How many circles?"),))
        request = SampleRequest(conversation, prefix="<SUMMARY>", n=2, stop=("</SUMMARY>",))
        [candidates] = backend.sample([request])
        ```
    """

    supports_choice = True
    gives_logprobs = True

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: Any = "auto",
        device: str = "cpu",
        trust_remote_code: bool = False,
        batch_window: float = BackendSettings.batch_window,
        max_batch_rows: int = BackendSettings.max_batch_rows,
        max_cached_images: int = BackendSettings.max_cached_images,
        share_prefill: bool = BackendSettings.share_prefill,
        max_cached_prefixes: int = BackendSettings.max_cached_prefixes,
    ) -> None:
        settings = BackendSettings(
            batch_window=batch_window,
            max_batch_rows=max_batch_rows,
            max_cached_images=max_cached_images,
            share_prefill=share_prefill,
            max_cached_prefixes=max_cached_prefixes,
        )
        transformers = import_transformers()
        source = resolve_source(model)
        check_is_vlm(source, trust_remote_code=trust_remote_code)
        processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        loaded = transformers.AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
        self._setup(loaded.to(device), processor, model_name=str(model), settings=settings)

    @classmethod
    def from_loaded(
        cls, model: Any, processor: Any, *, model_name: str | None = None, **settings: Any
    ) -> TransformersBackend:
        """Wrap a model and processor that are already loaded (they are not copied).

        ``settings`` are ``batch_window``, ``max_batch_rows``, ``max_cached_images``,
        ``share_prefill`` and ``max_cached_prefixes`` as in the constructor.
        """
        backend = cls.__new__(cls)
        name = model_name or name_of(model)
        backend._setup(model, processor, model_name=name, settings=BackendSettings.of(**settings))
        return backend

    def _setup(self, model: Any, processor: Any, *, model_name: str, settings: BackendSettings) -> None:
        if getattr(processor, "tokenizer", None) is None:
            msg = f"{type(processor).__name__} has no tokenizer. Pass the model's AutoProcessor."
            raise ValueError(msg)
        model.eval()
        self._model = model
        tokenizer = processor.tokenizer
        vocab = getattr(getattr(model.config, "text_config", None) or model.config, "vocab_size", None)
        self._grammars = ToolCallGrammars(tokenizer, vocab or len(tokenizer))
        self._max_batch_rows = settings.max_batch_rows
        pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self._prompts = Prompts(
            processor, image_token_id=image_token_id(model), remember_pictures=settings.max_cached_images > 0
        )
        self._inputs = Inputs(model, pad_token_id=pad_token_id, max_cached_images=settings.max_cached_images)
        self._decoder = Decoder(model, tokenizer)
        attention = attention_of(model, self._inputs.images)
        self._share_prefill = (
            settings.share_prefill
            and not is_encoder_decoder(model)
            and has_plain_kv_cache(model)
            and attention.can_prefill
        )
        self._prefill = Prefill(
            model,
            self._inputs,
            attention,
            cache_argument=cache_argument(model),
            pad_token_id=pad_token_id,
            max_entries=settings.max_cached_prefixes,
        )
        self.generate_calls = 0
        """``generate`` calls made so far (for tests and benchmarks)."""
        self.forward_calls = 0
        """Plain forward passes (judge choices) made so far."""
        self._queue = BatchQueue(
            weak_runner(self), window=settings.batch_window, name=f"TransformersBackend({model_name})"
        )
        self._finalizer = weakref.finalize(
            self, shut_down, self._queue, self._prompts, self._inputs, self._prefill
        )
        self.model_name = model_name
        if tokenizer.padding_side != "left":
            logger.warning(
                "The tokenizer pads on the %s; batches are padded on the left here. Give "
                "padding_side='left' to the tokenizer's constructor before saving it.",
                tokenizer.padding_side,
            )

    # -- sampling -----------------------------------------------------------------

    @property
    def vision_encoder_calls(self) -> int:
        """Forward calls of the model's vision tower so far (0 if it has none)."""
        return self._inputs.images.encoder_calls

    @property
    def images_encoded(self) -> int:
        """Distinct images encoded into the feature cache so far."""
        return self._inputs.images.images_encoded

    @property
    def image_processor_runs(self) -> int | None:
        """Times the image processor ran (None with ``max_cached_images=0``, which does not count).

        A prompt asking about a picture already processed (a later stage's, a judge's)
        reuses its pixels.
        """
        return self._prompts.image_processor_runs

    @property
    def cached_images(self) -> int:
        """Distinct images whose features the image cache holds now."""
        return len(self._inputs.images)

    @property
    def prefill_calls(self) -> int:
        """Forward passes that read a prompt's uncached tokens into the prefix cache."""
        return self._prefill.calls

    @property
    def prompt_tokens_reused(self) -> int:
        """Prompt tokens taken from the prefix KV cache instead of being read again."""
        return self._prefill.tokens_reused

    @property
    def prompt_tokens_read(self) -> int:
        """Prompt tokens the model read through the prefix KV cache (the rest were reused).

        Every candidate row's last prompt token and every judge pair's own tokens count;
        with ``share_prefill=False`` nothing is counted.
        """
        return self._prefill.tokens_read

    def close(self) -> None:
        """Finish queued work and stop the generation queue's worker thread."""
        self._finalizer()

    def __enter__(self) -> TransformersBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Sample each request's ``n`` continuations, batched with concurrent callers' work."""
        prepared = self._prepared_samples(requests)
        return self._queue.submit("sample", prepared).result() if prepared else []

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Async :meth:`sample`: waits on the queue without holding a thread."""
        prepared = self._prepared_samples(requests)
        return await asyncio.wrap_future(self._queue.submit("sample", prepared)) if prepared else []

    def choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Log-probability of each option right after each request's prefix."""
        prepared = self._prepared_choices(requests)
        return self._queue.submit("choose", prepared).result() if prepared else []

    async def achoose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Async :meth:`choose`: waits on the queue without holding a thread."""
        prepared = self._prepared_choices(requests)
        return await asyncio.wrap_future(self._queue.submit("choose", prepared)) if prepared else []

    @property
    def context_length(self) -> int | None:
        """The most tokens the model reads (its position limit), when its config says."""
        config = getattr(self._model.config, "text_config", None) or self._model.config
        return getattr(config, "max_position_embeddings", None)

    def tokens_left(self, conversation: Conversation, prefix: str) -> int | None:
        """New tokens that fit in the model's positions after the prompt (None: the config does not say)."""
        limit = self.context_length
        if limit is None:
            return None
        return limit - len(self._prompts.prompt(conversation, prefix).ids)

    def _prepared_samples(self, requests: Sequence[SampleRequest]) -> list[PreparedSample]:
        """Each request checked and its prompt prepared, in the caller's thread.

        A continuation never runs past the model's positions: its ``max_new_tokens`` is cut
        to what is left after the prompt.
        """
        prepared = [self._prompts.sample(request) for request in checked_samples(requests)]
        self._check_fits(item.prompt.ids for item in prepared)
        limit = self.context_length
        if limit is None:
            return prepared
        return [
            dataclasses.replace(item, request=dataclasses.replace(item.request, max_new_tokens=left))
            if (left := limit - len(item.prompt.ids)) < item.request.max_new_tokens
            else item
            for item in prepared
        ]

    def _prepared_choices(self, requests: Sequence[ChoiceRequest]) -> list[PreparedChoice]:
        """Each choice's prompt and options prepared, in the caller's thread."""
        prepared = [self._prompts.choice(request) for request in requests]
        self._check_fits(item.prompt.ids for item in prepared)
        return prepared

    def _check_fits(self, prompts: Iterable[list[int]]) -> None:
        """Fail unless every prompt fits the model's context."""
        limit = self.context_length
        if limit is None:
            return
        for ids in prompts:
            if len(ids) >= limit:
                msg = (
                    f"The prompt is about {len(ids):,} tokens, but the model reads at most {limit:,}: "
                    "shorten the question or the conversation."
                )
                raise PromptTooLongError(msg)

    # -- the worker thread --------------------------------------------------------

    def _run_jobs(self, jobs: Sequence[Job]) -> list[Any]:
        """Run concurrent callers' jobs together: one result per job (worker thread)."""
        results: list[Any] = [None] * len(jobs)
        sample_jobs = [(i, job) for i, job in enumerate(jobs) if job.kind == "sample"]
        choice_jobs = [(i, job) for i, job in enumerate(jobs) if job.kind == "choose"]
        if sample_jobs:
            for i, samples in zip(
                [i for i, _ in sample_jobs], self._sample_jobs([j for _, j in sample_jobs])
            ):
                results[i] = samples
        if choice_jobs:
            merged = [request for _, job in choice_jobs for request in job.payload]
            chosen = self._choose(merged)
            start = 0
            for i, job in choice_jobs:
                results[i] = chosen[start : start + len(job.payload)]
                start += len(job.payload)
        return results

    def _sample_jobs(self, jobs: list[Job]) -> list[list[list[Sample]]]:
        """Group every job's requests by shared settings; one ``generate`` call per chunk."""
        results: list[list[Any]] = [[None] * len(job.payload) for job in jobs]
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for j, job in enumerate(jobs):
            for r, item in enumerate(job.payload):
                groups.setdefault(group_key(item.request, caller=j), []).append((j, r))
        for members in groups.values():
            sizes = [jobs[j].payload[r].request.n for j, r in members]
            for chunk in chunks(members, sizes, self._max_batch_rows):
                batch = [jobs[j].payload[r] for j, r in chunk]
                for (j, r), samples in zip(chunk, self._sample_group(batch)):
                    results[j][r] = samples
        return results

    def _sample_group(self, items: list[PreparedSample]) -> list[list[Sample]]:
        """One ``generate`` call for requests that share their sampling settings."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        requests = [item.request for item in items]
        rows = [request for request in requests for _ in range(request.n)]
        prompts = [item.prompt for item in items for _ in range(item.request.n)]
        first = requests[0]
        settings = self._decoder.settings(first, max(r.max_new_tokens for r in requests))
        with torch.inference_mode():
            inputs, prefilled = self._sample_inputs(items, prompts)
        prompt_length = inputs["input_ids"].shape[1]
        grammar = None
        if first.tool_call is not None:  # the group shares its constraint (see group_key)
            limits = [row.max_new_tokens for row in rows]
            grammar = self._grammars.processor(first.tool_call, first.prefix, limits, prompt_length)
        row_stops = self._decoder.stops(prompt_length, rows, by_grammar=grammar is not None)
        stops = StoppingCriteriaList([row_stops])
        constrained = {}
        if grammar is not None:  # the grammar masks each row's tokens and says where the row ends
            stops.append(grammar.stopping())
            constrained["logits_processor"] = LogitsProcessorList([grammar])
        self.generate_calls += 1
        with torch.inference_mode(), self._decoder.seeded(first):
            out = self._model.generate(
                **inputs, generation_config=settings, stopping_criteria=stops, **constrained
            )
        new_tokens = out.sequences[:, prompt_length:].tolist()
        logprobs = chosen_logprobs(out.logits, out.sequences[:, prompt_length:])
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        written = list(zip(new_tokens, logprobs, rows, prompt_tokens))
        if grammar is None:
            eos = as_set(settings.eos_token_id)
            samples = [self._decoder.cut(t, lp, r, eos, p) for t, lp, r, p in written]
        else:
            cut = self._decoder.cut_at_grammar_end
            samples = [cut(t, lp, r, end, p) for (t, lp, r, p), end in zip(written, grammar.ends)]
        if prefilled:
            self._prefill.keep_written(prompts, new_tokens, samples, output_cache(out), prompt_length)
        grouped, start = [], 0
        for request in requests:
            grouped.append(samples[start : start + request.n])
            start += request.n
        return grouped

    def _sample_inputs(self, items: list[PreparedSample], rows: list[Prompt]) -> tuple[dict[str, Any], bool]:
        """``generate`` inputs for the candidate ``rows``, and whether they read through the prefix cache."""
        if self._share_prefill:
            prefilled = self._prefill.generate_inputs(
                [item.prompt for item in items], [item.request.n for item in items]
            )
            if prefilled is not None:
                return prefilled, True
        return self._inputs.encode(rows), False

    def _choose(self, choices: Sequence[PreparedChoice]) -> list[ChoiceResult]:
        """One forward pass for choices whose options are single tokens, one for the rest (worker)."""
        results: list[ChoiceResult | None] = [None] * len(choices)
        for single in (True, False):
            indices = [i for i, choice in enumerate(choices) if choice.single == single]
            if indices:
                chosen = self._choose_group([choices[i] for i in indices], single=single)
                for i, result in zip(indices, chosen):
                    results[i] = result
        return [result for result in results if result is not None]

    def _choose_group(self, choices: list[PreparedChoice], *, single: bool) -> list[ChoiceResult]:
        """One forward pass for ``choices``, all of one kind: single-token options or not."""
        self.forward_calls += 1
        if self._share_prefill:
            import torch

            with torch.inference_mode():
                shared = choose_through_prefill(self._prefill, choices, single=single)
            if shared is not None:
                return shared
        if single:
            return choose_single_tokens(self._model, self._inputs, choices)
        return choose_sequences(self._model, self._inputs, choices)

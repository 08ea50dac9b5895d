"""In-process backend: a Hugging Face vision-language model loaded with ``transformers``.

Data flow of :meth:`TransformersBackend.sample`:

1. each :class:`SampleRequest` becomes a prompt: the processor's chat template over
   :func:`to_chat_messages` (with the generation prompt) followed by the request's
   ``prefix``, plus its images decoded with :func:`decode_image`;
2. requests are grouped by what ``generate`` must share (sampling settings, seed,
   whether they have images); stop strings and token limits may differ per row.
   Each group is one left-padded batch in which every request appears ``n`` times,
   and one ``generate`` call makes all of the group's candidates, with
   ``output_logits=True`` and a per-row stopping criterion (:class:`_RowStops`) that
   ends a row at its own limit or stop string. A seed makes a call reproducible (the
   same requests in one call give the same samples) without touching the global
   random state;
3. each row is cut by :meth:`_cut`: at EOS, at the request's own ``max_new_tokens``,
   and at the first stop string found in the *decoded text* (BPE tokens can run past a
   stop string, so ``generate``'s own stopping is only an early exit). The text ends
   before the stop string; ``completion_tokens`` and ``token_logprobs`` count the
   generated tokens up to and including the one that completed the stop string (or the
   EOS token). Log-probabilities come from the raw logits, not the sampling-adjusted
   scores.

:meth:`TransformersBackend.choose` reads each option's log-probability after the
prompt from one batched forward pass (over the prompts' uncached tokens); options
that are not a single token (in context) are scored by a batched forward pass over
prompt + option sequences.

Stage tags: the tiny models of :mod:`langchain_llava_cot.model_builders` have each tag as
one non-special token, and real LLaVA-CoT writes them as ordinary text. Decoding here
uses ``skip_special_tokens=True``, so tags stay in the text and chat tokens
(``<|eot_id|>``, padding) do not: stop strings must be plain text, not special tokens.

Each prompt is read once (models whose self-attention layers are all full attention): a
:class:`~langchain_llava_cot.backends._prefix_cache.PrefixCache` keeps the KV states of
prompts already read, keyed by their images and token ids. A new prompt (the next
stage's prefix: image + question + chosen stages + opening tag) reuses the longest
common token prefix of a cached one and the model reads only the rest, at batch
size 1 (:meth:`_read_prefix`); the caches of a ``generate`` call's prompts are then
left-padded to one length and repeated for each request's ``n`` rows
(:meth:`_prefilled_inputs`), so merged cross-request batches share prefills too.
``choose`` does the same for a judge round: the pair prompts with the same images
share a token prefix (image, question, earlier stages), read once; one forward pass
then reads each pair's own remaining tokens (:meth:`_choose_from_prefixes`).

Mllama (LLaVA-CoT's architecture) reads its picture through cross-attention layers,
whose states do not follow the prompt's positions. The prefix cache keeps only its
self-attention layers; every batch cache built from it gets each row's picture in its
cross-attention layers from the image cache (:meth:`_batch_cache`), and every read a
``cross_attention_mask`` made as the processor makes it (:meth:`_cross_attention_inputs`).
This needs the image cache and one picture per prompt; other prompts are read whole.

Images are encoded once: :class:`~langchain_llava_cot.backends._vision_cache.ImageFeatureCache`
keeps each distinct picture's features (LRU, keyed by content) and hands them to
``generate`` and ``forward`` instead of pixels, where the architecture allows.

Concurrency: one backend may be shared by threads and coroutines. Every ``sample``
and ``choose`` call becomes a job on a :class:`~langchain_llava_cot.backends._batching.BatchQueue`;
its worker thread is the only one that touches the model, tokenizer and processor,
and it merges the jobs of concurrent callers (greedy and unseeded requests with the
same sampling settings; seeded requests stay in their own call so they stay
reproducible) into shared ``generate`` and forward calls. :meth:`close` stops it.
Neither the model's generation config nor the processor is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from langchain_llava_cot.backends._batching import BatchQueue, Job
from langchain_llava_cot.backends._grammar import ToolCallGrammars
from langchain_llava_cot.backends._prefix_cache import (
    KVPrefix,
    Layers,
    PrefixCache,
    cache_argument,
    growing_cache,
    kv_layers,
    output_cache,
    stack_left_padded,
)
from langchain_llava_cot.backends._vision_cache import (
    ImageFeatureCache,
    cross_attention_layers,
    image_token_id,
)
from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest, VLMBackend
from langchain_llava_cot.backends.transformers.jobs import (
    _checked_choices,
    _checked_samples,
    _choice_results,
    _chunks,
    _group_key,
    _image_key,
    _pictures_of,
    _Prompt,
    _shared_lengths,
    _shut_down,
    _weak_runner,
)
from langchain_llava_cot.backends.transformers.loading import (
    _check_is_vlm,
    _has_plain_kv_cache,
    _import_transformers,
    _is_encoder_decoder,
    _name_of,
    _resolve_source,
    _rng_devices,
)
from langchain_llava_cot.backends.transformers.stopping import (
    _as_set,
    _before_stop,
    _chosen_logprobs,
    _RowStops,
)
from langchain_llava_cot.conversation import Conversation, to_chat_messages
from langchain_llava_cot.images import decode_image

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)


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

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: Any = "auto",
        device: str = "cpu",
        trust_remote_code: bool = False,
        batch_window: float = 0.005,
        max_batch_rows: int = 64,
        max_cached_images: int = 64,
        share_prefill: bool = True,
        max_cached_prefixes: int = 64,
    ) -> None:
        transformers = _import_transformers()
        source = _resolve_source(model)
        _check_is_vlm(source, trust_remote_code=trust_remote_code)
        processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        loaded = transformers.AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
        options: dict[str, Any] = {
            "batch_window": batch_window,
            "max_batch_rows": max_batch_rows,
            "max_cached_images": max_cached_images,
            "share_prefill": share_prefill,
            "max_cached_prefixes": max_cached_prefixes,
        }
        self._setup(loaded.to(device), processor, model_name=str(model), **options)

    @classmethod
    def from_loaded(
        cls, model: Any, processor: Any, *, model_name: str | None = None, **options: Any
    ) -> TransformersBackend:
        """Wrap a model and processor that are already loaded (they are not copied).

        ``options`` are ``batch_window``, ``max_batch_rows``, ``max_cached_images``,
        ``share_prefill`` and ``max_cached_prefixes`` as in the constructor.
        """
        backend = cls.__new__(cls)
        backend._setup(model, processor, model_name=model_name or _name_of(model), **options)
        return backend

    def _setup(
        self,
        model: Any,
        processor: Any,
        *,
        model_name: str,
        batch_window: float = 0.005,
        max_batch_rows: int = 64,
        max_cached_images: int = 64,
        share_prefill: bool = True,
        max_cached_prefixes: int = 64,
    ) -> None:
        if max_batch_rows < 1:
            msg = f"max_batch_rows must be at least 1, got {max_batch_rows}."
            raise ValueError(msg)
        if getattr(processor, "tokenizer", None) is None:
            msg = f"{type(processor).__name__} has no tokenizer. Pass the model's AutoProcessor."
            raise ValueError(msg)
        model.eval()
        self._model = model
        self._cache_argument = cache_argument(model)
        self._counting_tokenizer = copy.deepcopy(processor.tokenizer)  # the worker pads with the other
        vocab = getattr(getattr(model.config, "text_config", None) or model.config, "vocab_size", None)
        self._grammars = ToolCallGrammars(processor.tokenizer, vocab or len(processor.tokenizer))
        self._processor = processor
        self._tokenizer = processor.tokenizer
        self._added_tokens: dict[str, int] = {
            text: token_id
            for text, token_id in self._tokenizer.get_added_vocab().items()
            if token_id not in self._tokenizer.all_special_ids
        }
        self._max_batch_rows = max_batch_rows
        self._cross_layers = cross_attention_layers(model)
        self._share_prefill = (
            share_prefill
            and not _is_encoder_decoder(model)
            and _has_plain_kv_cache(model)
            and 0 not in self._cross_layers  # transformers measures a cache's length on layer 0
        )
        self._prefixes = PrefixCache(max_entries=max_cached_prefixes)
        self._layer_count = model.config.get_text_config(decoder=True).num_hidden_layers
        self._image_token_id = image_token_id(model)
        self._pad_token_id = (
            self._tokenizer.pad_token_id
            if self._tokenizer.pad_token_id is not None
            else self._tokenizer.eos_token_id
        )
        self._images = ImageFeatureCache(model, max_images=max_cached_images)
        self.generate_calls = 0
        """``generate`` calls made so far (for tests and benchmarks)."""
        self.forward_calls = 0
        """Plain forward passes (judge choices) made so far."""
        self.prefill_calls = 0
        """Forward passes that read a prompt's uncached tokens into the prefix cache."""
        self._queue = BatchQueue(
            _weak_runner(self), window=batch_window, name=f"TransformersBackend({model_name})"
        )
        self._finalizer = weakref.finalize(self, _shut_down, self._queue, self._images, self._prefixes)
        self.model_name = model_name
        if self._tokenizer.padding_side != "left":
            logger.warning(
                "The tokenizer pads on the %s; batches are padded on the left here. Give "
                "padding_side='left' to the tokenizer's constructor before saving it.",
                self._tokenizer.padding_side,
            )

    # -- sampling -----------------------------------------------------------------

    @property
    def vision_encoder_calls(self) -> int:
        """Forward calls of the model's vision tower so far (0 if it has none)."""
        return self._images.encoder_calls

    @property
    def images_encoded(self) -> int:
        """Distinct images encoded into the feature cache so far."""
        return self._images.images_encoded

    @property
    def prompt_tokens_reused(self) -> int:
        """Prompt tokens taken from the prefix KV cache instead of being read again."""
        return self._prefixes.tokens_reused

    @property
    def prompt_tokens_read(self) -> int:
        """Prompt tokens the model read through the prefix KV cache (the rest were reused).

        Every candidate row's last prompt token and every judge pair's own tokens count;
        with ``share_prefill=False`` nothing is counted.
        """
        return self._prefixes.tokens_read

    def close(self) -> None:
        """Finish queued work and stop the generation queue's worker thread."""
        self._finalizer()

    def __enter__(self) -> TransformersBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Sample each request's ``n`` continuations, batched with concurrent callers' work."""
        requests = self._fitting(_checked_samples(requests))
        return self._queue.submit("sample", requests).result() if requests else []

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Async :meth:`sample`: waits on the queue without holding a thread."""
        requests = self._fitting(_checked_samples(requests))
        return await asyncio.wrap_future(self._queue.submit("sample", requests)) if requests else []

    def choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Log-probability of each option right after each request's prefix."""
        requests = self._fitting(_checked_choices(requests))
        return self._queue.submit("choose", requests).result() if requests else []

    async def achoose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Async :meth:`choose`: waits on the queue without holding a thread."""
        requests = self._fitting(_checked_choices(requests))
        return await asyncio.wrap_future(self._queue.submit("choose", requests)) if requests else []

    @property
    def context_length(self) -> int | None:
        """The most tokens the model reads (its position limit), when its config says."""
        config = getattr(self._model.config, "text_config", None) or self._model.config
        return getattr(config, "max_position_embeddings", None)

    def _fitting(self, requests: list[_Request]) -> list[_Request]:
        """``requests``, once each prompt is known to fit the context (checked in the caller's thread)."""
        limit = self.context_length
        if limit is None:
            return requests
        per_image = max(int(getattr(self._model.config, "image_seq_length", 1) or 1) - 1, 0)
        for request in requests:
            prompt = self._prompt(request.conversation, request.prefix)
            length = len(self._counting_tokenizer(prompt, add_special_tokens=False)["input_ids"])
            length += per_image * len(request.conversation.images)
            if length >= limit:
                msg = (
                    f"The prompt is about {length:,} tokens, but the model reads at most {limit:,}: "
                    "shorten the question or the conversation."
                )
                raise ValueError(msg)
        return requests

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
            for r, request in enumerate(job.payload):
                groups.setdefault(_group_key(request, caller=j), []).append((j, r))
        for members in groups.values():
            for chunk in _chunks(members, [jobs[j].payload[r].n for j, r in members], self._max_batch_rows):
                batch = [jobs[j].payload[r] for j, r in chunk]
                for (j, r), samples in zip(chunk, self._sample_group(batch)):
                    results[j][r] = samples
        return results

    def _sample_group(self, requests: list[SampleRequest]) -> list[list[Sample]]:
        """One ``generate`` call for requests that share their sampling settings."""
        import torch

        rows = [request for request in requests for _ in range(request.n)]
        from transformers import LogitsProcessorList, StoppingCriteriaList

        first = requests[0]
        settings = self._generation_config(first, max(r.max_new_tokens for r in requests))
        with torch.inference_mode():
            inputs, prompts = self._sample_inputs(requests, rows)
        prompt_length = inputs["input_ids"].shape[1]
        stops = StoppingCriteriaList([_RowStops(prompt_length, rows, self._decode, self._single_token_id)])
        constrained = {}
        if first.tool_call is not None:  # the group shares its constraint (see _group_key)
            processor = self._grammars.processor(first.tool_call, first.prefix)
            constrained["logits_processor"] = LogitsProcessorList([processor])
        self.generate_calls += 1
        with torch.inference_mode(), self._seeded(first):
            out = self._model.generate(
                **inputs, generation_config=settings, stopping_criteria=stops, **constrained
            )
        new_tokens = out.sequences[:, prompt_length:].tolist()
        logprobs = _chosen_logprobs(out.logits, out.sequences[:, prompt_length:])
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        eos = _as_set(settings.eos_token_id)
        samples = [
            self._cut(row_tokens, row_logprobs, request, eos, prompt)
            for row_tokens, row_logprobs, request, prompt in zip(new_tokens, logprobs, rows, prompt_tokens)
        ]
        if prompts is not None:
            repeated = [prompt for prompt, request in zip(prompts, requests) for _ in range(request.n)]
            self._keep_continuations(repeated, new_tokens, samples, output_cache(out), prompt_length)
        grouped, start = [], 0
        for request in requests:
            grouped.append(samples[start : start + request.n])
            start += request.n
        return grouped

    # -- prompts read once (prefix KV cache) ---------------------------------------

    def _cached_part(self, prompt: _Prompt, length: int) -> tuple[KVPrefix | None, int]:
        """The cached entry to continue ``prompt.ids[:length]`` from, and how many tokens it gives.

        A span that would hold only some of the prompt's image tokens starts before
        the first one, so the images' features are always scattered in one piece.
        """
        entry, common = self._prefixes.longest(prompt.key, prompt.ids[:length])
        if prompt.images and prompt.images[-1] >= common:
            common = min(common, prompt.images[0])
        return entry, common

    def _read_prefixes(self, prompts: list[_Prompt], lengths: list[int]) -> list[Layers]:
        """KV states of each ``prompts[i].ids[:lengths[i]]``; the uncached tails read together.

        Prompts fully cached cost nothing. Tails that continue a cached prefix (the
        next stage's prefix, a judge round's shared part) are read in one batched
        forward pass (:meth:`_read_tails`), and each row's states are cut out of the
        batch and cached. A prompt with nothing cached or with image tokens in its
        tail (a request's first call) is read alone (:meth:`_read_prefix`).
        """
        found: list[Layers | None] = [None] * len(prompts)
        batch = []
        for index, (prompt, length) in enumerate(zip(prompts, lengths)):
            entry, common = self._cached_part(prompt, length)
            if entry is not None and common == length:
                self._prefixes.tokens_reused += length
                found[index] = entry.states(length)
            elif entry is None or not common or (prompt.images and prompt.images[-1] >= common):
                found[index] = self._read_prefix(prompt, length)
            else:
                batch.append((index, entry, common))
        if len(batch) == 1:
            index = batch[0][0]
            found[index] = self._read_prefix(prompts[index], lengths[index])
        elif batch:
            starts = [common for _, _, common in batch]
            tails = [prompts[i].ids[common : lengths[i]] for i, _, common in batch]
            self.prefill_calls += 1
            cached = [entry.states(common) for _, entry, common in batch]
            rows = [prompts[i] for i, _, _ in batch]
            _, cache = self._read_tails(rows, tails, cached, starts, logits=False)
            states = kv_layers(cache, skip=self._cross_layers) or ()
            longest = max(starts)
            for row, ((index, _, common), tail) in enumerate(zip(batch, tails)):
                cut = slice(longest - common, longest + len(tail))
                layers = tuple(
                    (k[row : row + 1, :, cut].clone(), v[row : row + 1, :, cut].clone()) for k, v in states
                )
                self._prefixes.add(prompts[index].key, prompts[index].ids[: lengths[index]], layers)
                self._prefixes.tokens_reused += common
                self._prefixes.tokens_read += len(tail)
                found[index] = layers
        return [layers for layers in found if layers is not None]

    def _read_prefix(self, prompt: _Prompt, length: int) -> Layers:
        """KV states of ``prompt.ids[:length]``, reading only what the prefix cache lacks.

        The longest cached token prefix is reused (:meth:`_cached_part`); the model
        reads the rest at batch size 1 and the result is cached.
        """
        import torch

        entry, common = self._cached_part(prompt, length)
        if common == length and entry is not None:
            self._prefixes.tokens_reused += length
            return entry.states(length)
        cached = entry.states(common) if entry is not None and common else None
        cache = self._batch_cache(cached, [prompt], [1])
        if self._cross_layers:
            images = self._cross_attention_inputs([prompt], [common], length - common)
        else:
            images = prompt.extras(self) if prompt.images and prompt.images[-1] >= common else {}
        device = self._model.device
        self.prefill_calls += 1
        self._model(
            input_ids=torch.tensor([prompt.ids[common:length]], device=device),
            attention_mask=torch.ones(1, length, dtype=torch.long, device=device),
            **{self._cache_argument: cache},
            use_cache=True,
            logits_to_keep=1,
            **images,
        )
        layers = kv_layers(cache, skip=self._cross_layers)
        if layers is None:
            name = type(self._model).__name__
            msg = f"{name} made a KV cache that cannot be reused; pass share_prefill=False."
            raise RuntimeError(msg)
        self._prefixes.add(prompt.key, prompt.ids[:length], layers)
        self._prefixes.tokens_reused += common
        self._prefixes.tokens_read += length - common
        return layers

    def _prefilled_inputs(self, requests: list[SampleRequest]) -> tuple[dict[str, Any], list[_Prompt]] | None:
        """``generate`` inputs whose KV cache holds every prompt but its last token, and the prompts.

        Each distinct prompt is read once (:meth:`_read_prefix`); the caches are
        left-padded to a common length and repeated for each request's ``n`` rows, so
        ``generate`` has one token per row left to read. None if a prompt cannot be
        handled this way (the caller then reads whole prompts).
        """
        import torch

        ready = self._rows_of([(r.conversation, r.prefix) for r in requests])
        if not self._can_share(ready):
            return None
        layers = self._read_prefixes(ready, [len(prompt.ids) - 1 for prompt in ready])
        repeats = [request.n for request in requests]
        self._prefixes.tokens_read += sum(repeats)  # each row reads its prompt's last token
        width = max(len(prompt.ids) for prompt in ready)
        pad = self._pad_token_id
        input_ids = [[pad] * (width - len(p.ids)) + p.ids for p, n in zip(ready, repeats) for _ in range(n)]
        mask = [
            [0] * (width - len(p.ids)) + [1] * len(p.ids) for p, n in zip(ready, repeats) for _ in range(n)
        ]
        device = self._model.device
        stacked = stack_left_padded([(rows, len(p.ids) - 1) for rows, p in zip(layers, ready)], repeats)
        rows = [p for p, n in zip(ready, repeats) for _ in range(n)]
        inputs = {
            "input_ids": torch.tensor(input_ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            self._cache_argument: self._batch_cache(stacked, ready, repeats),
            **self._cross_attention_inputs(rows, [len(p.ids) - width for p in rows], width),
        }
        return inputs, ready

    def _sample_inputs(
        self, requests: list[SampleRequest], rows: list[SampleRequest]
    ) -> tuple[dict[str, Any], list[_Prompt] | None]:
        """``generate`` inputs for ``rows``, and their prompts when read through the prefix cache."""
        prefilled = self._prefilled_inputs(requests) if self._share_prefill else None
        if prefilled is not None:
            return prefilled
        return self._encode([(row.conversation, row.prefix) for row in rows]), None

    def _keep_continuations(
        self, prompts: list[_Prompt], tokens: list[list[int]], samples: list[Sample], cache: Any, width: int
    ) -> None:
        """Cache each row's written tokens after its prompt, so the next stage need not read them.

        ``cache`` is ``generate``'s batch cache: row ``i`` holds ``prompts[i]`` left-
        padded to ``width`` and then the tokens fed back, which are all written tokens
        but the last one of the longest row. The prompt's last token and the row's
        fed tokens up to where it was cut are cut out and attached to the prompt's
        cache entry (:meth:`PrefixCache.continue_entry`).
        """
        layers = kv_layers(cache, skip=self._cross_layers)
        if layers is None:
            return
        fed = max(len(row) for row in tokens) - 1
        grouped: dict[tuple[tuple[str, ...], tuple[int, ...]], list[int]] = {}
        for row, prompt in enumerate(prompts):
            grouped.setdefault((prompt.key, tuple(prompt.ids[:-1])), []).append(row)

        def written(row: int) -> tuple[list[int], Layers]:
            kept = min(samples[row].completion_tokens, fed)
            span = slice(width - 1, width + kept)
            states = tuple(
                (k[row : row + 1, :, span].clone(), v[row : row + 1, :, span].clone()) for k, v in layers
            )
            return [prompts[row].ids[-1], *tokens[row][:kept]], states

        for (key, ids), rows in grouped.items():
            self._prefixes.continue_entry(key, ids, (written(row) for row in rows))

    def _seeded(self, request: SampleRequest) -> contextlib.AbstractContextManager:
        """Seed sampling from ``request.seed`` without touching the global random state."""
        import torch

        if request.temperature == 0 or request.seed is None:
            return contextlib.nullcontext()
        rng = torch.random.fork_rng(devices=_rng_devices(self._model))

        @contextlib.contextmanager
        def seeded() -> Iterator[None]:
            with rng:
                torch.manual_seed(request.seed)
                yield

        return seeded()

    def _generation_config(self, request: SampleRequest, max_new_tokens: int) -> Any:
        """A copy of the model's generation config with this request's settings."""
        config = copy.deepcopy(self._model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.num_return_sequences = 1
        config.num_beams = 1
        config.return_dict_in_generate = True
        config.output_logits = True
        if config.eos_token_id is None:
            config.eos_token_id = self._tokenizer.eos_token_id
        if config.pad_token_id is None:
            config.pad_token_id = self._tokenizer.pad_token_id
        if request.temperature > 0:
            config.do_sample = True
            config.temperature = request.temperature
            config.top_p = request.top_p if request.top_p is not None else 1.0
            config.top_k = 0  # None would be filled with transformers' default, 50
        else:
            config.do_sample = False
            config.temperature = None
            config.top_p = None
            config.top_k = None
        return config

    def _cut(
        self,
        tokens: list[int],
        logprobs: list[float],
        request: SampleRequest,
        eos: set[int],
        prompt_tokens: int,
    ) -> Sample:
        """Cut one generated row at EOS, its token limit or its first stop string."""
        end = next((i for i, token in enumerate(tokens) if token in eos), None)
        reason: Literal["stop", "length"]
        if end is not None and end < request.max_new_tokens:
            kept, reason, eos_counted = tokens[:end], "stop", 1
        else:
            kept, reason, eos_counted = tokens[: request.max_new_tokens], "length", 0
        text = self._decode(kept)
        if any(stop in text for stop in request.stop):
            kept = kept[: self._first_stop_length(kept, request.stop)]
            text = _before_stop(self._decode(kept), request.stop)
            reason, eos_counted = "stop", 0
        count = len(kept) + eos_counted
        return Sample(
            text=text,
            finish_reason=reason,
            token_logprobs=tuple(logprobs[:count]),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=count,
        )

    def _first_stop_length(self, tokens: list[int], stops: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text contains a stop string (binary search)."""
        low, high = 1, len(tokens)
        while low < high:
            middle = (low + high) // 2
            if any(stop in self._decode(tokens[:middle]) for stop in stops):
                high = middle
            else:
                low = middle + 1
        return high

    def _decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=True)

    def _single_token_id(self, text: str) -> int | None:
        """The id of the added (never split) token whose text is ``text``, if there is one."""
        return self._added_tokens.get(text)

    # -- choices ------------------------------------------------------------------

    def _choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """One forward pass for all ``requests`` (worker thread)."""
        prompts = [self._prompt(r.conversation, r.prefix) for r in requests]
        splits = [[self._option_tokens(p, o) for o in r.options] for p, r in zip(prompts, requests)]
        self.forward_calls += 1
        single = all(len(tokens) == 1 for options in splits for tokens in options)
        if self._share_prefill:
            import torch

            with torch.inference_mode():
                shared = self._choose_from_prefixes(requests, splits, single=single)
            if shared is not None:
                return shared
        if single:
            return self._choose_single_tokens(requests, splits)
        return self._choose_sequences(requests, splits)

    def _choose_from_prefixes(
        self, requests: Sequence[ChoiceRequest], splits: list, *, single: bool
    ) -> list[ChoiceResult] | None:
        """Score the choices reading each shared prompt part once (None: not possible here).

        Rows are the prompts (one-token options: read after the prompt) or prompt +
        option sequences. Rows with the same images (a knockout round's pairs:
        image, question and earlier stages in common) share their longest common
        token prefix, read once through the prefix cache (:meth:`_read_prefixes`); one
        forward pass then reads every row's own remaining tokens, right-padded, over
        the shared caches left-padded to one length, with explicit positions.
        """
        if single:
            texts = [(r.conversation, r.prefix) for r in requests]
            needs = [1] * len(requests)
        else:
            texts = [(r.conversation, r.prefix + option) for r in requests for option in r.options]
            needs = [len(tokens) + 1 for options in splits for tokens in options]
        rows = self._rows_of(texts)
        shared = _shared_lengths(rows, needs)
        if shared is None or not self._can_share(rows):
            return None
        lengths = {
            key: self._worth_reading(rows[first], length, size)
            for key, (first, length, size) in shared.items()
        }
        keys = list(lengths)
        read = self._read_prefixes([rows[shared[key][0]] for key in keys], [lengths[key] for key in keys])
        layers = dict(zip(keys, read))
        starts = [lengths[row.key] for row in rows]
        tails = [row.ids[start:] for row, start in zip(rows, starts)]
        output, _ = self._read_tails(rows, tails, [layers[row.key] for row in rows], starts, logits=True)
        self._prefixes.tokens_read += sum(len(tail) for tail in tails)
        logits = output.logits
        return _choice_results(splits, rows, logits, starts, single=single)

    def _worth_reading(self, row: _Prompt, length: int, size: int) -> int:
        """How much of a group's shared prefix to read apart from the batched pass.

        A prefix shared by several rows is read once (all of it); a lone row (the
        last knockout round) takes only what the prefix cache already holds, as long
        as that covers its images, and reads the rest in the batched pass.
        """
        if size > 1:
            return length
        entry, common = self._prefixes.longest(row.key, row.ids[:length])
        if entry is None or (row.images and row.images[-1] >= common):
            return length
        return common

    def _rows_of(self, texts: list[tuple[Conversation, str]]) -> list[_Prompt]:
        """Each (conversation, text) tokenized in one processor call, padding removed.

        New pictures are encoded into the image cache here, in one call; a prompt's own
        image inputs are made again if it is read alone (``_Prompt.extras``).
        """
        inputs = self._process(texts)
        self._images.store(inputs, _pictures_of(texts))
        tiles = inputs.get("cross_attention_mask")
        rows = []
        for row, ((conversation, text), ids, mask) in enumerate(
            zip(texts, inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
        ):
            kept = [token for token, keep in zip(ids, mask) if keep]
            images = tuple(i for i, token in enumerate(kept) if token == self._image_token_id)
            prompt = _Prompt(conversation, text, kept, _image_key(conversation), images)
            if tiles is not None and len(images) == 1:
                prompt.tiles = tiles[row, -1, :1]  # its picture's tiles, as its last token sees them
            rows.append(prompt)
        return rows

    # -- Mllama: pictures in cross-attention layers --------------------------------

    def _can_share(self, prompts: Sequence[_Prompt]) -> bool:
        """Whether the prefix cache can serve ``prompts``.

        Their image tokens must be found, and for Mllama each may have one picture at
        most, held by the image cache.
        """
        for prompt in prompts:
            if not prompt.conversation.images:
                continue
            if not prompt.images:
                return False
            if self._cross_layers and (prompt.tiles is None or not self._images.holds(prompt.key[0])):
                return False
        return True

    def _batch_cache(
        self, states: Sequence[tuple[Any, Any]] | None, prompts: Sequence[_Prompt], repeats: Sequence[int]
    ) -> Any:
        """A batch cache holding ``states`` (per self-attention layer; None: empty).

        For Mllama its cross-attention layers hold the rows' pictures: ``prompts[i]``'s
        for ``repeats[i]`` rows.
        """
        if not self._cross_layers:
            return growing_cache(states or ())
        own = iter(states or ())
        per_layer = [None if i in self._cross_layers else next(own, None) for i in range(self._layer_count)]
        pictures: dict[int, tuple[Any, Any]] = {}
        if any(prompt.images for prompt in prompts):
            rows = [prompt for prompt, n in zip(prompts, repeats) for _ in range(n)]
            keys = [prompt.key[0] if prompt.images else None for prompt in rows]
            pictures = dict(zip(self._cross_layers, self._images.cross_attention_states(keys)))
        return growing_cache(per_layer, fixed=pictures)

    def _cross_attention_inputs(
        self, prompts: Sequence[_Prompt], starts: Sequence[int], width: int
    ) -> dict[str, Any]:
        """Mllama's ``cross_attention_mask`` for ``width`` positions of each prompt from ``starts[i]``.

        A position sees its prompt's picture (the tiles the processor marked) from the
        image token on, as the processor's own mask does; positions before it, left
        padding (negative positions) and prompts without a picture see none. Empty for
        other models and for prompts without pictures.
        """
        import torch

        tiles = next((prompt.tiles for prompt in prompts if prompt.tiles is not None), None)
        if not self._cross_layers or tiles is None:
            return {}
        rows = []
        for prompt, start in zip(prompts, starts):
            if prompt.tiles is None:
                rows.append(torch.zeros(width, *tiles.shape, dtype=tiles.dtype, device=tiles.device))
                continue
            positions = torch.arange(start, start + width, device=tiles.device)
            seen = (positions >= prompt.images[0]).to(tiles.dtype)
            rows.append(seen[:, None, None] * prompt.tiles)
        return {"cross_attention_mask": torch.stack(rows)}

    def _read_tails(
        self,
        prompts: list[_Prompt],
        tails: list[list[int]],
        layers: list[Layers],
        starts: list[int],
        *,
        logits: bool,
    ) -> Any:
        """One forward pass over each row's ``tails[row]``, continuing its cached ``starts[row]`` tokens.

        The cached parts are left-padded to one length and the tails right-padded;
        positions are given explicitly, so each row reads as if alone. Returns the
        model's output (``logits`` for every tail position, else only the last) and
        the batch cache.
        """
        import torch

        width, longest = max(len(t) for t in tails), max(starts)
        device = self._model.device
        input_ids = [t + [self._pad_token_id] * (width - len(t)) for t in tails]
        mask = [
            [0] * (longest - start) + [1] * (start + len(t)) + [0] * (width - len(t))
            for t, start in zip(tails, starts)
        ]
        positions = [list(range(start, start + width)) for start in starts]
        ones = [1] * len(tails)
        cache = self._batch_cache(stack_left_padded(list(zip(layers, starts)), ones), prompts, ones)
        output = self._model(
            input_ids=torch.tensor(input_ids, device=device),
            attention_mask=torch.tensor(mask, device=device),
            position_ids=torch.tensor(positions, device=device),
            **{self._cache_argument: cache},
            use_cache=True,
            logits_to_keep=0 if logits else 1,
            **self._cross_attention_inputs(prompts, starts, width),
        )
        return output, cache

    def _option_tokens(self, prompt: str, option: str) -> list[int]:
        """The tokens ``option`` adds after ``prompt`` when both are tokenized together."""
        before = self._tokenizer.encode(prompt, add_special_tokens=False)
        after = self._tokenizer.encode(prompt + option, add_special_tokens=False)
        common = 0
        for a, b in zip(before, after):
            if a != b:
                break
            common += 1
        if common == len(after):
            msg = f"Option {option!r} adds no token after the prefix. Use a non-empty option text."
            raise ValueError(msg)
        return after[common:]

    def _choose_single_tokens(self, requests: Sequence[ChoiceRequest], splits: list) -> list[ChoiceResult]:
        """Every option is one token: read them all from the prompts' last logits."""
        import torch

        inputs = self._encode([(r.conversation, r.prefix) for r in requests])
        with torch.inference_mode():
            logits = self._model(**inputs, logits_to_keep=1).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            ChoiceResult(
                logprobs=tuple(float(logprobs[row, tokens[0]]) for tokens in options),
                prompt_tokens=int(prompt_tokens[row]),
            )
            for row, options in enumerate(splits)
        ]

    def _choose_sequences(self, requests: Sequence[ChoiceRequest], splits: list) -> list[ChoiceResult]:
        """Some option spans several tokens: score prompt + option sequences in one batch."""
        import torch

        pairs = [(r, option) for r in requests for option in r.options]
        inputs = self._encode([(r.conversation, r.prefix + option) for r, option in pairs])
        lengths = [len(tokens) for options in splits for tokens in options]
        with torch.inference_mode():
            logits = self._model(**inputs, logits_to_keep=max(lengths) + 1).logits
        logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
        targets = inputs["input_ids"][:, -max(lengths) :]
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        scores = [float(picked[row, picked.shape[1] - n :].sum()) for row, n in enumerate(lengths)]
        prompt_tokens = (inputs["attention_mask"].sum(dim=1) - torch.tensor(lengths)).tolist()
        results, start = [], 0
        for request in requests:
            stop = start + len(request.options)
            results.append(
                ChoiceResult(logprobs=tuple(scores[start:stop]), prompt_tokens=int(prompt_tokens[start]))
            )
            start = stop
        return results

    # -- inputs -------------------------------------------------------------------

    def _prompt(self, conversation: Conversation, prefix: str) -> str:
        """The chat-templated conversation with the generation prompt, then ``prefix``.

        Bound tools go through the chat template when it has a tool format (it mentions
        ``tools``), otherwise through the package's tools prompt in the system turn.
        """
        native_tools = bool(conversation.tools) and "tools" in (self._processor.chat_template or "")
        messages = to_chat_messages(conversation, tools_in_template=native_tools)
        template = self._processor.apply_chat_template(
            messages,
            tools=list(conversation.tools) if native_tools else None,
            add_generation_prompt=True,
            tokenize=False,
        )
        return template + prefix

    def _encode(self, prompts: list[tuple[Conversation, str]]) -> dict[str, Any]:
        """Process (conversation, prefix) pairs into one left-padded batch on the model's device.

        Images already seen come as cached features (``mm_encoder_outputs``) instead
        of pixels where the model allows it.
        """
        return self._images.apply(self._process(prompts), _pictures_of(prompts))

    def _process(self, prompts: list[tuple[Conversation, str]]) -> Any:
        """The processor's left-padded batch for (conversation, prefix) pairs, on the model's device."""
        texts = [self._prompt(conversation, prefix) for conversation, prefix in prompts]
        images = [[decode_image(image) for image in conversation.images] for conversation, _ in prompts]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = images
        inputs = self._processor(**kwargs, add_special_tokens=False, padding_side="left")
        return inputs.to(self._model.device, dtype=self._model.dtype)


_Request = TypeVar("_Request", SampleRequest, ChoiceRequest)

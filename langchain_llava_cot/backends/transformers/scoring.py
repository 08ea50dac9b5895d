"""Choices: each option's log-probability right after a prompt.

One-token options (in context) are read from the prompts' last logits; longer ones
are scored over prompt + option sequences (each prepared with its request:
:class:`~.prompts.PreparedChoice`). Through the prefix cache
(:func:`choose_through_prefill`), a judge round's rows read their shared part once
and one forward pass reads each row's own tokens; otherwise one plain batched forward
pass reads whole prompts (:func:`choose_single_tokens`, :func:`choose_sequences`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.backends.base import ChoiceResult
from langchain_llava_cot.backends.transformers.inputs import Inputs
from langchain_llava_cot.backends.transformers.prefill import Prefill
from langchain_llava_cot.backends.transformers.prompts import PreparedChoice, Prompt

Splits = Sequence[Sequence[Sequence[int]]]
"""Per request, per option: the tokens the option adds after the request's prompt."""


def choose_through_prefill(
    prefill: Prefill, choices: Sequence[PreparedChoice], *, single: bool
) -> list[ChoiceResult] | None:
    """Score the choices reading each shared prompt part once (None: not possible here).

    Rows are the prompts (one-token options: read after the prompt) or prompt +
    option sequences (:meth:`Prefill.read_rows`).
    """
    splits = [choice.options for choice in choices]
    if single:
        rows = [choice.prompt for choice in choices]
        needs = [1] * len(choices)
    else:
        rows = [prompt for choice in choices for prompt in choice.option_prompts]
        needs = [len(tokens) + 1 for options in splits for tokens in options]
    read = prefill.read_rows(rows, needs)
    if read is None:
        return None
    logits, starts = read
    return _choice_results(splits, rows, logits, starts, single=single)


def choose_single_tokens(model: Any, inputs: Inputs, choices: Sequence[PreparedChoice]) -> list[ChoiceResult]:
    """Every option is one token: read them all from the prompts' last logits."""
    import torch

    batch = inputs.encode([choice.prompt for choice in choices])
    with torch.inference_mode():
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
    return [
        ChoiceResult(
            logprobs=tuple(float(logprobs[row, tokens[0]]) for tokens in choice.options),
            prompt_tokens=int(prompt_tokens[row]),
        )
        for row, choice in enumerate(choices)
    ]


def choose_sequences(model: Any, inputs: Inputs, choices: Sequence[PreparedChoice]) -> list[ChoiceResult]:
    """Some option spans several tokens: score prompt + option sequences in one batch."""
    import torch

    batch = inputs.encode([prompt for choice in choices for prompt in choice.option_prompts])
    lengths = [len(tokens) for choice in choices for tokens in choice.options]
    with torch.inference_mode():
        logits = model(**batch, logits_to_keep=max(lengths) + 1).logits
    logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    targets = batch["input_ids"][:, -max(lengths) :]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    scores = [float(picked[row, picked.shape[1] - n :].sum()) for row, n in enumerate(lengths)]
    prompt_tokens = (batch["attention_mask"].sum(dim=1) - torch.tensor(lengths)).tolist()
    results, start = [], 0
    for choice in choices:
        stop = start + len(choice.options)
        results.append(
            ChoiceResult(logprobs=tuple(scores[start:stop]), prompt_tokens=int(prompt_tokens[start]))
        )
        start = stop
    return results


def _choice_results(
    splits: Splits, rows: Sequence[Prompt], logits: Any, starts: list[int], *, single: bool
) -> list[ChoiceResult]:
    """Option log-probabilities read from the logits of :meth:`Prefill.read_rows`."""
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

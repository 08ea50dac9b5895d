"""From answers to results: one strategy's scored answers summed up, and strategies compared in pairs.

:func:`summarize` turns the records ``answers.jsonl`` keeps for one strategy (in the order of the
questions) into a :class:`~langchain_llava_cot.eval.report.StrategyResult`: accuracy with its Wilson
interval, well-formed and unreadable shares, pass@N, judge agreement, cost per question and accuracy
per category. :func:`compare_pairs` then sets each search's paired differences, question by
question: from greedy, and from the same search and judge with the fewest candidates.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.eval.report import StrategyResult
from langchain_llava_cot.eval.stats import paired_difference, wilson_interval
from langchain_llava_cot.eval.strategies import StrategySpec

__all__ = ["compare_pairs", "summarize"]


def summarize(spec: StrategySpec, records: Sequence[dict[str, Any]]) -> StrategyResult:
    """``spec``'s measurements over its scored ``records``, one per question."""
    n = len(records)
    result = StrategyResult(
        spec.name, spec.strategy, spec.candidates, spec.judge, questions=n, records=list(records)
    )
    if not n:
        return result
    correct = sum(float(r["correct"]) for r in records)
    result.accuracy = correct / n
    result.accuracy_interval = wilson_interval(correct, n)
    result.well_formed = sum(r["well_formed"] for r in records) / n
    result.unreadable = sum(not r.get("readable", True) for r in records) / n
    passes = [r["pass"] for r in records if r.get("pass") is not None]
    result.pass_at_n = sum(passes) / len(passes) if passes else None
    result.tokens_per_question = statistics.mean(r["input_tokens"] + r["output_tokens"] for r in records)
    result.generated_per_question = statistics.mean(r["output_tokens"] for r in records)
    result.requests_per_question = statistics.mean(r.get("requests", 0) for r in records)
    result.seconds_per_question = statistics.mean(r["seconds"] for r in records)
    if all("caption_right" in r for r in records):
        result.caption_right = sum(r["caption_right"] for r in records) / n
        result.follows_caption = sum(r["follows_caption"] for r in records) / n
    result.by_kind = _accuracy_by_category(records)
    decisions = [d for r in records for d in r["decisions"]]
    if spec.strategy != "greedy" and decisions:
        result.judge_decisions = len(decisions)
        result.judge_agreement = sum(ok for _, ok in decisions) / len(decisions)
        stages: dict[str, list[bool]] = {}
        for stage, ok in decisions:
            stages.setdefault(stage, []).append(ok)
        result.agreement_by_stage = {k: sum(v) / len(v) for k, v in stages.items()}
    return result


def _accuracy_by_category(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    kinds: dict[str, list[float]] = {}
    for r in records:
        kinds.setdefault(str(r.get("category", r.get("kind", ""))), []).append(float(r["correct"]))
    return {k: sum(v) / len(v) for k, v in sorted(kinds.items())}


def compare_pairs(results: Sequence[StrategyResult]) -> None:
    """Set each search's paired accuracy differences: from greedy, and from its fewest N.

    ``results`` must hold their records in the same question order (as :func:`summarize` makes them
    from one list of questions); a pair with different question counts is not compared.
    """
    greedy = next((r for r in results if r.strategy == "greedy"), None)
    searches = [r for r in results if r.strategy != "greedy" and r.records]
    for result in searches:
        if greedy is not None and len(greedy.records) == len(result.records):
            result.vs_greedy = paired_difference(_correct(result), _correct(greedy))
        fewest = min((r for r in searches if r.family == result.family), key=lambda r: r.candidates)
        if fewest.candidates < result.candidates and len(fewest.records) == len(result.records):
            diff, low, high = paired_difference(_correct(result), _correct(fewest))
            result.vs_fewer = (fewest.candidates, diff, low, high)


def _correct(result: StrategyResult) -> list[float]:
    return [float(r["correct"]) for r in result.records]

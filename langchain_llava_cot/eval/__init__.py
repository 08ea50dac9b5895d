"""Measure search strategies on the demo dataset's held-out split.

Data flow: test-split examples (:mod:`langchain_llava_cot.demo.dataset`) -> one
:class:`~langchain_llava_cot.chat_models.ChatLlavaCoT` per strategy, all sharing one
backend (the model is loaded once) -> ``invoke`` per question -> the search record in
``response_metadata["llava_cot"]`` is scored against the ground truth -> a summary
per strategy: a printed table, ``eval.json`` and ``eval.png`` (accuracy against tokens
per question).

Modules:

- :mod:`~langchain_llava_cot.eval.strategies`: the strategies to measure
  (``greedy``, ``STRATEGY:JUDGE:N``), the quick set and the full grid.
- :mod:`~langchain_llava_cot.eval.oracle`: scoring one answer: the stage oracles and
  a search record checked against the ground truth.
- :mod:`~langchain_llava_cot.eval.stats`: Wilson and paired 95% intervals, the ranking AUC.
- :mod:`~langchain_llava_cot.eval.report`: per-strategy results, the table (what each
  column means) and the plot.
- :mod:`~langchain_llava_cot.eval.run`: :func:`run_eval` over the held-out questions
  (in worker processes if asked), and ``llava-cot eval`` (:func:`main`).

>>> report = run_eval(questions=500, strategies=["greedy", "stage_beam:pairwise:4"])  # doctest: +SKIP
"""

from langchain_llava_cot.eval.oracle import score_record, stage_oracle
from langchain_llava_cot.eval.report import EvalReport, StrategyResult, plot
from langchain_llava_cot.eval.run import main, run_eval
from langchain_llava_cot.eval.stats import paired_difference, ranking_auc, wilson_interval
from langchain_llava_cot.eval.strategies import (
    ADAPTIVE_SUFFIX,
    GRID_STRATEGIES,
    JUDGES,
    SEARCHES,
    StrategySpec,
    default_strategies,
    parse_strategy,
)

__all__ = [
    "ADAPTIVE_SUFFIX",
    "GRID_STRATEGIES",
    "JUDGES",
    "SEARCHES",
    "EvalReport",
    "StrategyResult",
    "StrategySpec",
    "default_strategies",
    "main",
    "paired_difference",
    "parse_strategy",
    "plot",
    "ranking_auc",
    "run_eval",
    "score_record",
    "stage_oracle",
    "wilson_interval",
]

"""Measure search strategies on the demo's held-out questions, or on a benchmark file with any model.

Data flow: the demo's test-split examples (:mod:`langchain_llava_cot.demo.dataset`) or a
benchmark file's questions (:mod:`~langchain_llava_cot.eval.formats`, :mod:`~langchain_llava_cot.eval.data`)
-> one :class:`~langchain_llava_cot.chat_models.ChatLlavaCoT` per strategy, all sharing one
backend (the model is loaded once, or served) -> ``ainvoke`` per question, several in flight
-> the answer and the search record in ``response_metadata["llava_cot"]`` are scored
(:mod:`~langchain_llava_cot.eval.scorers`) and appended to ``answers.jsonl`` at once -> a summary
per strategy: a printed table, ``eval.json`` and ``eval.png`` (accuracy against tokens
per question).

Modules:

- :mod:`~langchain_llava_cot.eval.formats`: benchmark files as tables, one reader per format
  (VLMEvalKit TSV, JSONL/JSON, Parquet, ``save_to_disk`` folders).
- :mod:`~langchain_llava_cot.eval.data`: a table's rows as questions (columns, options, pictures).
- :mod:`~langchain_llava_cot.eval.scoring`: an answer scored the field's way (option, number, text);
  :mod:`~langchain_llava_cot.eval.grading`: open answers scored 0-1 by a chat model.
- :mod:`~langchain_llava_cot.eval.scorers`: a whole answer and its record scored, for the demo or a file.
- :mod:`~langchain_llava_cot.eval.answers`: the resumable ``answers.jsonl``.
- :mod:`~langchain_llava_cot.eval.serving`: a served model, checked before the first question.
- :mod:`~langchain_llava_cot.eval.lmms`: the model lmms-eval runs (``lmms-eval --model llava_cot``).

- :mod:`~langchain_llava_cot.eval.strategies`: the strategies to measure
  (``greedy``, ``STRATEGY:JUDGE:N``), the quick set and the full grid.
- :mod:`~langchain_llava_cot.eval.oracle`: scoring one answer: the stage oracles and
  a search record checked against the ground truth.
- :mod:`~langchain_llava_cot.eval.stats`: Wilson and paired 95% intervals, the ranking AUC.
- :mod:`~langchain_llava_cot.eval.report`: per-strategy results, the table (what each
  column means) and the plot.
- :mod:`~langchain_llava_cot.eval.asking`: one question asked with one strategy, through a shared
  backend (in-process or served) or in worker processes.
- :mod:`~langchain_llava_cot.eval.summary`: a strategy's answers summed up, and the paired
  differences between strategies.
- :mod:`~langchain_llava_cot.eval.run`: :func:`run_eval` over the questions (concurrently, or in
  worker processes), resuming what ``answers.jsonl`` holds.
- :mod:`~langchain_llava_cot.eval.cli`: ``llava-cot eval`` (:func:`main`).

>>> report = run_eval(questions=500, strategies=["greedy", "stage_beam:pairwise:4"])  # doctest: +SKIP
>>> report = run_eval(data="MMStar.tsv", base_url="http://127.0.0.1:8000/v1", concurrency=8)  # doctest: +SKIP
"""

from langchain_llava_cot.eval.answers import AnswerLog
from langchain_llava_cot.eval.cli import main
from langchain_llava_cot.eval.data import Dataset, EvalQuestion, load_questions, parse_columns
from langchain_llava_cot.eval.formats import DataError, read_table
from langchain_llava_cot.eval.grading import Grader
from langchain_llava_cot.eval.oracle import score_record, stage_oracle
from langchain_llava_cot.eval.report import EvalReport, StrategyResult, plot
from langchain_llava_cot.eval.run import run_eval
from langchain_llava_cot.eval.scoring import score_answer
from langchain_llava_cot.eval.stats import paired_difference, ranking_auc, wilson_interval
from langchain_llava_cot.eval.strategies import (
    ADAPTIVE_SUFFIX,
    GRID_STRATEGIES,
    JUDGES,
    StrategySpec,
    default_strategies,
    parse_strategy,
    searches,
)

__all__ = [
    "ADAPTIVE_SUFFIX",
    "GRID_STRATEGIES",
    "JUDGES",
    "AnswerLog",
    "DataError",
    "Dataset",
    "EvalQuestion",
    "EvalReport",
    "Grader",
    "StrategyResult",
    "StrategySpec",
    "default_strategies",
    "load_questions",
    "main",
    "paired_difference",
    "parse_columns",
    "parse_strategy",
    "plot",
    "ranking_auc",
    "read_table",
    "run_eval",
    "score_answer",
    "score_record",
    "searches",
    "stage_oracle",
    "wilson_interval",
]

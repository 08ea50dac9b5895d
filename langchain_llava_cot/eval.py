"""Measure search strategies on the demo dataset's held-out split.

Data flow: test-split examples (:mod:`langchain_llava_cot.demo.dataset`) -> one
:class:`~langchain_llava_cot.chat_models.ChatLlavaCoT` per strategy, all sharing one
backend (the model is loaded once) -> ``invoke`` per question -> the search record in
``response_metadata["llava_cot"]`` is scored against the ground truth -> a summary
per strategy: a printed table, ``eval.json`` and ``eval.png`` (accuracy against tokens
per question).

What the columns mean (``N`` is the strategy's number of candidates):

- **accuracy**: the conclusion gives the right answer (:func:`~langchain_llava_cot.demo.dataset.is_correct`).
- **well-formed**: every chosen stage came out of the model closed by its own tag, with
  no repair, and all four stages have text.
- **pass@N**: whether *any* candidate the final step offered was correct: for
  ``best_of_n`` any of the N whole answers (the usual pass@N, the ceiling of any
  judge picking among N samples); for ``stage_beam`` any of the N conclusions written
  after the chosen reasoning (the ceiling of the last judge decision only; earlier
  mistakes are already fixed in the prefix); for ``greedy`` the answer itself.
  About a third of the test questions are yes/no, where two samples that disagree
  already reach pass@2, so pass@N is an optimistic ceiling there.
- **judge agreement**: over the steps whose candidates were mixed (some right, some
  wrong by the stage's oracle), how often the winner was a right one. Stage oracles:
  summary = the reference summary; caption = lists exactly the scene's objects;
  reasoning = the reasoning that follows the chosen caption; conclusion = agrees with
  the chosen reasoning; whole answers = correct conclusion. Random choice scores the
  share of right candidates in those steps, about 50% for pairs.
- **tokens/q**: prompt plus generated tokens per question (judge passes count their
  prompt tokens), as the backend reports them; **gen/q**: generated tokens only.
- **s/q**: wall time per question.
- **caption right**: the chosen caption lists exactly the scene's objects (what the
  model saw); **follows caption**: the conclusion is the answer that the chosen caption
  implies, right or wrong (whether the reasoning uses what the model saw).

>>> report = run_eval(questions=500, strategies=["greedy", "stage_beam:pairwise:4"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_llava_cot.demo.dataset import (
    Example,
    examples,
    is_correct,
    normalize_answer,
    parse_caption,
    right_stage,
)
from langchain_llava_cot.stages import STAGES, Stage

__all__ = [
    "GRID_STRATEGIES",
    "JUDGES",
    "SEARCHES",
    "EvalReport",
    "StrategyResult",
    "StrategySpec",
    "default_strategies",
    "paired_difference",
    "parse_strategy",
    "run_eval",
    "stage_oracle",
    "wilson_interval",
]


@dataclass(frozen=True)
class StrategySpec:
    """One configuration to measure."""

    strategy: str
    candidates: int = 1
    judge: str | None = None
    adaptive: bool = False

    @property
    def name(self) -> str:
        """``greedy``, ``best_of_n:pairwise:4``, ``stage_beam+adaptive:likelihood:8``."""
        if self.strategy == "greedy":
            return "greedy"
        return f"{self.strategy}{ADAPTIVE_SUFFIX if self.adaptive else ''}:{self.judge}:{self.candidates}"


SEARCHES: tuple[str, ...] = ("best_of_n", "stage_beam", "vote", "retrace")
ADAPTIVE_SUFFIX = "+adaptive"
"""Appended to ``stage_beam`` or ``retrace`` in a spec: sample each step in rounds."""
JUDGES: tuple[str, ...] = ("verifier", "pairwise", "likelihood", "vote")
"""The judges an eval can name (the human judge needs a person)."""


def parse_strategy(text: str) -> StrategySpec:
    """Read ``greedy`` or ``STRATEGY:JUDGE:N`` (e.g. ``stage_beam:verifier:4``).

    ``stage_beam+adaptive`` and ``retrace+adaptive`` sample each step in rounds.
    """
    if text == "greedy":
        return StrategySpec("greedy")
    parts = text.split(":")
    search = parts[0].removesuffix(ADAPTIVE_SUFFIX)
    adaptive = parts[0].endswith(ADAPTIVE_SUFFIX)
    known = search in SEARCHES and (not adaptive or search in ("stage_beam", "retrace"))
    if len(parts) != 3 or not known or parts[1] not in JUDGES:
        msg = (
            f"Unknown strategy {text!r}. Write 'greedy' or STRATEGY:JUDGE:N with STRATEGY "
            f"{', '.join(SEARCHES)} (stage_beam and retrace may end in {ADAPTIVE_SUFFIX}) and JUDGE "
            f"{', '.join(JUDGES)}, e.g. stage_beam:verifier:4."
        )
        raise ValueError(msg)
    try:
        n = int(parts[2])
    except ValueError:
        n = 0
    if n < 1:
        msg = f"N in {text!r} must be a whole number of at least 1, e.g. stage_beam:verifier:4."
        raise ValueError(msg)
    return StrategySpec(search, n, parts[1], adaptive)


def default_strategies(judge: str | None = None) -> tuple[str, ...]:
    """The quick set: greedy, and both searches at N=4 with ``judge`` (None: ChatLlavaCoT's default)."""
    if judge is None:
        from langchain_llava_cot.options import DEFAULT_JUDGE

        judge = DEFAULT_JUDGE
    return ("greedy", f"best_of_n:{judge}:4", f"stage_beam:{judge}:4")


GRID_STRATEGIES: tuple[str, ...] = (
    "greedy",
    *(f"{search}:{judge}:{n}" for search in SEARCHES[:2] for judge in JUDGES[:3] for n in (2, 4, 8)),
    *(f"best_of_n:vote:{n}" for n in (2, 4, 8)),
)
"""The full grid (``--grid``): greedy, and best_of_n and stage_beam with every judge at N = 2, 4, 8."""


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default).

    >>> tuple(round(x, 3) for x in wilson_interval(80, 100))
    (0.711, 0.867)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = 1.96) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus that of ``b`` on the same questions, with a 95% interval.

    The interval is the normal one of the mean per-question difference (each -1, 0 or 1),
    which pairs the questions: far tighter than two separate intervals.

    >>> diff, low, high = paired_difference([True] * 60 + [False] * 40, [True] * 50 + [False] * 50)
    >>> round(diff, 2), low > 0
    (0.1, True)
    """
    if len(a) != len(b) or not a:
        msg = "Compare two strategies on the same, non-empty list of questions."
        raise ValueError(msg)
    diffs = [int(x) - int(y) for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    half = z * spread / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


@dataclass
class StrategyResult:
    """The measurements of one strategy."""

    name: str
    strategy: str
    candidates: int
    judge: str | None
    questions: int = 0
    accuracy: float = 0.0
    well_formed: float = 0.0
    pass_at_n: float = 0.0
    judge_agreement: float | None = None
    judge_decisions: int = 0
    """Mixed steps the agreement is measured on."""
    tokens_per_question: float = 0.0
    generated_per_question: float = 0.0
    seconds_per_question: float = 0.0
    by_kind: dict[str, float] = field(default_factory=dict)
    """Accuracy per question kind."""
    agreement_by_stage: dict[str, float] = field(default_factory=dict)
    caption_right: float = 0.0
    """Share of chosen captions that list exactly the scene's objects."""
    follows_caption: float = 0.0
    """Share of conclusions that give the answer their own chosen caption implies."""
    accuracy_interval: tuple[float, float] = (0.0, 1.0)
    """95% Wilson interval of the accuracy."""
    vs_greedy: tuple[float, float, float] | None = None
    """Accuracy minus greedy's on the same questions, with its paired 95% interval."""
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass
class EvalReport:
    """All strategies' results and where they were written."""

    results: list[StrategyResult]
    split: str
    questions: int
    model: str
    json_path: Path | None = None
    plot_path: Path | None = None

    def table(self) -> Any:
        """The results as a rich table."""
        from rich.table import Table

        table = Table(title=f"{self.questions} {self.split} questions, model {self.model}")
        for column in (
            "strategy",
            "accuracy (95% CI)",
            "vs greedy (95% CI)",
            "well-formed",
            "pass@N",
            "judge agreement",
            "tokens/q",
            "gen/q",
            "s/q",
            "caption right",
            "follows caption",
        ):
            table.add_column(column, justify="left" if column == "strategy" else "right")
        for r in self.results:
            agreement = "-" if r.judge_agreement is None else f"{r.judge_agreement:.1%} ({r.judge_decisions})"
            table.add_row(
                r.name,
                _accuracy_cell(r),
                _versus_cell(r),
                f"{r.well_formed:.1%}",
                f"{r.pass_at_n:.1%}",
                agreement,
                f"{r.tokens_per_question:,.0f}",
                f"{r.generated_per_question:,.0f}",
                f"{r.seconds_per_question:.2f}",
                f"{r.caption_right:.1%}",
                f"{r.follows_caption:.1%}",
            )
        return table

    def markdown(self) -> str:
        """The results as a Markdown table (for the README)."""
        lines = [
            "| strategy | accuracy (95% CI) | vs greedy (95% CI) | well-formed | pass@N | judge agreement "
            "| tokens/q | gen/q | s/q | caption right | follows caption |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.results:
            agreement = "-" if r.judge_agreement is None else f"{r.judge_agreement:.1%}"
            lines.append(
                f"| {r.name} | {_accuracy_cell(r)} | {_versus_cell(r)} | {r.well_formed:.1%} "
                f"| {r.pass_at_n:.1%} | {agreement} "
                f"| {r.tokens_per_question:,.0f} | {r.generated_per_question:,.0f} "
                f"| {r.seconds_per_question:.2f} | {r.caption_right:.1%} | {r.follows_caption:.1%} |"
            )
        return "\n".join(lines)


def _accuracy_cell(r: StrategyResult) -> str:
    low, high = r.accuracy_interval
    return f"{r.accuracy:.1%} ({100 * low:.1f}-{100 * high:.1f})"


def _versus_cell(r: StrategyResult) -> str:
    if r.vs_greedy is None:
        return "-"
    diff, low, high = r.vs_greedy
    return f"{100 * diff:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"


# --- scoring one answer --------------------------------------------------------------


def stage_oracle(example: Example, stage: str, text: str, chosen: dict[Stage, str]) -> bool:
    """Whether a candidate of ``stage`` is right by the stage's criterion."""
    if stage == Stage.SUMMARY.value:
        return text.strip() == example.stages[Stage.SUMMARY]
    if stage == Stage.CAPTION.value:
        listed = sorted((o.cell, o.name) for o in parse_caption(text))
        return listed == sorted((o.cell, o.name) for o in example.scene.objects)
    if stage == Stage.REASONING.value:
        return text.strip() == right_stage(example, Stage.REASONING, chosen)
    expected = right_stage(example, Stage.CONCLUSION, chosen) if Stage.REASONING in chosen else example.answer
    return normalize_answer(text) == normalize_answer(expected)


def _after(candidate: Mapping[str, Any], chosen: dict[Stage, str]) -> dict[Stage, str]:
    """The stages a candidate follows: ``chosen``, with the kept caption it continues (retrace)."""
    if "follows" not in candidate:
        return chosen
    return {**chosen, Stage.CAPTION: candidate["follows"]}


def score_record(example: Example, content: str, record: dict[str, Any]) -> dict[str, Any]:
    """Score one search record against the example's ground truth."""
    steps = record.get("steps") or []
    chosen: dict[Stage, str] = {}
    decisions: list[tuple[str, bool]] = []
    well_formed = True
    for step in steps:
        candidates = step["candidates"]
        winner = candidates[step["winner"]]
        well_formed = well_formed and bool(winner["closed"]) and not winner["problems"]
        if len(step["span"]) > 1:  # whole answers
            labels = [is_correct(c["stages"].get(Stage.CONCLUSION.value, ""), example) for c in candidates]
            stage_name = "answer"
        else:
            stage_name = step["stage"]
            labels = [stage_oracle(example, stage_name, c["text"], _after(c, chosen)) for c in candidates]
        if any(labels) and not all(labels):
            decisions.append((stage_name, labels[step["winner"]]))
        if step.get("retrace", {}).get("retraced"):  # back to the caption: only the summary stays
            chosen = {s: t for s, t in chosen.items() if s is Stage.SUMMARY}
            continue
        chosen = _after(winner, chosen)
        for name, text in winner["stages"].items():
            chosen[Stage(name)] = text
    stage_texts = record.get("chosen") or {}
    well_formed = well_formed and all(stage_texts.get(s.value, "").strip() for s in STAGES)
    last = steps[-1] if steps else None
    if last is None:
        finals = [content]
    elif len(last["span"]) > 1:
        finals = [c["stages"].get(Stage.CONCLUSION.value, "") for c in last["candidates"]]
    else:
        finals = [c["text"] for c in last["candidates"]]
    caption = stage_texts.get(Stage.CAPTION.value, "")
    implied = right_stage(example, Stage.CONCLUSION, {Stage.CAPTION: caption})
    return {
        "correct": is_correct(content, example),
        "well_formed": well_formed,
        "pass": any(is_correct(f, example) for f in finals),
        "decisions": decisions,
        "caption_right": stage_oracle(example, Stage.CAPTION.value, caption, {}),
        "follows_caption": normalize_answer(stage_texts.get(Stage.CONCLUSION.value, ""))
        == normalize_answer(implied),
    }


# --- running -------------------------------------------------------------------------


def _summarize(spec: StrategySpec, records: list[dict[str, Any]]) -> StrategyResult:
    n = len(records)
    result = StrategyResult(
        spec.name, spec.strategy, spec.candidates, spec.judge, questions=n, records=records
    )
    if not n:
        return result
    result.accuracy = sum(r["correct"] for r in records) / n
    result.accuracy_interval = wilson_interval(sum(r["correct"] for r in records), n)
    result.well_formed = sum(r["well_formed"] for r in records) / n
    result.pass_at_n = sum(r["pass"] for r in records) / n
    result.tokens_per_question = statistics.mean(r["input_tokens"] + r["output_tokens"] for r in records)
    result.generated_per_question = statistics.mean(r["output_tokens"] for r in records)
    result.seconds_per_question = statistics.mean(r["seconds"] for r in records)
    result.caption_right = sum(r["caption_right"] for r in records) / n
    result.follows_caption = sum(r["follows_caption"] for r in records) / n
    kinds: dict[str, list[bool]] = {}
    for r in records:
        kinds.setdefault(r["kind"], []).append(r["correct"])
    result.by_kind = {k: sum(v) / len(v) for k, v in sorted(kinds.items())}
    decisions = [d for r in records for d in r["decisions"]]
    if spec.strategy != "greedy" and decisions:
        result.judge_decisions = len(decisions)
        result.judge_agreement = sum(ok for _, ok in decisions) / len(decisions)
        stages: dict[str, list[bool]] = {}
        for stage, ok in decisions:
            stages.setdefault(stage, []).append(ok)
        result.agreement_by_stage = {k: sum(v) / len(v) for k, v in stages.items()}
    return result


def run_eval(
    model: str | Path | None = None,
    *,
    strategies: Iterable[str | StrategySpec] | None = None,
    questions: int = 100,
    split: str = "test",
    start: int = 0,
    temperature: float = 0.6,
    top_p: float | None = 0.9,
    seed: int = 0,
    output_dir: str | Path | None = "eval-results",
    progress: bool = True,
    backend: Any = None,
    keep_records: bool = True,
    max_stage_tokens: int | None = None,
    workers: int = 1,
) -> EvalReport:
    """Run each strategy on ``questions`` held-out questions and write the results.

    Args:
        model: Model folder; None uses the bundled demo model.
        strategies: ``greedy`` or ``STRATEGY:JUDGE:N`` strings, or :class:`StrategySpec`;
            None runs the quick set (:func:`default_strategies`).
        questions: How many questions of ``split`` to ask, from index ``start``.
        split: ``test`` (default) or ``validation``.
        start: Index of the first question.
        temperature: Sampling temperature of candidates (greedy always uses 0).
        top_p: Nucleus sampling of candidates.
        seed: Base seed; question ``i`` uses ``seed + i``, so runs repeat exactly.
        output_dir: Where ``eval.json`` and ``eval.png`` go; None writes nothing.
        progress: Show a progress bar.
        backend: A ready ``VLMBackend`` to use instead of loading ``model`` (one worker only).
        keep_records: Keep every question's scores in the JSON.
        max_stage_tokens: Token limit of each stage (None: the engine's defaults).
        workers: Processes that answer questions in parallel, each loading the model
            with one torch thread (on small CPU models 2 workers on 2 cores beat one
            worker with 2 threads: decoding is dominated by per-call overhead).

    Returns:
        The report; ``report.table()`` renders the table.
    """
    if strategies is None:
        strategies = default_strategies()
    specs = [s if isinstance(s, StrategySpec) else parse_strategy(s) for s in strategies]
    if not specs:
        msg = "No strategies to run; pass e.g. strategies=['greedy', 'stage_beam:pairwise:4']."
        raise ValueError(msg)
    if split not in ("test", "validation"):
        msg = f"Evaluate on 'test' or 'validation', not {split!r}: the model was trained on 'train'."
        raise ValueError(msg)
    if workers > 1 and backend is not None:
        msg = "A ready backend cannot be shared by worker processes; pass model= with workers > 1."
        raise ValueError(msg)
    if model is None:
        from langchain_llava_cot.demo import DEMO_MODEL_PATH

        model = DEMO_MODEL_PATH
    options = {"temperature": temperature, "top_p": top_p, "seed": seed, "max_stage_tokens": max_stage_tokens}
    items = examples(split, questions, start=start)  # type: ignore[arg-type]
    bar = _progress(len(specs) * len(items), progress)
    results = []
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(model),),
        )
    elif backend is None:
        from langchain_llava_cot.backends.transformers import TransformersBackend

        backend = TransformersBackend(str(model))
    try:
        for spec in specs:
            bar.set_description(spec.name)
            if pool is not None:
                futures = [pool.submit(_worker_ask, spec, example, options) for example in items]
                records = []
                for future in futures:
                    records.append(future.result())
                    bar.update(1)
            else:
                records = []
                for example in items:
                    records.append(_ask(backend, spec, example, options))
                    bar.update(1)
            results.append(_summarize(spec, records))
            if output_dir is not None:  # a run cut short keeps what it measured, compared
                _compare_with_greedy(results)
                _write_json(Path(output_dir), results, split, len(items), str(model), keep_records)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    _compare_with_greedy(results)
    report = EvalReport(results, split, len(items), str(model))
    if output_dir is not None:
        out = Path(output_dir)
        report.json_path = _write_json(out, results, split, len(items), str(model), keep_records)
        report.plot_path = plot(report, out / "eval.png")
    return report


def _compare_with_greedy(results: Sequence[StrategyResult]) -> None:
    """Set each search's paired accuracy difference from greedy, when greedy ran too."""
    greedy = next((r for r in results if r.strategy == "greedy"), None)
    if greedy is None:
        return
    base = [r["correct"] for r in greedy.records]
    if not base:
        return
    for result in results:
        if result is not greedy and len(result.records) == len(base):
            result.vs_greedy = paired_difference([r["correct"] for r in result.records], base)


_WORKER: dict[str, Any] = {}


def _init_worker(model: str) -> None:
    import torch

    from langchain_llava_cot.backends.transformers import TransformersBackend

    torch.set_num_threads(1)
    _WORKER["backend"] = TransformersBackend(model)


def _worker_ask(spec: StrategySpec, example: Example, options: dict[str, Any]) -> dict[str, Any]:
    return _ask(_WORKER["backend"], spec, example, options)


def _ask(backend: Any, spec: StrategySpec, example: Example, options: dict[str, Any]) -> dict[str, Any]:
    """Answer one question with one strategy and score it."""
    from langchain_llava_cot.chat_models import ChatLlavaCoT

    llm = ChatLlavaCoT(
        backend=backend,
        strategy=spec.strategy,  # type: ignore[arg-type]
        candidates=spec.candidates,
        adaptive=spec.adaptive,
        judge=spec.judge or "pairwise",
        temperature=options["temperature"],
        top_p=options["top_p"],
        max_stage_tokens=options["max_stage_tokens"],
    )
    seed = options["seed"] + example.index
    random.seed(seed)
    started = time.perf_counter()
    message = llm.invoke([example.message()], seed=seed)
    seconds = time.perf_counter() - started
    record = message.response_metadata["llava_cot"]
    usage: Mapping[str, Any] = message.usage_metadata or {}
    scored = score_record(example, str(message.content), record)
    scored.update(
        index=example.index,
        kind=example.kind,
        question=example.question,
        answer=example.answer,
        conclusion=str(message.content),
        chosen=record.get("chosen"),
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        seconds=seconds,
    )
    return scored


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="q", dynamic_ncols=True)


def _write_json(
    out: Path, results: Sequence[StrategyResult], split: str, questions: int, model: str, keep: bool
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    payload = {
        "split": split,
        "questions": questions,
        "model": model,
        "results": [{k: v for k, v in asdict(r).items() if keep or k != "records"} for r in results],
    }
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def plot(report: EvalReport, path: str | Path) -> Path:
    """Save accuracy against tokens and against seconds per question, one line per strategy, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120, sharey=True)
    groups: dict[tuple[str, str | None], list[StrategyResult]] = {}
    for r in report.results:
        search = r.name.split(":")[0]  # stage_beam, stage_beam+adaptive, retrace, ...
        groups.setdefault((search, r.judge if r.strategy != "greedy" else None), []).append(r)
    for ax, cost, label in (
        (axes[0], "tokens_per_question", "tokens per question (prompt + generated, log scale)"),
        (axes[1], "seconds_per_question", "seconds per question (one worker, log scale)"),
    ):
        for key, rows in groups.items():
            _plot_group(ax, key, sorted(rows, key=lambda r: getattr(r, cost)), cost)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%), 95% intervals")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Demo model, {report.questions} held-out questions")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


_STYLES = {
    ("greedy", None): ("black", "o"),
    ("best_of_n", "pairwise"): ("tab:orange", "s"),
    ("best_of_n", "likelihood"): ("tab:brown", "v"),
    ("best_of_n", "verifier"): ("tab:red", "P"),
    ("best_of_n", "vote"): ("tab:olive", "X"),
    ("vote", "likelihood"): ("tab:olive", "x"),
    ("vote", "verifier"): ("tab:pink", "x"),
    ("stage_beam", "pairwise"): ("tab:blue", "D"),
    ("stage_beam", "likelihood"): ("tab:green", "^"),
    ("stage_beam", "verifier"): ("tab:purple", "*"),
    ("stage_beam+adaptive", "likelihood"): ("tab:cyan", "^"),
    ("stage_beam+adaptive", "verifier"): ("tab:cyan", "*"),
    ("retrace", "likelihood"): ("tab:gray", "<"),
    ("retrace", "verifier"): ("darkslateblue", ">"),
}


def _plot_group(ax: Any, key: tuple[str, str | None], rows: list[StrategyResult], cost: str) -> None:
    colour, marker = _STYLES.get(key, ("gray", "x"))
    ax.errorbar(
        [getattr(r, cost) for r in rows],
        [100 * r.accuracy for r in rows],
        yerr=[
            [100 * (r.accuracy - r.accuracy_interval[0]) for r in rows],
            [100 * (r.accuracy_interval[1] - r.accuracy) for r in rows],
        ],
        marker=marker,
        color=colour,
        label=key[0] if key[1] is None else f"{key[0]} ({key[1]})",
        capsize=3,
    )
    for r in rows:
        if r.strategy != "greedy":
            ax.annotate(
                f"N={r.candidates}", (getattr(r, cost), 100 * r.accuracy),
                textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour,
            )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m langchain_llava_cot.eval``: run, print the table, write JSON and PNG."""
    parser = argparse.ArgumentParser(description="Measure search strategies on held-out demo questions.")
    parser.add_argument("--model", help="model folder (default: the bundled demo model)")
    parser.add_argument("--questions", type=int, default=100, help="held-out questions to ask (default 100)")
    parser.add_argument("--start", type=int, default=0, help="index of the first question (default 0)")
    parser.add_argument("--split", default="test", choices=["test", "validation"], help="(default test)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--strategies",
        default=None,
        help="comma-separated: greedy, best_of_n:verifier:4, stage_beam:likelihood:8, ... "
        f"(default: {','.join(default_strategies())})",
    )
    which.add_argument(
        "--grid", action="store_true", help=f"the full grid: {len(GRID_STRATEGIES)} strategies (slow)"
    )
    parser.add_argument("--temperature", type=float, default=0.6, help="(default 0.6)")
    parser.add_argument("--seed", type=int, default=0, help="(default 0)")
    parser.add_argument(
        "--out", default="eval-results", help="folder for eval.json and eval.png (default eval-results)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel processes, one torch thread each (default 1)"
    )
    parser.add_argument(
        "--max-stage-tokens", type=int, default=None, help="(default: the engine's per-stage limits)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    report = run_eval(
        args.model,
        strategies=GRID_STRATEGIES
        if args.grid
        else None
        if args.strategies is None
        else [s.strip() for s in args.strategies.split(",") if s.strip()],
        questions=args.questions,
        start=args.start,
        split=args.split,
        temperature=args.temperature,
        seed=args.seed,
        output_dir=args.out,
        progress=not args.no_progress,
        workers=args.workers,
        max_stage_tokens=args.max_stage_tokens,
    )
    from rich.console import Console

    console = Console()
    if console.width < 120:  # not a wide terminal (a pipe, a CI log): do not cut the columns
        console = Console(width=120)
    console.print(report.table())
    console.print(f"JSON: {report.json_path}\nplot: {report.plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

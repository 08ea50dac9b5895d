"""The results: one strategy's measurements, the table of all of them, and the plot.

What the columns mean (``N`` is the strategy's number of candidates):

- **accuracy**: the conclusion gives the right answer (the demo:
  :func:`~langchain_llava_cot.demo.dataset.is_correct`; a file: by option, number, text or grader,
  :mod:`~langchain_llava_cot.eval.scoring`); a grader's 0-1 scores are averaged.
- **unreadable** (a file): the scorer could read no answer out of the conclusion (no option, several
  options, no number...); such an answer counts as wrong.
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
  share of right candidates in those steps, about 50% for pairs. On a file, where no stage
  has an oracle, only the final step (the conclusions, or whole answers) is counted.
- **tokens/q**: prompt plus generated tokens per question (judge passes count their
  prompt tokens), as the backend reports them; **gen/q**: generated tokens only.
- **req/q**: model calls per question (a call asks for all N candidates of a step where the
  backend can; judge calls included).
- **s/q**: wall time per question (with several questions in flight, each one's own time).
- **caption right** (the demo): the chosen caption lists exactly the scene's objects (what
  the model saw); **follows caption** (the demo): the conclusion is the answer that the chosen
  caption implies, right or wrong (whether the reasoning uses what the model saw).

Accuracy per category (a file's ``category`` column, the demo's question kinds) is a second table
(:meth:`EvalReport.category_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalReport", "StrategyResult", "plot"]


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
    unreadable: float = 0.0
    """Share of answers the scorer could not read (counted wrong)."""
    pass_at_n: float | None = 0.0
    """None where no candidate but the chosen one was scored (graded answers)."""
    judge_agreement: float | None = None
    judge_decisions: int = 0
    """Mixed steps the agreement is measured on."""
    tokens_per_question: float = 0.0
    generated_per_question: float = 0.0
    requests_per_question: float = 0.0
    """Model calls per question (judge calls included)."""
    seconds_per_question: float = 0.0
    by_kind: dict[str, float] = field(default_factory=dict)
    """Accuracy per category (the demo's question kinds, a file's ``category`` column)."""
    agreement_by_stage: dict[str, float] = field(default_factory=dict)
    caption_right: float | None = None
    """The demo: share of chosen captions that list exactly the scene's objects."""
    follows_caption: float | None = None
    """The demo: share of conclusions that give the answer their own chosen caption implies."""
    accuracy_interval: tuple[float, float] = (0.0, 1.0)
    """95% Wilson interval of the accuracy."""
    vs_greedy: tuple[float, float, float] | None = None
    """Accuracy minus greedy's on the same questions, with its paired 95% interval."""
    vs_fewer: tuple[int, float, float, float] | None = None
    """The same search and judge with the fewest candidates that ran: that N, and this
    accuracy minus that one on the same questions, with its paired 95% interval."""
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def family(self) -> str:
        """The name without its N: ``stage_beam:likelihood`` for ``stage_beam:likelihood:8``."""
        return self.name.rsplit(":", 1)[0]


@dataclass
class EvalReport:
    """All strategies' results and where they were written."""

    results: list[StrategyResult]
    split: str
    """The demo's split, or ``file``."""
    questions: int
    model: str
    json_path: Path | None = None
    plot_path: Path | None = None
    source: str = ""
    """Where the questions came from: the demo's split, or the data file."""
    demo: bool = True
    """Whether these are the demo's questions (its stage oracles give the caption columns)."""
    kept: int = 0
    """Answers found in ``answers.jsonl`` and kept rather than asked again."""
    dropped: int = 0
    """Torn lines cut off ``answers.jsonl`` (their questions were asked again)."""

    def failures(self) -> list[str]:
        """One line per question a strategy could not ask (counted wrong), e.g. a prompt too long."""
        return [
            f"{r.name}, question {x['index']}: {x['error']}"
            for r in self.results
            for x in r.records
            if x.get("error")
        ]

    @property
    def title(self) -> str:
        """What was measured: how many questions, from where, on which model."""
        where = f"{self.split} questions" if self.demo else f"questions of {self.source}"
        return f"{self.questions} {where}, model {self.model}"

    def _columns(self) -> list[str]:
        columns = ["strategy", "accuracy (95% CI)", "vs greedy (95% CI)", "well-formed"]
        columns += [] if self.demo else ["unreadable"]
        columns += ["pass@N", "judge agreement", "tokens/q", "gen/q", "req/q", "s/q"]
        return columns + (["caption right", "follows caption"] if self.demo else [])

    def _cells(self, r: StrategyResult, decisions: bool) -> list[str]:
        agreement = "-" if r.judge_agreement is None else f"{r.judge_agreement:.1%}"
        if decisions and r.judge_agreement is not None:
            agreement += f" ({r.judge_decisions})"
        cells = [r.name, _accuracy_cell(r), _versus_cell(r), f"{r.well_formed:.1%}"]
        cells += [] if self.demo else [f"{r.unreadable:.1%}"]
        cells += [
            "-" if r.pass_at_n is None else f"{r.pass_at_n:.1%}",
            agreement,
            f"{r.tokens_per_question:,.0f}",
            f"{r.generated_per_question:,.0f}",
            f"{r.requests_per_question:.1f}",
            f"{r.seconds_per_question:.2f}",
        ]
        if self.demo:
            cells += [_share(r.caption_right), _share(r.follows_caption)]
        return cells

    def table(self) -> Any:
        """The results as a rich table."""
        from rich.table import Table

        table = Table(title=self.title)
        for column in self._columns():
            table.add_column(column, justify="left" if column == "strategy" else "right", no_wrap=True)
        for r in self.results:
            table.add_row(*self._cells(r, decisions=True))
        return table

    def markdown(self) -> str:
        """The results as a Markdown table (for the README)."""
        columns = self._columns()
        lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
        lines += ["| " + " | ".join(self._cells(r, decisions=False)) + " |" for r in self.results]
        return "\n".join(lines)

    def category_table(self) -> Any:
        """Accuracy per category (rows) and strategy (columns), as a rich table; None with one category."""
        from rich.table import Table

        categories = sorted({c for r in self.results for c in r.by_kind})
        if len(categories) < 2:
            return None
        table = Table(title="accuracy per category")
        table.add_column("category")
        table.add_column("questions", justify="right")
        for r in self.results:
            table.add_column(r.name, justify="right")
        counts = {
            c: sum(str(x.get("category", x.get("kind", ""))) == c for x in self.results[0].records)
            for c in categories
        }
        for category in categories:
            row = [category or "(none)", str(counts[category])]
            row += [_share(r.by_kind.get(category)) for r in self.results]
            table.add_row(*row)
        return table

    def scaling(self) -> list[str]:
        """One line per search that ran at several N: what more candidates bought, paired.

        >>> r = StrategyResult("stage_beam:likelihood:8", "stage_beam", 8, "likelihood")
        >>> r.vs_fewer = (2, 0.02, 0.005, 0.035)
        >>> EvalReport([r], "test", 1000, "demo").scaling()
        ['stage_beam:likelihood N=2 -> N=8: +2.0 points (95% CI +0.5 to +3.5)']
        """
        lines = []
        for r in self.results:
            if r.vs_fewer is not None:
                fewer, diff, low, high = r.vs_fewer
                lines.append(
                    f"{r.family} N={fewer} -> N={r.candidates}: {100 * diff:+.1f} points "
                    f"(95% CI {100 * low:+.1f} to {100 * high:+.1f})"
                )
        return lines


def _accuracy_cell(r: StrategyResult) -> str:
    low, high = r.accuracy_interval
    return f"{r.accuracy:.1%} ({100 * low:.1f}-{100 * high:.1f})"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _versus_cell(r: StrategyResult) -> str:
    if r.vs_greedy is None:
        return "-"
    diff, low, high = r.vs_greedy
    return f"{100 * diff:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"


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
        (axes[1], "seconds_per_question", "seconds per question (log scale)"),
    ):
        for key, rows in groups.items():
            _plot_group(ax, key, sorted(rows, key=lambda r: getattr(r, cost)), cost)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%), 95% intervals")
    axes[0].legend(fontsize=7)
    fig.suptitle(report.title)
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
    ("dvts", "likelihood"): ("tab:red", "d"),
    ("dvts", "verifier"): ("firebrick", "d"),
    ("particle_filter", "likelihood"): ("teal", "h"),
    ("particle_filter", "verifier"): ("darkcyan", "h"),
}


def _plot_group(ax: Any, key: tuple[str, str | None], rows: list[StrategyResult], cost: str) -> None:
    colour, marker = _STYLES.get(key, ("gray", "x"))
    ax.errorbar(
        [getattr(r, cost) for r in rows],
        [100 * r.accuracy for r in rows],
        yerr=[
            [max(0.0, 100 * (r.accuracy - r.accuracy_interval[0])) for r in rows],  # no rounding below 0
            [max(0.0, 100 * (r.accuracy_interval[1] - r.accuracy)) for r in rows],
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

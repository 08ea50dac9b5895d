"""Train a reward model for the demo: a tiny text classifier that checks a reasoning against its caption.

The demo model does not learn to verify at its size (its own verifier ranks near chance,
see the README). This trains a separate checker the way process reward models are
trained, from the sampler's own candidates labelled by an oracle:

1. **Candidates.** The bundled demo model answers questions it never trained on (train
   split, from :attr:`RewardConfig.first_question`) after the right summary and caption,
   sampling ``samples`` reasonings each as search samples them (temperature 0.6, top-p
   0.9). Each is labelled right when it is exactly the reasoning that follows the caption
   (:func:`~langchain_llava_cot.eval.stage_oracle`'s criterion); each also gets its whole
   answer (the conclusion its reasoning reaches, or another one).
2. **Made-up mistakes.** Per question, the right reasoning and one from
   :func:`~langchain_llava_cot.demo.mistakes.wrong_stage`, and every yes/no decision of the
   right reasoning cut just after it, as written and flipped (:func:`decision_rows`).
3. **Training.** A ``LlamaForSequenceClassification`` with one output, started from the
   demo model's language model, reads each row as
   :class:`~langchain_llava_cot.reward_models.RewardModelJudge` does
   (:func:`~langchain_llava_cot.judges.reward_text`). Every answer token is supervised:
   its logit learns whether the text up to it is still right, so the last one, the judge's
   score, is the log-odds that the answer so far is right.

Use one with :func:`~langchain_llava_cot.reward_models.text_reward_judge` (it reads text
only, so summaries and captions stay with the likelihood judge)::

    python -m langchain_llava_cot.demo.reward --out runs/reward-model   # 2,500 questions, 1,200 steps
    python benchmarks/judge_rank.py --reward-model runs/reward-model

The run's ``training.json`` holds how well the model ranks its own training rows
(:func:`fit_report`): set against the held-out ranking of ``judge_rank.py``, it tells a
model that never learned (near chance on both) from one that memorised (high on its own
rows only).

The README reports how it ranks (not better than likelihood), which is why no reward
model is bundled.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langchain_llava_cot.demo.dataset import Example, examples
from langchain_llava_cot.demo.mistakes import right_stage, wrong_stage
from langchain_llava_cot.judges import JudgeTask, reward_text
from langchain_llava_cot.stages import STAGE_SEPARATOR, Stage, cut_stage, render_answer

__all__ = [
    "RewardConfig",
    "RewardRow",
    "candidate_rows",
    "fit_report",
    "load_rows",
    "made_up_rows",
    "save_rows",
    "train_reward_model",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardConfig:
    """Sizes of the reward model and of its run."""

    questions: int = 2_500
    """Questions whose sampled reasonings are labelled."""
    first_question: int = 100_000
    """Index of the first train-split question used: past every question the demo model saw."""
    samples: int = 8
    """Reasonings sampled per question."""
    hidden_size: int = 128
    """Width, layers and heads: the demo language model's, which it starts from."""
    num_layers: int = 4
    num_heads: int = 4
    steps: int = 1_200
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    final_weight: float = 4.0
    """Loss weight of a row's last token (whose logit is the judge's score) and of the token
    where a wrong row goes wrong; the others weigh 1."""
    seed: int = 0


@dataclass(frozen=True)
class RewardRow:
    """One text the reward model reads, and whether the answer in it is right so far."""

    text: str
    right_text: str
    """The same row with the right reasoning and conclusion: where ``text`` departs from it,
    the answer goes wrong (what the per-token labels mark)."""
    question: int
    """Index of the question."""
    source: str = "sampled"
    """Where it comes from: ``sampled`` (the demo model's own candidate), ``made_up`` or ``decision``."""

    @property
    def right(self) -> bool:
        """Whether the answer so far is right (the text may stop mid-answer)."""
        return self.right_text.startswith(self.text)


def _given(example: Example) -> dict[Stage, str]:
    """The right summary and caption: what every row's answer starts from."""
    return {stage: example.stages[stage] for stage in (Stage.SUMMARY, Stage.CAPTION)}


def _read(example: Example, chosen: dict[Stage, str], stage: Stage, candidate: str) -> str:
    """``candidate`` for ``stage`` after ``chosen``, as the reward model reads it."""
    return reward_text(JudgeTask(example.conversation(), stage, chosen, (candidate,)), 0)


def _rows_for(
    example: Example, reasoning: str, conclusion: str, source: str = "sampled"
) -> Iterator[RewardRow]:
    """A reasoning after the right summary and caption, then the answer it ends in."""
    chosen, right = _given(example), example.stages
    yield RewardRow(
        _read(example, chosen, Stage.REASONING, reasoning),
        _read(example, chosen, Stage.REASONING, right[Stage.REASONING]),
        example.index,
        source,
    )
    after = {**chosen, Stage.REASONING: reasoning}
    right_after = {**chosen, Stage.REASONING: right[Stage.REASONING]}
    yield RewardRow(
        _read(example, after, Stage.CONCLUSION, conclusion),
        _read(example, right_after, Stage.CONCLUSION, right[Stage.CONCLUSION]),
        example.index,
        source,
    )


def _conclusion(example: Example, reasoning: str, rng: random.Random, wrong_share: float = 0.2) -> str:
    """The conclusion ``reasoning`` reaches, or (``wrong_share`` of the time) another one."""
    after = {**_given(example), Stage.REASONING: reasoning}
    if rng.random() < wrong_share:
        return wrong_stage(example, Stage.CONCLUSION, rng, after)
    return right_stage(example, Stage.CONCLUSION, after)


def candidate_rows(
    backend: Any, questions: list[Example], samples: int, seed: int, batch: int = 8
) -> Iterator[RewardRow]:
    """The demo model's own reasonings for ``questions``, labelled (step 1 of the module doc)."""
    from langchain_llava_cot.backends.base import SampleRequest

    rng = random.Random(seed)
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        requests = []
        for example in chunk:
            prefix = f"{render_answer(_given(example))}{STAGE_SEPARATOR}{Stage.REASONING.open_tag}"
            requests.append(
                SampleRequest(
                    example.conversation(),
                    prefix,
                    n=samples,
                    stop=(Stage.REASONING.close_tag,),
                    max_new_tokens=256,
                    temperature=0.6,
                    top_p=0.9,
                    seed=seed + example.index,
                )
            )
        for example, sampled in zip(chunk, backend.sample(requests)):
            for reasoning in dict.fromkeys(cut_stage(Stage.REASONING, s.text)[0].strip() for s in sampled):
                yield from _rows_for(example, reasoning, _conclusion(example, reasoning, rng))


def made_up_rows(example: Example, rng: random.Random) -> Iterator[RewardRow]:
    """The right reasoning and a made-up wrong one for ``example`` (step 2 of the module doc)."""
    right = example.stages[Stage.REASONING]
    for reasoning in (right, wrong_stage(example, Stage.REASONING, rng)):
        yield from _rows_for(example, reasoning, _conclusion(example, reasoning, rng), "made_up")


_DECISION = re.compile(r"(?<= )(yes|no)\b")


def decision_rows(example: Example) -> Iterator[RewardRow]:
    """Every yes/no decision of the right reasoning, cut just after it: as written, and flipped.

    Sampled candidates hold few wrong decisions; these rows put one on every decision the
    reasoning makes, the skill a reasoning check needs most.
    """
    right = example.stages[Stage.REASONING]
    full = _read(example, _given(example), Stage.REASONING, right)
    start = full.index(right)
    for match in _DECISION.finditer(right):
        cut = start + match.start()
        flipped = "no" if match.group() == "yes" else "yes"
        yield RewardRow(full[: start + match.end()], full, example.index, "decision")
        yield RewardRow(full[:cut] + flipped, full, example.index, "decision")


def build_reward_model(tokenizer: Any, config: RewardConfig, init_from: str | Path | None = None) -> Any:
    """A ``LlamaForSequenceClassification`` with one output, sized by ``config``.

    With ``init_from`` (a LLaVA folder whose language model has that size) it starts from
    that language model's weights, which already know the answers' format; the score head
    is new.
    """
    import transformers

    llama = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=4 * config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=1024,
        num_labels=1,  # type: ignore[call-arg]  # a PretrainedConfig field
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForSequenceClassification(llama)
    if init_from is not None:
        vlm = transformers.AutoModelForImageTextToText.from_pretrained(str(init_from))
        model.model.load_state_dict(vlm.model.language_model.state_dict())
    return model


def train_reward_model(
    rows: list[RewardRow],
    tokenizer: Any,
    config: RewardConfig,
    init_from: str | Path | None = None,
    log_every: int = 100,
    on_log: Callable[[int, Any], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a reward model on ``rows`` for ``config.steps`` batches; return it and its record.

    Every token of the answer is supervised, not only the last: its logit learns whether
    the text up to it is still a prefix of the right answer (a process reward model's
    per-step labels, here per token), so the one read at the end, the judge's score, is
    whether the whole answer so far is right.
    """
    import torch

    torch.manual_seed(config.seed)
    model = build_reward_model(tokenizer, config, init_from)
    encoded = [_token_labels(row, tokenizer, config.final_weight) for row in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = random.Random(config.seed)
    order: list[int] = []
    smoothed, seen, history, t0 = float("nan"), 0, [], time.perf_counter()
    model.train()
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order = rng.sample(range(len(rows)), len(rows))
        batch, order = order[: config.batch_size], order[config.batch_size :]
        warm = min(1.0, (step + 1) / config.warmup_steps)
        lr = config.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, labels, weights = _pad([encoded[i] for i in batch], tokenizer.pad_token_id)
        hidden = model.model(input_ids=ids, attention_mask=(weights >= 0).long()).last_hidden_state
        logits = model.score(hidden)[..., 0]
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        w = weights.clamp(min=0)
        loss = (losses * w).sum() / w.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seen += int((weights >= 0).sum())
        smoothed = loss.item() if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss.item()
        if (step + 1) % log_every == 0:
            elapsed = time.perf_counter() - t0
            history.append({"step": step + 1, "loss": round(smoothed, 4), "seconds": round(elapsed, 1)})
            logger.info("step %d loss %.4f lr %.2e %.0f s", step + 1, smoothed, lr, elapsed)
            if on_log is not None:
                model.eval()
                on_log(step + 1, model)
                model.train()
    model.eval()
    record = {
        "rows": len(rows),
        "right_share": round(sum(row.right for row in rows) / len(rows), 4),
        "steps": config.steps,
        "tokens_seen": seen,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(smoothed, 4),
        "history": history,
    }
    return model, record


_Encoded = tuple[list[int], list[float], list[float]]


def _token_labels(row: RewardRow, tokenizer: Any, final_weight: float) -> _Encoded:
    """Ids, per-token labels and loss weights of one row.

    A token is labelled right while the text up to its end is still the right text; tokens
    before the reasoning (the question, summary and caption, given) weigh 0, the last one
    (the judge's score) ``final_weight``, the others 1.
    """
    encoded = tokenizer(row.text, return_offsets_mapping=True)
    agree = next(
        (i for i, (a, b) in enumerate(zip(row.text, row.right_text)) if a != b),
        min(len(row.text), len(row.right_text)),
    )
    answer_from = row.text.index(Stage.REASONING.open_tag)
    labels = [float(end <= agree) for _, end in encoded.offset_mapping]
    weights = [float(end > answer_from) for _, end in encoded.offset_mapping]
    if not row.right:  # the token where the answer goes wrong: the decision to learn
        weights[labels.index(0.0)] = final_weight
    weights[-1] = final_weight
    return encoded.input_ids, labels, weights


def _pad(rows: list[_Encoded], pad: int) -> tuple[Any, Any, Any]:
    """Right-padded ids, labels and weights; padding weighs -1 (and is masked out)."""
    import torch

    longest = max(len(ids) for ids, _, _ in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    labels = torch.zeros((len(rows), longest))
    weights = torch.full((len(rows), longest), -1.0)
    for i, (row_ids, row_labels, row_weights) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_ids)] = torch.tensor(row_labels)
        weights[i, : len(row_ids)] = torch.tensor(row_weights)
    return ids, labels, weights


def fit_report(model: Any, tokenizer: Any, rows: list[RewardRow]) -> dict[str, Any]:
    """How well a reward model ranks the rows it is scored on, read as the judge reads them.

    - ``within_question_auc``: over each question's reasonings (rows that end at the
      reasoning's closing tag), the ranking AUC of right against wrong ones, averaged over
      questions whose reasonings are mixed: what ``benchmarks/judge_rank.py`` reports on
      held-out questions. ``sampled`` counts the demo model's own reasonings only, ``all``
      adds the made-up ones.
    - ``pooled_auc``: every row's score against its label, by source, and all together.
    - ``accuracy``: the share of rows whose score has the label's sign (right above 0).
    """
    import statistics

    from langchain_llava_cot.eval.stats import ranking_auc
    from langchain_llava_cot.reward_models import RewardModelJudge

    scores = RewardModelJudge(model, tokenizer).read([row.text for row in rows])
    report: dict[str, Any] = {"rows": len(rows), "within_question_auc": {}, "pooled_auc": {}}
    for name, sources in (("sampled", {"sampled"}), ("all", {"sampled", "made_up"})):
        groups: dict[int, list[tuple[float, bool]]] = {}
        for row, score in zip(rows, scores):
            if row.source in sources and row.text.endswith(Stage.REASONING.close_tag):
                groups.setdefault(row.question, []).append((score, row.right))
        aucs = [ranking_auc([s for s, _ in found], [ok for _, ok in found]) for found in groups.values()]
        mixed = [auc for auc in aucs if auc is not None]
        report["within_question_auc"][name] = {
            "auc": round(statistics.mean(mixed), 4) if mixed else None,
            "mixed_questions": len(mixed),
        }
    for source in ("sampled", "made_up", "decision", None):
        kept = [(s, row.right) for row, s in zip(rows, scores) if source is None or row.source == source]
        auc = ranking_auc([s for s, _ in kept], [ok for _, ok in kept]) if kept else None
        report["pooled_auc"][source or "all"] = None if auc is None else round(auc, 4)
    report["accuracy"] = round(sum((s > 0) == row.right for row, s in zip(rows, scores)) / len(rows), 4)
    return report


def build_rows(config: RewardConfig, model_dir: str | Path) -> list[RewardRow]:
    """Every training row: the demo model's candidates, made-up mistakes and flipped decisions."""
    from langchain_llava_cot.backends.transformers import TransformersBackend

    questions = examples("train", config.questions, config.first_question)
    backend = TransformersBackend(str(model_dir))
    rows: list[RewardRow] = []
    t0 = time.perf_counter()
    for done, row in enumerate(candidate_rows(backend, questions, config.samples, config.seed), 1):
        rows.append(row)
        if done % 2000 == 0:
            logger.info("%d candidate rows, %.0f s", done, time.perf_counter() - t0)
    rng = random.Random(config.seed)
    for example in questions:
        rows.extend(made_up_rows(example, rng))
        rows.extend(decision_rows(example))
    return rows


def save_rows(rows: list[RewardRow], path: Path) -> None:
    """Write rows as JSON lines, so a run can be trained or measured again without sampling."""
    path.write_text("".join(json.dumps(asdict(row)) + "\n" for row in rows))


def load_rows(path: Path) -> list[RewardRow]:
    """Rows written by :func:`save_rows`."""
    return [RewardRow(**json.loads(line)) for line in path.read_text().splitlines() if line]


def main(argv: list[str] | None = None) -> None:
    """``python -m langchain_llava_cot.demo.reward --out DIR``: sample, label, train, measure, save.

    The folder gets the model, its tokenizer, ``rows.jsonl`` (every training row) and
    ``training.json``: the run's record, with ``train_fit`` (:func:`fit_report` on its own
    training rows) and ``fit_history`` (the same on the first ``--curve-questions``
    questions' rows, every ``--curve-every`` steps). ``--rows FILE`` trains on saved rows
    instead of sampling new ones.
    """
    import torch
    import transformers

    from langchain_llava_cot.demo import DEMO_MODEL_PATH

    defaults = RewardConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to save the reward model in")
    parser.add_argument(
        "--model", default=str(DEMO_MODEL_PATH), help="the sampling model (default: the demo's)"
    )
    parser.add_argument("--questions", type=int, default=defaults.questions)
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=Path, default=None, help="train on these saved rows (rows.jsonl)")
    parser.add_argument("--curve-every", type=int, default=200, help="steps between fit measurements")
    parser.add_argument("--curve-questions", type=int, default=100, help="questions the fit curve reads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # long CPU runs slow down tenfold on denormals otherwise
    config = RewardConfig(questions=args.questions, samples=args.samples, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = load_rows(args.rows) if args.rows else build_rows(config, args.model)
    save_rows(rows, out / "rows.jsonl")
    prepared = time.perf_counter() - t0
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    first = sorted({row.question for row in rows})[: args.curve_questions]
    curve_rows = [row for row in rows if row.question in set(first)]
    history: list[dict[str, Any]] = []

    def measure(step: int, model: Any) -> None:
        if step % args.curve_every == 0:
            history.append({"step": step, **fit_report(model, tokenizer, curve_rows)})
            logger.info("step %d fit %s", step, history[-1]["within_question_auc"])

    model, record = train_reward_model(rows, tokenizer, config, init_from=args.model, on_log=measure)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    started = time.perf_counter()
    fit = fit_report(model, tokenizer, rows)
    fit["seconds"] = round(time.perf_counter() - started, 1)
    record = {
        "config": asdict(config),
        "prepare_seconds": round(prepared, 1),
        **record,
        "train_fit": fit,
        "fit_history": history,
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

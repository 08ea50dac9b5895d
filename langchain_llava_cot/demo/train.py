"""Train the bundled demo model: a tiny LLaVA that answers shapes questions in four stages.

Data flow:

- :mod:`langchain_llava_cot.demo.dataset` gives scenes, questions and four-stage answers;
- :func:`build_examples` turns them into training sequences laid out exactly as the
  engine prompts the model (``apply_chat_template(to_chat_messages(conv),
  add_generation_prompt=True, tokenize=False) + target + <|eot_id|>``), each with a
  per-token loss weight that is zero outside the assistant's reply:

  * *answers*: the whole four-stage answer. A quarter of them show a caption with one
    mistake (weight zero on it) followed by the reasoning and conclusion that follow
    *that* caption, which teaches the reasoning to follow the caption;
  * *pairwise judge*: :func:`~langchain_llava_cot.judges.pairwise_prompt` for one stage
    (or whole answers), one right and one wrong candidate (see
    :func:`~langchain_llava_cot.demo.dataset.wrong_stage`), in both orders, answered
    ``The better response is 1.`` or ``... 2.``; the ``1``/``2`` token weighs more;

  * *tool use* (:func:`tool_examples`, when the config asks for them): the tools prompt for an
    ``add(a, b)`` tool (``tool_choice`` None or ``"any"``, sometimes with the agent
    example's system prompt). Sum questions ("How many X and Y are there in total?")
    get the usual summary, caption and reasoning and a conclusion that is exactly
    ``<tool_call>{"name": "add", "arguments": {"a": NA, "b": NB}}</tool_call>`` with the
    reasoning's two counts; the follow-up turn (that call in the history, then the user
    turn ``Tool result (add): N``, as ``convert_messages`` renders them) gets the whole
    answer, concluding ``N``. Other questions asked with the tools prompt are answered
    directly;

- :func:`train_demo` builds the model with
  :func:`~langchain_llava_cot.model_builders.build_tiny_vlm` (its tokenizer is trained
  on the dataset's text, with the stage tags as single tokens), trains it with AdamW
  for a time or step budget, and saves it with ``save_pretrained`` (safetensors).

Run it with ``python -m langchain_llava_cot.demo.train --out DIR``.

The bundled model was trained that way for 18 minutes, then fine-tuned for 9 minutes to
call the ``add`` tool (continuing from it, with answers, judge pairs and tool-use
sequences mixed by :data:`TOOLS_CONFIG`); its ``training.json`` records both runs::

    python -m langchain_llava_cot.demo.train --minutes 18 --out /tmp/demo-base
    python -m langchain_llava_cot.demo.train --init /tmp/demo-base \
        --tools --minutes 9 --seed 1 --out /tmp/demo-tools
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_llava_cot.conversation import Conversation, Turn, to_chat_messages
from langchain_llava_cot.demo.dataset import (
    Example,
    examples,
    iter_examples,
    perturb_objects,
    right_stage,
    write_stages,
    wrong_stage,
)
from langchain_llava_cot.judges import VERDICT_PREFIX, JudgeTask, pairwise_prompt
from langchain_llava_cot.stages import STAGES, Stage, render_answer
from langchain_llava_cot.tools import format_tool_calls, render_tools_prompt

__all__ = [
    "DEFAULT_CONFIG",
    "JUDGE_STAGES",
    "TOOLS_CONFIG",
    "TrainConfig",
    "add_tool_prompt",
    "build_examples",
    "judge_pair",
    "tool_examples",
    "train_demo",
]

logger = logging.getLogger(__name__)

EOT = "<|eot_id|>"


@dataclass(frozen=True)
class TrainConfig:
    """Sizes of the model and of the run."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    vision_hidden_size: int = 96
    vision_layers: int = 3
    answers: int = 14_000
    """Answer sequences in the pool."""
    judge_pairs: int = 4_000
    """Judge pairs in the pool (each gives two sequences, one per order)."""
    tokens_per_batch: int = 12_000
    """Padded tokens per batch. With small batches (3,000) AdamW's noisy steps made the
    vision tower's activations grow until the image's details were drowned out, and the
    model learned to ignore the picture."""
    lr: float = 1e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01
    verdict_weight: float = 4.0
    """Loss weight of the verdict's ``1``/``2`` token (other reply tokens weigh 1)."""
    tool_questions: int = 0
    """Sum questions made into tool-use sequences (a call and its follow-up each)."""
    tool_others: int = 0
    """Other questions asked with the tools prompt and answered directly."""


DEFAULT_CONFIG = TrainConfig()
TOOLS_CONFIG = TrainConfig(
    answers=3_000,
    judge_pairs=800,
    tool_questions=1_200,
    tool_others=600,
    tokens_per_batch=3_000,
    lr=5e-4,
    warmup_steps=20,
)
"""The fine-tuning run that taught the bundled model to call ``add``."""

AGENT_SYSTEM_PROMPT = "Count carefully; use the add tool for sums."
"""The system prompt of ``examples/agent.py``."""

JUDGE_STAGES: tuple[Stage | None, ...] = (
    Stage.SUMMARY,
    Stage.CAPTION,
    Stage.CAPTION,
    Stage.CAPTION,
    Stage.REASONING,
    Stage.REASONING,
    Stage.REASONING,
    Stage.CONCLUSION,
    Stage.CONCLUSION,
    None,
)
"""The stage of each judge training pair, drawn uniformly from this list (None: whole answers)."""


@dataclass
class Sequence_:
    """One training sequence."""

    ids: list[int]
    weights: list[float]
    image: int
    """Index of the example whose image it shows."""


def _prompt(processor: Any, conversation: Any) -> str:
    return processor.apply_chat_template(
        to_chat_messages(conversation), add_generation_prompt=True, tokenize=False
    )


def _encode(
    processor: Any, prompt: str, pieces: list[tuple[str, float]], image_tokens: int
) -> tuple[list[int], list[float]]:
    """Token ids of ``prompt + pieces``, tokenized as one string, and per-token weights.

    Each piece of the reply has a weight; a token takes the weight of the piece its
    first character falls in (prompt tokens weigh 0).
    """
    tokenizer = processor.tokenizer
    image_token = processor.image_token
    text = prompt + "".join(p for p, _ in pieces)
    expanded = text.replace(image_token, image_token * image_tokens)
    encoding = tokenizer(expanded, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(expanded) - len(text)
    bounds, start = [], len(prompt) + offset
    for piece, weight in pieces:
        bounds.append((start, start + len(piece), weight))
        start += len(piece)
    weights = []
    for begin, _ in encoding["offset_mapping"]:
        weights.append(next((w for lo, hi, w in bounds if lo <= begin < hi), 0.0))
    return encoding["input_ids"], weights


def _answer_pieces(example: Example, rng: random.Random) -> list[tuple[str, float]]:
    stages = dict(example.stages)
    caption_weight = 1.0
    if rng.random() < 0.25:
        wrong = write_stages(example.spec, perturb_objects(example.scene.objects, rng))
        stages = {**wrong, Stage.SUMMARY: stages[Stage.SUMMARY]}
        caption_weight = 0.0
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(STAGES):
        rendered = render_answer({stage: stages[stage]})
        if i:
            pieces.append(("\n\n", 1.0))
        pieces.append((rendered, caption_weight if stage is Stage.CAPTION else 1.0))
    pieces.append((EOT, 1.0))
    return pieces


def judge_pair(
    example: Example, stage: Stage | None, rng: random.Random
) -> tuple[dict[Stage, str], str, str]:
    """Earlier stages, a right and a wrong candidate for ``stage`` (None: whole answers)."""
    if stage is None:
        right = example.target
        how = rng.choice(["caption", "caption", "reasoning", "conclusion"])
        if how == "caption":
            wrong_stages = write_stages(example.spec, perturb_objects(example.scene.objects, rng))
        elif how == "reasoning":
            reasoning = wrong_stage(example, Stage.REASONING, rng)
            wrong_stages = {**example.stages, Stage.REASONING: reasoning}
            answer = right_stage(example, Stage.CONCLUSION, {Stage.REASONING: reasoning})
            wrong_stages[Stage.CONCLUSION] = answer
        else:
            wrong_stages = {**example.stages, Stage.CONCLUSION: wrong_stage(example, Stage.CONCLUSION, rng)}
        wrong = render_answer(wrong_stages)
        if wrong == right:
            wrong = render_answer(
                {**example.stages, Stage.CONCLUSION: wrong_stage(example, Stage.CONCLUSION, rng)}
            )
        return {}, right, wrong
    before = STAGES[: STAGES.index(stage)]
    chosen = {s: example.stages[s] for s in before}
    if stage in (Stage.REASONING, Stage.CONCLUSION) and rng.random() < 0.3:
        # Earlier stages the model got wrong: the right candidate follows them anyway.
        wrong_caption = write_stages(example.spec, perturb_objects(example.scene.objects, rng))
        chosen[Stage.CAPTION] = wrong_caption[Stage.CAPTION]
        if stage is Stage.CONCLUSION:
            chosen[Stage.REASONING] = wrong_caption[Stage.REASONING]
    return chosen, right_stage(example, stage, chosen), wrong_stage(example, stage, rng, chosen)


def add_tool_prompt(tool_choice: str | None = None) -> str:
    """The tools prompt for an ``add(a: int, b: int)`` tool, as ``bind_tools`` renders it."""
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two whole numbers, e.g. two counts of shapes."""
        return a + b

    return render_tools_prompt([convert_to_openai_tool(add)], tool_choice)


def _is_sum(example: Example) -> bool:
    return example.kind == "arithmetic" and example.spec.operation == "add"


def _tool_conversation(example: Example, rng: random.Random, *history: Turn) -> Conversation:
    """``example``'s question with the add tool bound, then ``history``."""
    turns = [Turn(role="user", text=example.question, images=(example.image_bytes,)), *history]
    if rng.random() < 0.3:
        turns.insert(0, Turn(role="system", text=AGENT_SYSTEM_PROMPT))
    choice = rng.choice([None, None, "any"]) if _is_sum(example) and not history else None
    return Conversation(turns=tuple(turns), tools_prompt=add_tool_prompt(choice))


def _add_call(example: Example, objects: Any) -> str:
    """The add call on the counts of a sum question's two sets among ``objects``."""
    first, second = example.spec.first, example.spec.second
    assert first is not None and second is not None  # a sum question has both sets
    a, b = (sum(f.matches(o) for o in objects) for f in (first, second))
    return format_tool_calls([{"name": "add", "args": {"a": a, "b": b}, "id": "0", "type": "tool_call"}])


def _call_pieces(example: Example, rng: random.Random) -> list[tuple[str, float]]:
    """A sum question's first turn: the stages, ending in an add call on the caption's counts.

    A quarter show a caption with a mistake (weight zero) and the counts it gives.
    """
    objects, caption_weight = example.scene.objects, 1.0
    if rng.random() < 0.25:
        objects, caption_weight = perturb_objects(objects, rng), 0.0
    stages = write_stages(example.spec, objects)
    call = _add_call(example, objects)
    stages[Stage.SUMMARY] = example.stages[Stage.SUMMARY]
    stages[Stage.CONCLUSION] = call
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(STAGES):
        if i:
            pieces.append(("\n\n", 1.0))
        pieces.append(
            (render_answer({stage: stages[stage]}), caption_weight if stage is Stage.CAPTION else 1.0)
        )
    return [*pieces, (EOT, 1.0)]


def tool_examples(
    processor: Any, pool: list[Example], config: TrainConfig, rng: random.Random, image_tokens: int
) -> list[Sequence_]:
    """Tool-use sequences (see the module docstring); their examples are appended to ``pool``."""
    sums = others = 0
    sequences: list[Sequence_] = []
    for example in iter_examples("train", start=len(pool)):
        if sums >= config.tool_questions and others >= config.tool_others:
            break
        if _is_sum(example) and sums < config.tool_questions:
            sums += 1
            pool.append(example)
            pieces = _call_pieces(example, rng)
            prompt = _prompt(processor, _tool_conversation(example, rng))
            sequences.append(Sequence_(*_encode(processor, prompt, pieces, image_tokens), len(pool) - 1))
            result = Turn(role="user", text=f"Tool result (add): {example.answer}")
            call = Turn(role="assistant", text=_add_call(example, example.scene.objects))
            conversation = _tool_conversation(example, rng, call, result)
            follow = [(example.target, 1.0), (EOT, 1.0)]
            ids, weights = _encode(processor, _prompt(processor, conversation), follow, image_tokens)
            sequences.append(Sequence_(ids, weights, len(pool) - 1))
        elif not _is_sum(example) and others < config.tool_others:
            others += 1
            pool.append(example)
            prompt = _prompt(processor, _tool_conversation(example, rng))
            ids, weights = _encode(processor, prompt, _answer_pieces(example, rng), image_tokens)
            sequences.append(Sequence_(ids, weights, len(pool) - 1))
    return sequences


def build_examples(
    processor: Any, config: TrainConfig = DEFAULT_CONFIG, *, seed: int = 0, image_tokens: int = 64
) -> tuple[list[Sequence_], list[Example]]:
    """The training pool: answer, judge and tool-use sequences over training-split examples."""
    rng = random.Random(seed)
    pool = examples("train", config.answers + config.judge_pairs)
    sequences: list[Sequence_] = []
    for i, example in enumerate(pool[: config.answers]):
        prompt = _prompt(processor, example.conversation())
        ids, weights = _encode(processor, prompt, _answer_pieces(example, rng), image_tokens)
        sequences.append(Sequence_(ids, weights, i))
    for i in range(config.answers, len(pool)):
        example = pool[i]
        stage = rng.choice(JUDGE_STAGES)
        chosen, right, wrong = judge_pair(example, stage, rng)
        for right_first in (True, False):
            candidates = (right, wrong) if right_first else (wrong, right)
            task = JudgeTask(example.conversation(), stage, chosen, candidates)
            prompt = _prompt(processor, pairwise_prompt(task, 0, 1))
            digit = " 1" if right_first else " 2"
            pieces = [(VERDICT_PREFIX, 1.0), (digit, config.verdict_weight), (".", 1.0), (EOT, 1.0)]
            ids, weights = _encode(processor, prompt, pieces, image_tokens)
            sequences.append(Sequence_(ids, weights, i))
    if config.tool_questions or config.tool_others:
        sequences += tool_examples(processor, pool, config, rng, image_tokens)
    return sequences, pool


def _corpus(count: int = 3000) -> list[str]:
    """Text the tokenizer is trained on: questions, answers and judge prompts."""
    rng = random.Random(1)
    lines = []
    for example in examples("train", count):
        lines.append(example.question)
        lines.extend(render_answer({s: t}) for s, t in example.stages.items())
        stage = rng.choice(JUDGE_STAGES)
        chosen, right, wrong = judge_pair(example, stage, rng)
        task = JudgeTask(example.conversation(), stage, chosen, (right, wrong))
        lines.append(pairwise_prompt(task, 0, 1).question)
        lines.append(f"{VERDICT_PREFIX} 1. {VERDICT_PREFIX} 2.")
    return lines


def _batches(sequences: list[Sequence_], tokens_per_batch: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length, at most ``tokens_per_batch`` padded tokens each."""
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i].ids), rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = len(sequences[i].ids)
        if current and max(longest, n) * (len(current) + 1) > tokens_per_batch:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def train_demo(
    output_dir: str | Path,
    *,
    minutes: float | None = 20.0,
    steps: int | None = None,
    seed: int = 0,
    config: TrainConfig = DEFAULT_CONFIG,
    threads: int | None = 2,
    log_every: int = 20,
    init: str | Path | None = None,
) -> Path:
    """Build and train the demo model (or go on training one), and save it to ``output_dir``.

    Args:
        output_dir: Folder to write the model, processor and ``training.json`` to.
        minutes: Wall-clock budget of the optimisation (data preparation not counted);
            the learning rate decays over it. None to rely on ``steps`` alone.
        steps: Number of optimizer steps; when both are given the first reached ends it.
        seed: Seed of the weights, the data and the batch order.
        config: Model and run sizes.
        threads: Torch CPU threads (None leaves torch's default).
        log_every: Log the loss every this many steps.
        init: A saved demo model to continue from (its weights and processor are copied
            to ``output_dir``, and its ``training.json`` is kept in the new one as
            ``init_record``) instead of building a new one.

    Returns:
        ``output_dir``, loadable with ``AutoProcessor`` / ``AutoModelForImageTextToText``.
    """
    if minutes is None and steps is None:
        msg = "Give minutes=, steps=, or both, so training knows when to stop."
        raise ValueError(msg)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    output_dir = Path(output_dir)
    if init is not None:
        shutil.copytree(init, output_dir, dirs_exist_ok=True)
    else:
        _build(output_dir, config, seed)
    processor = AutoProcessor.from_pretrained(output_dir)
    model = AutoModelForImageTextToText.from_pretrained(output_dir)
    image_tokens = model.config.image_seq_length
    sequences, pool = build_examples(processor, config, seed=seed, image_tokens=image_tokens)
    _check_layout(processor, pool[0], image_tokens)
    pixels = torch.cat(
        [processor.image_processor(ex.image(), return_tensors="pt")["pixel_values"] for ex in pool]
    )
    prepared = time.perf_counter() - started
    tokens = sum(len(s.ids) for s in sequences)
    logger.info("Prepared %d sequences (%d tokens) in %.0f s", len(sequences), tokens, prepared)

    pad = processor.tokenizer.pad_token_id
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    rng = random.Random(seed)
    budget = None if minutes is None else minutes * 60
    model.train()
    step, seen, history, t0 = 0, 0, [], time.perf_counter()
    smoothed = None
    done = False
    while not done:
        for batch in _batches(sequences, config.tokens_per_batch, rng):
            elapsed = time.perf_counter() - t0
            progress = max(elapsed / budget if budget else 0.0, step / steps if steps else 0.0)
            if progress >= 1.0:
                done = True
                break
            warm = min(1.0, (step + 1) / config.warmup_steps)
            lr = config.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            longest = max(len(sequences[i].ids) for i in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            weights = torch.zeros((len(batch), longest))
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = sequences[i]
                ids[row, : len(seq.ids)] = torch.tensor(seq.ids)
                weights[row, : len(seq.ids)] = torch.tensor(seq.weights)
                mask[row, : len(seq.ids)] = 1
            images = pixels[[sequences[i].image for i in batch]]
            logits = model(input_ids=ids, pixel_values=images, attention_mask=mask).logits
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1), reduction="none"
            )
            w = weights[:, 1:].reshape(-1)
            loss = (losses * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            seen += int(mask.sum())
            smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
            if step % log_every == 0:
                elapsed = time.perf_counter() - t0
                history.append({"step": step, "loss": round(smoothed, 4), "seconds": round(elapsed, 1)})
                logger.info(
                    "step %d loss %.4f lr %.2e %.0f tok/s %.0f s", step, smoothed, lr, seen / elapsed, elapsed
                )
    model.eval()
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    seconds = time.perf_counter() - t0
    record = {
        "config": config.__dict__,
        "init": None if init is None else str(init),
        "seed": seed,
        "steps": step,
        "tokens_seen": seen,
        "prepare_seconds": round(prepared, 1),
        "train_seconds": round(seconds, 1),
        "final_loss": round(smoothed or float("nan"), 4),
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if init is not None and (Path(init) / "training.json").is_file():
        record["init_record"] = json.loads((Path(init) / "training.json").read_text())
    (output_dir / "training.json").write_text(json.dumps(record, indent=1))
    logger.info("Trained %d steps in %.0f s; loss %.4f; saved to %s", step, seconds, smoothed, output_dir)
    return output_dir


def _build(output_dir: Path, config: TrainConfig, seed: int) -> None:
    """A new, untrained demo model and its processor, with a tokenizer trained on the data."""
    from langchain_llava_cot.model_builders import build_tiny_vlm

    build_tiny_vlm(
        output_dir,
        arch="llava",
        corpus=_corpus(),
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        vision_hidden_size=config.vision_hidden_size,
        vision_layers=config.vision_layers,
        seed=seed,
    )


def _check_layout(processor: Any, example: Example, image_tokens: int) -> None:
    """Make sure :func:`_encode` gives what the processor itself makes of the same text."""
    prompt = _prompt(processor, example.conversation())
    ids, _ = _encode(processor, prompt, [(example.target, 1.0), (EOT, 1.0)], image_tokens)
    text = prompt + example.target + EOT
    expected = processor(text=text, images=[example.image()], add_special_tokens=False)["input_ids"][0]
    if list(expected) != ids:
        msg = "Training sequences do not match the processor's tokenization; fix _encode."
        raise RuntimeError(msg)


def main(argv: list[str] | None = None) -> None:
    """``python -m langchain_llava_cot.demo.train --out DIR``."""
    parser = argparse.ArgumentParser(description="Train the demo LLaVA-CoT model on shapes.")
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (optional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", default=None, help="saved demo model to continue training")
    parser.add_argument("--tools", action="store_true", help="fine-tune with TOOLS_CONFIG (add tool use)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = TOOLS_CONFIG if args.tools else DEFAULT_CONFIG
    train_demo(
        args.out,
        minutes=args.minutes,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        config=config,
        init=args.init,
    )


if __name__ == "__main__":
    main()

"""Train the bundled demo model: a tiny LLaVA that answers shapes questions in four stages.

LLaVA's own recipe, in two stages:

1. **Vision.** The CLIP vision tower is pretrained alone on the scenes' own labels
   (:mod:`langchain_llava_cot.demo.vision`): 48 px pictures in 16 px patches, one patch
   per grid cell, a throwaway linear head naming each cell's object.
2. **Language.** The projector and the language model learn four-stage answers with the
   tower frozen; the first ``caption_phase`` of the steps see summary+caption-only
   answers, which makes the model learn to read its 9 image tokens first.

Data flow of stage 2:

- :mod:`langchain_llava_cot.demo.dataset` gives scenes, questions and four-stage answers
  (counting reasoning walks the caption object by object with a running count);
- :func:`build_examples` turns them into training sequences laid out exactly as the
  engine prompts the model (``apply_chat_template(to_chat_messages(conv),
  add_generation_prompt=True, tokenize=False) + target + <|eot_id|>``), each with a
  per-token loss weight that is zero outside the assistant's reply:

  * *answers*: the whole four-stage answer. A quarter of them show a caption with one
    mistake (weight zero on it) followed by the reasoning and conclusion that follow
    *that* caption, which teaches the reasoning to follow the caption;
  * *verifier*: :func:`~langchain_llava_cot.judges.verifier_prompt` for one caption,
    reasoning or conclusion candidate, right or wrong (see
    :func:`~langchain_llava_cot.demo.dataset.wrong_stage`), answered
    ``The candidate is right.`` or ``... wrong.``; the verdict word weighs more;
  * *pairwise judge*: :func:`~langchain_llava_cot.judges.pairwise_prompt` for one stage
    (or whole answers), one right and one wrong candidate, in both orders, answered
    ``The better response is 1.`` or ``... 2.``;
  * *off-domain*: small talk, a shapes question without its picture, or a picture that
    is not a drawing, answered by :func:`~langchain_llava_cot.demo.dataset.off_domain_stages`;
  * *tool use* (:func:`tool_examples`): the tools prompt for an ``add(a, b)`` tool
    (``tool_choice`` None or ``"any"``, sometimes with the agent example's system prompt).
    Sum questions ("How many X and Y are there in total?") get the usual summary, caption
    and reasoning and a conclusion that is exactly
    ``<tool_call>{"name": "add", "arguments": {"a": NA, "b": NB}}</tool_call>`` with the
    reasoning's two counts; the follow-up turn (that call in the history, then the user
    turn ``Tool result (add): N``, as ``convert_messages`` renders them) gets the whole
    answer, concluding ``N``. Other questions asked with the tools prompt are answered
    directly;

- :func:`train_demo` builds the model with
  :func:`~langchain_llava_cot.model_builders.build_tiny_vlm` (its tokenizer is trained
  on the dataset's text, with the stage tags as single tokens), runs both stages with
  AdamW for a step budget, and saves it with ``save_pretrained`` (safetensors) and a
  ``training.json`` that records each stage (steps, tokens, seconds, phases).

The bundled model is exactly this, on one torch thread (about 70 minutes)::

    python -m langchain_llava_cot.demo.train --steps 3000 --out DIR

``--init DIR`` goes on training a saved model (stage 1 is skipped).
"""

from __future__ import annotations

import argparse
import functools
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
    SMALL_TALK,
    Example,
    examples,
    iter_examples,
    off_domain_image,
    off_domain_stages,
    perturb_objects,
    right_stage,
    write_stages,
    wrong_stage,
)
from langchain_llava_cot.judges import (
    VERDICT_PREFIX,
    VERIFY_OPTIONS,
    VERIFY_PREFIX,
    JudgeTask,
    pairwise_prompt,
    verifier_prompt,
)
from langchain_llava_cot.stages import STAGES, Stage, render_answer
from langchain_llava_cot.tools import format_tool_calls, render_tools_prompt

__all__ = [
    "DEFAULT_CONFIG",
    "JUDGE_STAGES",
    "TOOLS_CONFIG",
    "TrainConfig",
    "add_tool_prompt",
    "VERIFIER_STAGES",
    "build_examples",
    "caption_sequences",
    "judge_pair",
    "tool_examples",
    "train_demo",
    "verifier_row",
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
    image_size: int = 48
    """Side of the pictures the tower reads (the 64 px drawings are resized to it)."""
    patch_size: int = 16
    """Side of a vision patch: 16 px at 48 px is one grid cell per patch, 9 image tokens."""
    vision_steps: int = 3_000
    """Stage 1: steps pretraining the vision tower on cell labels (0 skips it)."""
    vision_pictures: int = 20_000
    """Stage 1: drawings (and a tenth as many off-domain pictures) it trains on."""
    freeze_vision: bool = True
    """Stage 2 leaves the pretrained tower as it is."""
    caption_phase: float = 0.1
    """Share of stage 2's steps spent on summary+caption-only sequences first: it makes the
    language model learn to read the image tokens before anything else."""
    answers: int = 40_000
    """Answer sequences in the pool."""
    judge_pairs: int = 1_000
    """Judge pairs in the pool (each gives two sequences, one per order)."""
    verifier_rows: int = 6_000
    """Verifier sequences: one candidate stage, right or wrong, and the verdict."""
    off_domain: int = 1_500
    """Requests the model cannot answer (small talk, no picture, other pictures)."""
    tokens_per_batch: int = 8_000
    """Padded tokens per batch."""
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    verdict_weight: float = 4.0
    """Loss weight of a verdict's deciding token (other reply tokens weigh 1)."""
    tool_questions: int = 1_200
    """Sum questions made into tool-use sequences (a call and its follow-up each)."""
    tool_others: int = 600
    """Other questions asked with the tools prompt and answered directly."""


DEFAULT_CONFIG = TrainConfig()
TOOLS_CONFIG = TrainConfig(
    vision_steps=0,
    caption_phase=0.0,
    answers=3_000,
    judge_pairs=300,
    verifier_rows=600,
    off_domain=300,
    tool_questions=1_200,
    tool_others=600,
    tokens_per_batch=3_000,
    lr=5e-4,
    warmup_steps=20,
)
"""A fine-tuning run on tool use (with some of everything else), from a trained model."""

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
    image: int | None
    """Index of the picture it shows (None: a text-only request)."""


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


def answer_tokens(
    processor: Any, example: Example, graded: tuple[Stage, ...]
) -> tuple[list[int], list[bool], Any]:
    """The inputs of a teacher-forced probe of one example.

    Returns the prompt and the right answer as token ids, which of them belong to the
    ``graded`` stages, and the picture's pixels.
    """
    prompt = _prompt(processor, example.conversation())
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(STAGES):
        if i:
            pieces.append(("\n\n", 0.0))
        pieces.append((render_answer({stage: example.stages[stage]}), 1.0 if stage in graded else 0.0))
    inputs = processor(images=[example.image()], text=[prompt], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    ids, weights = _encode(processor, prompt, pieces, int((inputs["input_ids"] == image_id).sum()))
    return ids, [w > 0 for w in weights], inputs["pixel_values"]


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


@functools.lru_cache(maxsize=8)
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
    processor: Any, config: TrainConfig = DEFAULT_CONFIG, *, seed: int = 0, image_tokens: int = 9
) -> tuple[list[Sequence_], list[Any]]:
    """The training pool and its pictures (PIL images, indexed by ``Sequence_.image``).

    Answers, judge pairs, verifier rows and tool use come from training-split examples;
    off-domain requests are small talk, shapes questions without a picture, and pictures
    that are not drawings.
    """
    rng = random.Random(seed)
    pool = examples("train", config.answers + config.judge_pairs + config.verifier_rows)
    sequences: list[Sequence_] = []
    for i, example in enumerate(pool[: config.answers]):
        prompt = _prompt(processor, example.conversation())
        ids, weights = _encode(processor, prompt, _answer_pieces(example, rng), image_tokens)
        sequences.append(Sequence_(ids, weights, i))
    judged = range(config.answers, config.answers + config.judge_pairs)
    for i in judged:
        for conversation, pieces in _judge_rows(pool[i], rng, config.verdict_weight):
            ids, weights = _encode(processor, _prompt(processor, conversation), pieces, image_tokens)
            sequences.append(Sequence_(ids, weights, i))
    for i in range(judged.stop, len(pool)):
        conversation, pieces = _verifier_row(pool[i], rng, config.verdict_weight)
        ids, weights = _encode(processor, _prompt(processor, conversation), pieces, image_tokens)
        sequences.append(Sequence_(ids, weights, i))
    if config.tool_questions or config.tool_others:
        sequences += tool_examples(processor, pool, config, rng, image_tokens)
    pictures: list[Any] = [example.image() for example in pool]
    questions = [example.question for example in pool[:2_000]]
    for _ in range(config.off_domain):
        conversation, picture = _off_domain_request(rng, questions)
        if picture is not None:
            pictures.append(picture)
        pieces = _stage_pieces(off_domain_stages("none" if picture is None else "other"))
        ids, weights = _encode(processor, _prompt(processor, conversation), pieces, image_tokens)
        sequences.append(Sequence_(ids, weights, None if picture is None else len(pictures) - 1))
    return sequences, pictures


def caption_sequences(processor: Any, pool_size: int, *, image_tokens: int = 9) -> list[Sequence_]:
    """Summary+caption-only answers for the first ``pool_size`` answer examples (same pictures)."""
    sequences = []
    for i, example in enumerate(examples("train", pool_size)):
        prompt = _prompt(processor, example.conversation())
        stages = {s: example.stages[s] for s in (Stage.SUMMARY, Stage.CAPTION)}
        pieces = _stage_pieces(stages)[:-1]  # no end of turn: the answer goes on
        sequences.append(Sequence_(*_encode(processor, prompt, pieces, image_tokens), i))
    return sequences


def _stage_pieces(stages: dict[Stage, str]) -> list[tuple[str, float]]:
    """The rendered stages, separated as the model writes them, then the end of turn."""
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(stages):
        if i:
            pieces.append(("\n\n", 1.0))
        pieces.append((render_answer({stage: stages[stage]}), 1.0))
    return [*pieces, (EOT, 1.0)]


def _judge_rows(
    example: Example, rng: random.Random, verdict_weight: float
) -> list[tuple[Conversation, list[tuple[str, float]]]]:
    """One right and one wrong candidate, asked in both orders, with the pairwise verdicts."""
    stage = rng.choice(JUDGE_STAGES)
    chosen, right, wrong = judge_pair(example, stage, rng)
    rows = []
    for right_first in (True, False):
        candidates = (right, wrong) if right_first else (wrong, right)
        task = JudgeTask(example.conversation(), stage, chosen, candidates)
        digit = " 1" if right_first else " 2"
        pieces = [(VERDICT_PREFIX, 1.0), (digit, verdict_weight), (".", 1.0), (EOT, 1.0)]
        rows.append((pairwise_prompt(task, 0, 1), pieces))
    return rows


VERIFIER_STAGES: tuple[Stage, ...] = (
    Stage.CAPTION,
    Stage.CAPTION,
    Stage.REASONING,
    Stage.REASONING,
    Stage.REASONING,
    Stage.CONCLUSION,
)
"""The stage of each verifier training row, drawn uniformly from this list."""


def verifier_row(example: Example, stage: Stage, rng: random.Random) -> tuple[JudgeTask, bool]:
    """A verifier question about one candidate for ``stage``, and whether it is right (half are)."""
    chosen, right, wrong = judge_pair(example, stage, rng)
    is_right = rng.random() < 0.5
    task = JudgeTask(example.conversation(), stage, chosen, (right if is_right else wrong,))
    return task, is_right


def _verifier_row(
    example: Example, rng: random.Random, verdict_weight: float
) -> tuple[Conversation, list[tuple[str, float]]]:
    task, is_right = verifier_row(example, rng.choice(VERIFIER_STAGES), rng)
    verdict = VERIFY_OPTIONS[0] if is_right else VERIFY_OPTIONS[1]
    pieces = [(VERIFY_PREFIX, 1.0), (verdict, verdict_weight), (".", 1.0), (EOT, 1.0)]
    return verifier_prompt(task, 0), pieces


def _off_domain_request(rng: random.Random, questions: list[str]) -> tuple[Conversation, Any]:
    """A request the demo model cannot answer, and the picture it shows (None: no picture).

    Small talk (sometimes after a system prompt or an earlier exchange), a shapes question
    without its picture, or a question or small talk about a picture that is not a drawing.
    """
    kind = rng.choice(["talk", "talk", "talk", "question", "picture", "picture"])
    question = rng.choice(questions)
    text = question if kind == "question" else rng.choice(SMALL_TALK)
    picture = None
    if kind == "picture":
        picture = off_domain_image(rng)
        text = rng.choice([question, question, rng.choice(SMALL_TALK)])
    user = Turn(role="user", text=text, images=() if picture is None else (_png(picture),))
    turns: list[Turn] = [user]
    if rng.random() < 0.25:
        earlier = rng.choice(SMALL_TALK)
        reply = rng.choice([earlier, off_domain_stages("none")[Stage.CONCLUSION]])
        turns = [Turn(role="user", text=earlier), Turn(role="assistant", text=reply), user]
    if rng.random() < 0.3:
        system = rng.choice([AGENT_SYSTEM_PROMPT, "You are a helpful assistant.", "Answer briefly."])
        turns.insert(0, Turn(role="system", text=system))
    return Conversation(turns=tuple(turns)), picture


def _png(picture: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


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
        lines.append(verifier_prompt(task, 0).question)
        lines.append(f"{VERDICT_PREFIX} 1. {VERDICT_PREFIX} 2. {VERIFY_PREFIX} right. {VERIFY_PREFIX} wrong.")
    lines.extend(SMALL_TALK)
    for picture in ("none", "other"):
        lines.extend(render_answer({s: t}) for s, t in off_domain_stages(picture).items())  # type: ignore[arg-type]
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
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    config: TrainConfig = DEFAULT_CONFIG,
    threads: int | None = 1,
    log_every: int = 20,
    init: str | Path | None = None,
) -> Path:
    """Build and train the demo model (or go on training one), and save it to ``output_dir``.

    Stage 1 pretrains the vision tower on the scenes' cell labels
    (:mod:`langchain_llava_cot.demo.vision`); stage 2 trains the projector and the language
    model on the sequences of :func:`build_examples` (the tower frozen), the first
    ``config.caption_phase`` of its steps on summary+caption-only answers.

    Args:
        output_dir: Folder to write the model, processor and ``training.json`` to.
        steps: Optimizer steps of stage 2; the learning rate decays over them. Budget by
            steps, not minutes: a busy machine trains less in the same time.
        minutes: Optional wall-clock budget of stage 2; the first budget reached ends it.
        seed: Seed of the weights, the data and the batch order.
        config: Model and run sizes.
        threads: Torch CPU threads (None leaves torch's default).
        log_every: Log the loss every this many steps.
        init: A saved demo model to continue from (its weights and processor are copied
            to ``output_dir``, and its ``training.json`` is kept in the new one as
            ``init_record``) instead of building a new one. Stage 1 is skipped.

    Returns:
        ``output_dir``, loadable with ``AutoProcessor`` / ``AutoModelForImageTextToText``.
    """
    if minutes is None and steps is None:
        msg = "Give steps= (or minutes=, or both), so training knows when to stop."
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
    record: dict[str, Any] = {
        "config": config.__dict__,
        "init": None if init is None else str(init),
        "seed": seed,
    }
    tower = model.model.vision_tower
    if init is None and config.vision_steps:
        record["vision"] = _pretrain_vision(processor, tower, config, seed)
    if config.freeze_vision:
        tower.requires_grad_(False)
    image_tokens = model.config.image_seq_length
    sequences, pictures = build_examples(processor, config, seed=seed, image_tokens=image_tokens)
    _check_layout(processor, examples("train", 1)[0], image_tokens)
    captions = caption_sequences(processor, config.answers, image_tokens=image_tokens)
    pixels = _pixels(processor, pictures)
    record["prepare_seconds"] = round(time.perf_counter() - started, 1)
    logger.info("Prepared %d sequences in %.0f s", len(sequences), record["prepare_seconds"])

    trainer = _Trainer(model, processor.tokenizer.pad_token_id, pixels, config, steps, minutes, log_every)
    rng = random.Random(seed)
    phases = [("captions", captions, config.caption_phase), ("all", sequences, 1.0)]
    for name, pool, until in phases:
        while pool and not trainer.done(until):
            for batch in _batches(pool, config.tokens_per_batch, rng):
                if trainer.done(until):
                    break
                trainer.step([pool[i] for i in batch])
        trainer.mark(name)
    model.eval()
    model.save_pretrained(output_dir, safe_serialization=True)
    name_vision_weights_for_servers(output_dir)
    processor.save_pretrained(output_dir)
    record.update(trainer.record())
    record["parameters"] = sum(p.numel() for p in model.parameters())
    if init is not None and (Path(init) / "training.json").is_file():
        record["init_record"] = json.loads((Path(init) / "training.json").read_text())
    (output_dir / "training.json").write_text(json.dumps(record, indent=1))
    logger.info("Trained %d steps; loss %.4f; saved to %s", record["steps"], record["final_loss"], output_dir)
    return output_dir


_TOWER_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def name_vision_weights_for_servers(model_dir: str | Path) -> None:
    """Rename the CLIP tower's weights to ``vision_tower.vision_model.*`` in ``model.safetensors``.

    transformers 5 saves them as ``vision_tower.embeddings.*``, a name vLLM does not load;
    the ``vision_model`` names are the original LLaVA layout, which transformers reads as
    well, so the one file serves both.
    """
    from safetensors.torch import load_file, save_file

    path = Path(model_dir) / "model.safetensors"
    weights = load_file(path)
    renamed = {}
    for key, value in weights.items():
        head, _, tail = key.partition("vision_tower.")
        shared = tail.startswith(_TOWER_PARTS)
        renamed[f"{head}vision_tower.vision_model.{tail}" if shared else key] = value
    save_file(renamed, path, metadata={"format": "pt"})


class _Trainer:
    """Stage 2's optimizer, learning-rate schedule and bookkeeping over one step budget."""

    def __init__(
        self,
        model: Any,
        pad: int,
        pixels: Any,
        config: TrainConfig,
        steps: int | None,
        minutes: float | None,
        log_every: int,
    ) -> None:
        import torch

        self.model, self.pad, self.pixels, self.config = model, pad, pixels, config
        self.steps, self.budget, self.log_every = steps, None if minutes is None else minutes * 60, log_every
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = [p for n, p in trained if p.ndim >= 2 and "embed" not in n]
        rest = [p for n, p in trained if not (p.ndim >= 2 and "embed" not in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=config.lr,
            betas=(0.9, 0.98),
        )
        self.count, self.seen, self.smoothed = 0, 0, float("nan")
        self.history: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        model.train()

    def progress(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return max(
            elapsed / self.budget if self.budget else 0.0, self.count / self.steps if self.steps else 0.0
        )

    def done(self, until: float) -> bool:
        return self.progress() >= until

    def step(self, batch: list[Sequence_]) -> None:
        import torch

        config, progress = self.config, self.progress()
        warm = min(1.0, (self.count + 1) / config.warmup_steps)
        lr = config.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        longest = max(len(seq.ids) for seq in batch)
        ids = torch.full((len(batch), longest), self.pad, dtype=torch.long)
        weights = torch.zeros((len(batch), longest))
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq.ids)] = torch.tensor(seq.ids)
            weights[row, : len(seq.ids)] = torch.tensor(seq.weights)
            mask[row, : len(seq.ids)] = 1
        shown = [seq.image for seq in batch if seq.image is not None]
        images = self.pixels[shown] if shown else None
        logits = self.model(input_ids=ids, pixel_values=images, attention_mask=mask).logits
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1), reduction="none"
        )
        w = weights[:, 1:].reshape(-1)
        loss = (losses * w).sum() / w.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.count += 1
        self.seen += int(mask.sum())
        value = loss.item()
        self.smoothed = value if math.isnan(self.smoothed) else 0.95 * self.smoothed + 0.05 * value
        if self.count % self.log_every == 0:
            elapsed = time.perf_counter() - self.t0
            self.history.append(
                {"step": self.count, "loss": round(self.smoothed, 4), "seconds": round(elapsed, 1)}
            )
            logger.info(
                "step %d loss %.4f lr %.2e %.0f tok/s %.0f s",
                self.count, self.smoothed, lr, self.seen / elapsed, elapsed,
            )  # fmt: skip

    def mark(self, phase: str) -> None:
        self.phases.append({"phase": phase, "until_step": self.count, "tokens_seen": self.seen})

    def record(self) -> dict[str, Any]:
        return {
            "steps": self.count,
            "tokens_seen": self.seen,
            "train_seconds": round(time.perf_counter() - self.t0, 1),
            "final_loss": round(self.smoothed, 4),
            "phases": self.phases,
            "history": self.history,
        }


def _pixels(processor: Any, pictures: list[Any]) -> Any:
    """The pictures as the saved processor makes them, in one tensor."""
    import torch

    chunks = [
        processor.image_processor(pictures[i : i + 512], return_tensors="pt")["pixel_values"]
        for i in range(0, len(pictures), 512)
    ]
    return torch.cat(chunks)


def _pretrain_vision(processor: Any, tower: Any, config: TrainConfig, seed: int) -> dict[str, Any]:
    """Stage 1 on drawings from the training split (and off-domain pictures)."""
    import torch

    from langchain_llava_cot.demo.vision import cell_labels, pretrain_vision_tower

    rng = random.Random(f"vision:{seed}")
    scenes: list[Any] = [ex.scene for ex in examples("train", config.vision_pictures, start=100_000)]
    scenes += [None] * (config.vision_pictures // 10)
    rng.shuffle(scenes)
    pictures = [off_domain_image(rng) if scene is None else scene.render() for scene in scenes]
    labels = torch.tensor([cell_labels(scene) for scene in scenes])
    return pretrain_vision_tower(
        tower, _pixels(processor, pictures), labels, steps=config.vision_steps, seed=seed
    )


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
        image_size=config.image_size,
        patch_size=config.patch_size,
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
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of stage 2")
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock budget of stage 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
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

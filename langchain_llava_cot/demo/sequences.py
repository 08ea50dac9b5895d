"""The demo model's training sequences, laid out exactly as the engine prompts the model.

:func:`build_examples` turns the dataset's examples (:mod:`langchain_llava_cot.demo.dataset`)
into training sequences, each ``apply_chat_template(to_chat_messages(conv),
add_generation_prompt=True, tokenize=False) + target + <|eot_id|>`` (:func:`prompt_text`),
tokenized as one string, with a per-token loss weight that is zero outside the
assistant's reply (:func:`check_layout` makes sure the processor tokenizes it the same):

* *answers*: the whole four-stage answer. A quarter of them show a caption with one
  mistake (weight zero on it) followed by the reasoning and conclusion that follow
  *that* caption, which teaches the reasoning to follow the caption;
* *verifier*: :func:`~langchain_llava_cot.judges.verifier_prompt` for one caption,
  reasoning or conclusion candidate, right or wrong (see
  :func:`~langchain_llava_cot.demo.mistakes.wrong_stage`), answered
  ``The candidate is right.`` or ``... wrong.``; the verdict word weighs more;
* *pairwise judge*: :func:`~langchain_llava_cot.judges.pairwise_prompt` for one stage
  (or whole answers), one right and one wrong candidate, in both orders, answered
  ``The better response is 1.`` or ``... 2.``;
* *off-domain*: small talk, a shapes question without its picture, or a picture that
  is not a drawing, answered by :func:`~langchain_llava_cot.demo.off_domain.off_domain_stages`;
* *tool use* (:func:`tool_examples`): the tools prompt for an ``add(a, b)`` tool
  (``tool_choice`` None or ``"any"``, sometimes with the agent example's system prompt).
  Sum questions ("How many X and Y are there in total?") get the usual summary, caption
  and reasoning and a conclusion that is exactly
  ``<tool_call>{"name": "add", "arguments": {"a": NA, "b": NB}}</tool_call>`` with the
  reasoning's two counts; the follow-up turn (that call in the history, then the user
  turn ``Tool result (add): N``, as ``convert_messages`` renders them) gets the whole
  answer, concluding ``N``. Other questions asked with the tools prompt are answered
  directly.

:func:`caption_sequences` gives the summary+caption-only answers of the first phase of
training (:mod:`langchain_llava_cot.demo.train`).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

from langchain_llava_cot.conversation import Conversation, Turn, to_chat_messages
from langchain_llava_cot.demo.answers import write_stages
from langchain_llava_cot.demo.dataset import Example, examples, iter_examples
from langchain_llava_cot.demo.mistakes import perturb_objects, right_stage, wrong_stage
from langchain_llava_cot.demo.off_domain import SMALL_TALK, off_domain_image, off_domain_stages
from langchain_llava_cot.demo.train_config import DEFAULT_CONFIG, TrainConfig
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
    "AGENT_SYSTEM_PROMPT",
    "EOT",
    "JUDGE_STAGES",
    "VERIFIER_STAGES",
    "TrainingSequence",
    "add_tool_prompt",
    "answer_tokens",
    "build_examples",
    "caption_sequences",
    "check_layout",
    "judge_pair",
    "prompt_text",
    "tool_examples",
    "verifier_row",
]

EOT = "<|eot_id|>"


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
class TrainingSequence:
    """One training sequence."""

    ids: list[int]
    weights: list[float]
    image: int | None
    """Index of the picture it shows (None: a text-only request)."""


def prompt_text(processor: Any, conversation: Any) -> str:
    """The engine's prompt for ``conversation``: the chat template's text, ready for the reply."""
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
    prompt = prompt_text(processor, example.conversation())
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
) -> list[TrainingSequence]:
    """Tool-use sequences (see the module docstring); their examples are appended to ``pool``."""
    sums = others = 0
    sequences: list[TrainingSequence] = []
    for example in iter_examples("train", start=len(pool)):
        if sums >= config.tool_questions and others >= config.tool_others:
            break
        if _is_sum(example) and sums < config.tool_questions:
            sums += 1
            pool.append(example)
            pieces = _call_pieces(example, rng)
            prompt = prompt_text(processor, _tool_conversation(example, rng))
            encoded = _encode(processor, prompt, pieces, image_tokens)
            sequences.append(TrainingSequence(*encoded, len(pool) - 1))
            result = Turn(role="user", text=f"Tool result (add): {example.answer}")
            call = Turn(role="assistant", text=_add_call(example, example.scene.objects))
            conversation = _tool_conversation(example, rng, call, result)
            follow = [(example.target, 1.0), (EOT, 1.0)]
            ids, weights = _encode(processor, prompt_text(processor, conversation), follow, image_tokens)
            sequences.append(TrainingSequence(ids, weights, len(pool) - 1))
        elif not _is_sum(example) and others < config.tool_others:
            others += 1
            pool.append(example)
            prompt = prompt_text(processor, _tool_conversation(example, rng))
            ids, weights = _encode(processor, prompt, _answer_pieces(example, rng), image_tokens)
            sequences.append(TrainingSequence(ids, weights, len(pool) - 1))
    return sequences


def build_examples(
    processor: Any, config: TrainConfig = DEFAULT_CONFIG, *, seed: int = 0, image_tokens: int = 9
) -> tuple[list[TrainingSequence], list[Any]]:
    """The training pool and its pictures (PIL images, indexed by ``TrainingSequence.image``).

    Answers, judge pairs, verifier rows and tool use come from training-split examples;
    off-domain requests are small talk, shapes questions without a picture, and pictures
    that are not drawings.
    """
    rng = random.Random(seed)
    pool = examples("train", config.answers + config.judge_pairs + config.verifier_rows)
    sequences: list[TrainingSequence] = []
    for i, example in enumerate(pool[: config.answers]):
        prompt = prompt_text(processor, example.conversation())
        ids, weights = _encode(processor, prompt, _answer_pieces(example, rng), image_tokens)
        sequences.append(TrainingSequence(ids, weights, i))
    judged = range(config.answers, config.answers + config.judge_pairs)
    for i in judged:
        for conversation, pieces in _judge_rows(pool[i], rng, config.verdict_weight):
            ids, weights = _encode(processor, prompt_text(processor, conversation), pieces, image_tokens)
            sequences.append(TrainingSequence(ids, weights, i))
    for i in range(judged.stop, len(pool)):
        conversation, pieces = _verifier_row(pool[i], rng, config.verdict_weight)
        ids, weights = _encode(processor, prompt_text(processor, conversation), pieces, image_tokens)
        sequences.append(TrainingSequence(ids, weights, i))
    if config.tool_questions or config.tool_others:
        sequences += tool_examples(processor, pool, config, rng, image_tokens)
    pictures: list[Any] = [example.image() for example in pool]
    questions = [example.question for example in pool[:2_000]]
    for _ in range(config.off_domain):
        conversation, picture = _off_domain_request(rng, questions)
        if picture is not None:
            pictures.append(picture)
        pieces = _stage_pieces(off_domain_stages("none" if picture is None else "other"))
        ids, weights = _encode(processor, prompt_text(processor, conversation), pieces, image_tokens)
        sequences.append(TrainingSequence(ids, weights, None if picture is None else len(pictures) - 1))
    return sequences, pictures


def caption_sequences(processor: Any, pool_size: int, *, image_tokens: int = 9) -> list[TrainingSequence]:
    """Summary+caption-only answers for the first ``pool_size`` answer examples (same pictures)."""
    sequences = []
    for i, example in enumerate(examples("train", pool_size)):
        prompt = prompt_text(processor, example.conversation())
        stages = {s: example.stages[s] for s in (Stage.SUMMARY, Stage.CAPTION)}
        pieces = _stage_pieces(stages)[:-1]  # no end of turn: the answer goes on
        sequences.append(TrainingSequence(*_encode(processor, prompt, pieces, image_tokens), i))
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


def check_layout(processor: Any, example: Example, image_tokens: int) -> None:
    """Make sure :func:`_encode` gives what the processor itself makes of the same text."""
    prompt = prompt_text(processor, example.conversation())
    ids, _ = _encode(processor, prompt, [(example.target, 1.0), (EOT, 1.0)], image_tokens)
    text = prompt + example.target + EOT
    expected = processor(text=text, images=[example.image()], add_special_tokens=False)["input_ids"][0]
    if list(expected) != ids:
        msg = "Training sequences do not match the processor's tokenization; fix _encode."
        raise RuntimeError(msg)

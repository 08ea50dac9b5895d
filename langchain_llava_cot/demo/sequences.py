"""The demo model's training sequences, laid out exactly as the engine prompts the model.

:func:`build_examples` turns the dataset's examples (:mod:`langchain_llava_cot.demo.dataset`,
the free world and some of the classic one) into training sequences, each the engine's
prompt and the reply with per-token loss weights (:mod:`langchain_llava_cot.demo.encoding`;
:func:`check_layout` makes sure the processor tokenizes them the same):

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
* *off-domain*: small talk with no picture, with a drawing or with a picture that is not
  a drawing, and a shapes question without its picture, answered by
  :func:`~langchain_llava_cot.demo.off_domain.off_domain_stages`;
* *tools*: sums with an ``add`` tool, questions with tools they do not need, and
  structured output (:mod:`langchain_llava_cot.demo.tool_rows`).

:func:`caption_sequences` gives the summary+caption-only answers of the first phase of
training (:mod:`langchain_llava_cot.demo.train`).
"""

from __future__ import annotations

import random
from typing import Any

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo.answers import write_stages
from langchain_llava_cot.demo.dataset import Example, examples, iter_examples
from langchain_llava_cot.demo.encoding import (
    EOT,
    PICTURE_STAND_IN,
    Pictures,
    TrainingSequence,
    answer_pieces,
    encode_pieces,
    prompt_text,
    request,
    stage_pieces,
)
from langchain_llava_cot.demo.mistakes import perturb_objects, right_stage, wrong_stage
from langchain_llava_cot.demo.off_domain import (
    PICTURE_TALK,
    SMALL_TALK,
    everyday_request,
    off_domain_image,
    off_domain_stages,
)
from langchain_llava_cot.demo.phrasings import WRAPPERS
from langchain_llava_cot.demo.tool_rows import AGENT_SYSTEM_PROMPT, structured_examples, tool_examples
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

__all__ = [
    "JUDGE_STAGES",
    "VERIFIER_STAGES",
    "answer_tokens",
    "build_examples",
    "caption_sequences",
    "check_layout",
    "judge_pair",
    "training_pool",
    "verifier_row",
]

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
    ids, weights = encode_pieces(processor, prompt, pieces, int((inputs["input_ids"] == image_id).sum()))
    return ids, [w > 0 for w in weights], inputs["pixel_values"]


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


def training_pool(count: int, classic_share: float, *, start: int = 0) -> list[Example]:
    """``count`` training examples, ``classic_share`` of them (spread evenly) from the classic world."""
    classic = round(count * classic_share)
    free = iter(examples("train", count - classic, start=start))
    old = iter(examples("train", classic, start=start, world="classic"))
    pool, taken = [], 0
    for i in range(count):
        if (i + 1) * classic // count > taken:
            pool.append(next(old))
            taken += 1
        else:
            pool.append(next(free))
    return pool


def build_examples(
    processor: Any, config: TrainConfig = DEFAULT_CONFIG, *, seed: int = 0, image_tokens: int = 36
) -> tuple[list[TrainingSequence], Pictures, list[Example]]:
    """The training sequences, their pictures (``TrainingSequence.image`` indexes them), and the answers.

    Answers, judge pairs, verifier rows and tool use come from training-split examples;
    off-domain requests are small talk (with no picture, a drawing or another picture),
    and shapes questions without a picture.
    """
    rng = random.Random(seed)
    pool = training_pool(config.answers + config.judge_pairs + config.verifier_rows, config.classic_share)
    sequences: list[TrainingSequence] = []

    def add(index: int | None, conversation: Conversation, pieces: list[tuple[str, float]]) -> None:
        ids, weights = encode_pieces(processor, prompt_text(processor, conversation), pieces, image_tokens)
        sequences.append(TrainingSequence(ids, weights, index))

    for i, example in enumerate(pool[: config.answers]):
        add(i, request(example), answer_pieces(example, rng))
    judged = range(config.answers, config.answers + config.judge_pairs)
    for i in judged:
        for conversation, pieces in _judge_rows(pool[i], rng, config.verdict_weight):
            add(i, conversation, pieces)
    for i in range(judged.stop, len(pool)):
        add(i, *_verifier_row(pool[i], rng, config.verdict_weight))
    answers = pool[: config.answers]
    fresh = iter_examples("train", start=sum(e.world == "free" for e in pool))
    if config.tool_questions or config.tool_others:
        sequences += tool_examples(processor, fresh, pool, config, rng, image_tokens)
    if config.structured:
        sequences += structured_examples(processor, fresh, pool, config.structured, rng, image_tokens)
    pictures = Pictures(processor)
    for example in pool:
        pictures.add(example.image())
    questions = [example.question for example in pool[:2_000]]
    for _ in range(config.off_domain):
        conversation, picture, stages = _off_domain_request(
            rng, questions, pool[:2_000], config.everyday_share
        )
        add(None if picture is None else pictures.add(picture), conversation, stage_pieces(stages))
    return sequences, pictures, answers


def caption_sequences(
    processor: Any, answers: list[Example], *, image_tokens: int = 36
) -> list[TrainingSequence]:
    """Summary+caption-only answers for ``answers`` (the first examples of the pool: same pictures)."""
    sequences = []
    for i, example in enumerate(answers):
        prompt = prompt_text(processor, request(example))
        stages = {s: example.stages[s] for s in (Stage.SUMMARY, Stage.CAPTION)}
        pieces = stage_pieces(stages)[:-1]  # no end of turn: the answer goes on
        sequences.append(TrainingSequence(*encode_pieces(processor, prompt, pieces, image_tokens), i))
    return sequences


def _judge_rows(
    example: Example, rng: random.Random, verdict_weight: float
) -> list[tuple[Conversation, list[tuple[str, float]]]]:
    """One right and one wrong candidate, asked in both orders, with the pairwise verdicts."""
    stage = rng.choice(JUDGE_STAGES)
    chosen, right, wrong = judge_pair(example, stage, rng)
    rows = []
    for right_first in (True, False):
        candidates = (right, wrong) if right_first else (wrong, right)
        task = JudgeTask(request(example), stage, chosen, candidates)
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
    task = JudgeTask(request(example), stage, chosen, (right if is_right else wrong,))
    return task, is_right


def _verifier_row(
    example: Example, rng: random.Random, verdict_weight: float
) -> tuple[Conversation, list[tuple[str, float]]]:
    task, is_right = verifier_row(example, rng.choice(VERIFIER_STAGES), rng)
    verdict = VERIFY_OPTIONS[0] if is_right else VERIFY_OPTIONS[1]
    pieces = [(VERIFY_PREFIX, 1.0), (verdict, verdict_weight), (".", 1.0), (EOT, 1.0)]
    return verifier_prompt(task, 0), pieces


def _off_domain_request(
    rng: random.Random, questions: list[str], drawings: list[Example], everyday_share: float = 0.0
) -> tuple[Conversation, Any, dict[Stage, str]]:
    """A request the demo model cannot answer, the picture it shows (None: none), and the answer.

    Small talk (from :data:`SMALL_TALK`, or for ``everyday_share`` of the requests an
    :func:`everyday_request`; sometimes after a system prompt or an earlier exchange) with no picture,
    with a drawing, or with a picture that is not a drawing; a shapes question without its
    picture, or with a picture that is not a drawing.
    """
    kind = rng.choice(["talk", "talk", "question", "drawing", "drawing", "drawing", "picture", "picture"])
    question = rng.choice(questions)
    talk = rng.choice(SMALL_TALK + PICTURE_TALK if kind != "drawing" else SMALL_TALK)
    if rng.random() < everyday_share:
        talk = rng.choice(WRAPPERS).format(everyday_request(rng))
    text, picture = (question if kind == "question" else talk), None
    stages = off_domain_stages("none")
    if kind == "picture":
        picture = off_domain_image(rng)
        text = rng.choice([question, talk])
        stages = off_domain_stages("other")
    elif kind == "drawing":
        drawing = rng.choice(drawings)
        picture = drawing.image()
        stages = off_domain_stages("drawing", drawing.stages[Stage.CAPTION])
    user = Turn(role="user", text=text, images=(PICTURE_STAND_IN,) if picture is not None else ())
    turns: list[Turn] = [user]
    if rng.random() < 0.25:
        earlier = rng.choice(SMALL_TALK)
        reply = rng.choice([earlier, off_domain_stages("none")[Stage.CONCLUSION]])
        turns = [Turn(role="user", text=earlier), Turn(role="assistant", text=reply), user]
    if rng.random() < 0.3:
        system = rng.choice([AGENT_SYSTEM_PROMPT, "You are a helpful assistant.", "Answer briefly."])
        turns.insert(0, Turn(role="system", text=system))
    return Conversation(turns=tuple(turns)), picture, stages


def check_layout(processor: Any, example: Example, image_tokens: int) -> None:
    """Make sure :func:`~langchain_llava_cot.demo.encoding.encode_pieces` tokenizes as the processor does."""
    prompt = prompt_text(processor, example.conversation())
    ids, _ = encode_pieces(processor, prompt, [(example.target, 1.0), (EOT, 1.0)], image_tokens)
    text = prompt + example.target + EOT
    expected = processor(text=text, images=[example.image()], add_special_tokens=False)["input_ids"][0]
    if list(expected) != ids:
        msg = "Training sequences do not match the processor's tokenization; fix encode_pieces."
        raise RuntimeError(msg)

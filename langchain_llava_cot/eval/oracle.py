"""Scoring one answer: stage oracles, and a search record checked against the ground truth.

Stage oracles (what makes a candidate right): summary = the reference summary;
caption = lists exactly the scene's objects; reasoning = the reasoning that follows
the chosen caption; conclusion = agrees with the chosen reasoning; whole answers =
correct conclusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_llava_cot.demo.dataset import (
    Example,
    is_correct,
    normalize_answer,
    parse_caption,
    right_stage,
)
from langchain_llava_cot.stages import STAGES, Stage

__all__ = ["final_texts", "score_record", "stage_oracle", "well_formed"]


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


def well_formed(record: Mapping[str, Any]) -> bool:
    """Whether the answer is well-formed.

    Every chosen stage came out of the model closed by its own tag, with no repair, and all four
    stages have text.
    """
    for step in record.get("steps") or []:
        winner = step["candidates"][step["winner"]]
        if not winner["closed"] or winner["problems"]:
            return False
    stage_texts = record.get("chosen") or {}
    return all(stage_texts.get(s.value, "").strip() for s in STAGES)


def final_texts(record: Mapping[str, Any], content: str) -> list[str]:
    """The answers the last step chose among.

    The N conclusions (or the whole answers' conclusions), or ``content`` alone when the record
    has no step.
    """
    steps = record.get("steps") or []
    if not steps:
        return [content]
    last = steps[-1]
    if len(last["span"]) > 1:
        return [c["stages"].get(Stage.CONCLUSION.value, "") for c in last["candidates"]]
    return [c["text"] for c in last["candidates"]]


def score_record(example: Example, content: str, record: dict[str, Any]) -> dict[str, Any]:
    """Score one search record against the example's ground truth."""
    steps = record.get("steps") or []
    chosen: dict[Stage, str] = {}
    decisions: list[tuple[str, bool]] = []
    for step in steps:
        candidates = step["candidates"]
        winner = candidates[step["winner"]]
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
    caption = stage_texts.get(Stage.CAPTION.value, "")
    implied = right_stage(example, Stage.CONCLUSION, {Stage.CAPTION: caption})
    return {
        "correct": is_correct(content, example),
        "well_formed": well_formed(record),
        "pass": any(is_correct(f, example) for f in final_texts(record, content)),
        "decisions": decisions,
        "caption_right": stage_oracle(example, Stage.CAPTION.value, caption, {}),
        "follows_caption": normalize_answer(stage_texts.get(Stage.CONCLUSION.value, ""))
        == normalize_answer(implied),
    }

"""Scoring one answer: stage oracles, and a search record checked against the ground truth.

Stage oracles (what makes a candidate right): summary = the reference summary;
caption = lists exactly the scene's objects; reasoning = the reasoning that follows
the chosen caption; conclusion = agrees with the chosen reasoning; whole answers =
correct conclusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_llava_cot.demo.dataset import (
    Example,
    is_correct,
    parse_caption,
    right_stage,
    same_answer,
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
    return same_answer(text, expected, example.kind)


def _after(
    candidate: Mapping[str, Any], chosen: dict[Stage, str], steps: Sequence[Mapping[str, Any]], j: int
) -> dict[Stage, str]:
    """The stages a candidate of step ``j`` follows.

    ``chosen``, with the kept caption it continues (retrace), or the stages of the path it
    continues (dvts, particle_filter: its ``path`` in the previous step's ``paths``).
    """
    if "path" in candidate and j > 0:
        return _trail_stages(steps, steps[j - 1]["paths"][candidate["path"]])
    if "follows" not in candidate:
        return chosen
    return {**chosen, Stage.CAPTION: candidate["follows"]}


def _trail_stages(steps: Sequence[Mapping[str, Any]], trail: Sequence[int]) -> dict[Stage, str]:
    """The stages a path wrote: its candidate of each step, in turn."""
    stages: dict[Stage, str] = {}
    for k, index in enumerate(trail):
        stages |= {Stage(name): text for name, text in steps[k]["candidates"][index]["stages"].items()}
    return stages


def _chosen_candidates(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The candidates the answer is made of: each step's winner, or the winning path's candidates."""
    if steps and "paths" in steps[-1]:
        last = steps[-1]
        trail = next(path for path in last["paths"] if path[-1] == last["winner"])
        return [steps[k]["candidates"][i] for k, i in enumerate(trail)]
    return [step["candidates"][step["winner"]] for step in steps]


def well_formed(record: Mapping[str, Any]) -> bool:
    """Whether the answer is well-formed.

    Every chosen stage came out of the model closed by its own tag, with no repair, and all four
    stages have text.
    """
    for winner in _chosen_candidates(record.get("steps") or []):
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
    for j, step in enumerate(steps):
        candidates = step["candidates"]
        winner = candidates[step["winner"]]
        if len(step["span"]) > 1:  # whole answers
            labels = [is_correct(c["stages"].get(Stage.CONCLUSION.value, ""), example) for c in candidates]
            stage_name = "answer"
        else:
            stage_name = step["stage"]
            labels = [
                stage_oracle(example, stage_name, c["text"], _after(c, chosen, steps, j)) for c in candidates
            ]
        if any(labels) and not all(labels):
            decisions.append((stage_name, labels[step["winner"]]))
        if step.get("retrace", {}).get("retraced"):  # back to the caption: only the summary stays
            chosen = {s: t for s, t in chosen.items() if s is Stage.SUMMARY}
            continue
        chosen = _after(winner, chosen, steps, j)
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
        "follows_caption": same_answer(stage_texts.get(Stage.CONCLUSION.value, ""), implied, example.kind),
    }

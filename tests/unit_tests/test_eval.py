import pytest

from langchain_llava_cot.demo.dataset import get_example, write_stages
from langchain_llava_cot.eval import DEFAULT_STRATEGIES, StrategySpec, parse_strategy, score_record
from langchain_llava_cot.stages import Stage


def test_parse_strategy() -> None:
    assert parse_strategy("greedy") == StrategySpec("greedy")
    assert parse_strategy("stage_beam:pairwise:4") == StrategySpec("stage_beam", 4, "pairwise")
    assert parse_strategy("best_of_n:likelihood:8").name == "best_of_n:likelihood:8"
    assert all(parse_strategy(s).name == s for s in DEFAULT_STRATEGIES)
    for bad in ("beam", "stage_beam:pairwise", "stage_beam:oracle:4", "best_of_n:pairwise:x"):
        with pytest.raises(ValueError, match="stage_beam:pairwise:4"):
            parse_strategy(bad)


def _candidate(stage: str, text: str, closed: bool = True) -> dict:
    return {"text": text, "stages": {stage: text}, "closed": closed, "problems": [], "finish_reason": "stop"}


def test_score_record_of_a_stage_beam_run() -> None:
    example = next(get_example("test", i) for i in range(50) if get_example("test", i).answer.isdigit())
    right = example.stages
    wrong = write_stages(example.spec, example.scene.objects, error="count")
    steps = []
    for stage in (Stage.SUMMARY, Stage.CAPTION, Stage.REASONING):
        steps.append(
            {
                "stage": stage.value,
                "span": [stage.value],
                "winner": 0,
                "candidates": [_candidate(stage.value, right[stage]), _candidate(stage.value, right[stage])],
            }
        )
    steps[2]["candidates"][1] = _candidate("reasoning", wrong[Stage.REASONING])
    steps.append(
        {
            "stage": "conclusion",
            "span": ["conclusion"],
            "winner": 1,
            "candidates": [
                _candidate("conclusion", example.answer),
                _candidate("conclusion", str(int(example.answer) + 1)),
            ],
        }
    )
    record = {"steps": steps, "chosen": {s.value: right[s] for s in right}}
    scored = score_record(example, str(int(example.answer) + 1), record)
    assert scored["correct"] is False
    assert scored["pass"] is True  # the right conclusion was offered
    assert scored["well_formed"] is True
    assert scored["decisions"] == [("reasoning", True), ("conclusion", False)]
    assert scored["caption_right"] is True
    assert scored["follows_caption"] is True  # record["chosen"] concludes with the right answer


def test_follows_caption_checks_the_answer_the_chosen_caption_implies() -> None:
    example = next(get_example("test", i) for i in range(50) if get_example("test", i).answer.isdigit())
    missed = example.scene.objects[1:]  # a caption that leaves out one object
    seen = write_stages(example.spec, missed)
    chosen = {**{s.value: t for s, t in example.stages.items()}, "caption": seen[Stage.CAPTION]}
    follows = score_record(
        example, "", {"steps": [], "chosen": {**chosen, "conclusion": seen[Stage.CONCLUSION]}}
    )
    ignores = score_record(example, "", {"steps": [], "chosen": {**chosen, "conclusion": "99"}})
    assert follows["caption_right"] is False
    assert follows["follows_caption"] is True
    assert ignores["follows_caption"] is False


def test_unclosed_winner_is_not_well_formed() -> None:
    example = get_example("test", 0)
    steps = [
        {
            "stage": s.value,
            "span": [s.value],
            "winner": 0,
            "candidates": [_candidate(s.value, t, closed=s is not Stage.CAPTION)],
        }
        for s, t in example.stages.items()
    ]
    record = {"steps": steps, "chosen": {s.value: t for s, t in example.stages.items()}}
    scored = score_record(example, example.answer, record)
    assert scored["correct"] and scored["pass"] and not scored["well_formed"]

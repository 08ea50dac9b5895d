import pytest

from langchain_llava_cot.demo.dataset import get_example, write_stages
from langchain_llava_cot.eval import (
    GRID_STRATEGIES,
    EvalReport,
    StrategyResult,
    StrategySpec,
    default_strategies,
    paired_difference,
    parse_strategy,
    score_record,
    wilson_interval,
)
from langchain_llava_cot.eval.summary import compare_pairs
from langchain_llava_cot.stages import Stage


def test_parse_strategy() -> None:
    assert parse_strategy("greedy") == StrategySpec("greedy")
    assert parse_strategy("stage_beam:pairwise:4") == StrategySpec("stage_beam", 4, "pairwise")
    assert parse_strategy("best_of_n:likelihood:8").name == "best_of_n:likelihood:8"
    assert parse_strategy("stage_beam:verifier:4") == StrategySpec("stage_beam", 4, "verifier")
    assert parse_strategy("retrace:verifier:4") == StrategySpec("retrace", 4, "verifier")
    assert parse_strategy("vote:likelihood:8") == StrategySpec("vote", 8, "likelihood")
    adaptive = parse_strategy("stage_beam+adaptive:likelihood:4")
    assert adaptive == StrategySpec("stage_beam", 4, "likelihood", adaptive=True)
    assert adaptive.name == "stage_beam+adaptive:likelihood:4"
    assert all(parse_strategy(s).name == s for s in (*GRID_STRATEGIES, *default_strategies()))
    for bad in (
        "beam",
        "stage_beam:pairwise",
        "stage_beam:oracle:4",
        "best_of_n:pairwise:x",
        "stage_beam:verifier:0",
        "best_of_n+adaptive:verifier:4",
    ):
        with pytest.raises(ValueError, match="stage_beam:verifier:4"):
            parse_strategy(bad)


def test_grid_has_every_judge_at_every_width_and_the_default_is_quick() -> None:
    judges = {parse_strategy(s).judge for s in GRID_STRATEGIES} - {None}
    widths = {parse_strategy(s).candidates for s in GRID_STRATEGIES if s != "greedy"}
    assert judges == {"verifier", "pairwise", "likelihood", "vote"} and widths == {2, 4, 8}
    assert len(default_strategies()) == 3 and default_strategies("verifier")[2] == "stage_beam:verifier:4"


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(80, 100)
    assert (round(low, 4), round(high, 4)) == (0.7112, 0.8666)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(500, 1000)  # narrows with n: about +-3.1 points at n=1000
    assert 0.030 < 0.5 - low < 0.032 and abs((high - 0.5) - (0.5 - low)) < 1e-9


def test_paired_difference_pairs_the_questions() -> None:
    # both right or both wrong on most questions: the difference is sure although each
    # accuracy alone has a wide interval
    a = [True] * 50 + [True] * 10 + [False] * 40
    b = [True] * 50 + [False] * 10 + [False] * 40
    diff, low, high = paired_difference(a, b)
    assert diff == pytest.approx(0.10) and 0.03 < low < diff < high < 0.17
    same = paired_difference(a, a)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same"):
        paired_difference(a, b[:-1])


def test_each_search_is_compared_with_greedy_and_with_its_fewest_candidates() -> None:
    def result(name: str, correct: list[bool]) -> StrategyResult:
        spec = parse_strategy(name)
        records = [{"correct": c} for c in correct]
        return StrategyResult(spec.name, spec.strategy, spec.candidates, spec.judge, records=records)

    greedy = result("greedy", [True] * 80 + [False] * 20)
    two = result("stage_beam:likelihood:2", [True] * 78 + [False] * 22)
    eight = result("stage_beam:likelihood:8", [True] * 90 + [False] * 10)
    other_judge = result("stage_beam:verifier:8", [True] * 80 + [False] * 20)
    compare_pairs([greedy, two, eight, other_judge])
    assert eight.vs_greedy is not None and eight.vs_greedy[0] == pytest.approx(0.10)
    assert eight.vs_fewer is not None and eight.vs_fewer[:2] == (2, pytest.approx(0.12))
    assert two.vs_fewer is None and other_judge.vs_fewer is None  # nothing fewer of the same kind
    lines = EvalReport([greedy, two, eight, other_judge], "test", 100, "demo").scaling()
    assert len(lines) == 1 and lines[0].startswith("stage_beam:likelihood N=2 -> N=8: +12.0 points")


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

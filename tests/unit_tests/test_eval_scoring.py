"""Scoring the field's way, the grader, and the resumable answer log."""

import asyncio
import json

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_llava_cot.eval import AnswerLog, EvalQuestion, Grader, score_answer
from langchain_llava_cot.eval.scorers import FileScorer
from langchain_llava_cot.eval.scoring import read_choice, read_number

OPTIONS = (("A", "2"), ("B", "3"), ("C", "red square"), ("D", "13"))


@pytest.mark.parametrize(
    ("said", "read"),
    [
        ("B", "B"), ("(B)", "B"), ("b.", "B"), ("Answer: B", "B"), ("The answer is (B).", "B"), ("B. 3", "B"),
        ("3", "B"), ("There are 3.", "B"), ("the Red Square.", "C"), ("13", "D"),
        ("2 or 3", None), ("B. 13", None), ("yellow", None), ("", None),
    ],
)  # fmt: skip
def test_an_option_is_read_by_letter_or_by_its_text_and_never_guessed(said, read):
    assert read_choice(said, OPTIONS) == read


def test_multiple_choice_numbers_and_exact_text():
    choice = EvalQuestion("1", 0, "How many?", "B", choices=OPTIONS)
    assert score_answer(choice, "3").correct == 1.0
    wrong = score_answer(choice, "2 or 3")
    assert (wrong.correct, wrong.readable, wrong.method) == (0.0, False, "choice")
    number = EvalQuestion("2", 1, "How long?", "2.5")
    assert score_answer(number, "About 2.52 metres").correct == 1.0  # within 1%
    assert (
        score_answer(number, "2.6").correct == 0.0
        and score_answer(number, "2.6", tolerance=0.05).correct == 1.0
    )
    assert score_answer(number, "two or three").readable is False
    assert read_number("1,024 tokens") == 1024.0 and read_number("seven") == 7.0
    text = EvalQuestion("3", 2, "What is it?", "A red square.")
    assert (
        score_answer(text, "a  red SQUARE").correct == 1.0 and score_answer(text, "a square").correct == 0.0
    )
    letter_only = EvalQuestion("4", 3, "Which? A: x B: y", "B")  # options inside the question (MMStar)
    assert score_answer(letter_only, "Answer: B").correct == 1.0


def _record(*conclusions: str, winner: int = 0) -> dict:
    candidates = [
        {"text": c, "stages": {"conclusion": c}, "closed": True, "problems": []} for c in conclusions
    ]
    stages = {"summary": "s", "caption": "c", "reasoning": "r", "conclusion": conclusions[winner]}
    step = {"stage": "conclusion", "span": ["conclusion"], "winner": winner, "candidates": candidates}
    return {"steps": [step], "chosen": stages}


def test_the_file_scorer_counts_the_final_judge_decision_and_pass_at_n():
    question = EvalQuestion("7", 0, "How many?", "B", choices=OPTIONS, category="count")
    scored = asyncio.run(FileScorer().score(question, "2", _record("2", "3", winner=0)))
    assert (
        scored["correct"] is False
        and scored["pass"] is True
        and scored["decisions"] == [("conclusion", False)]
    )
    assert scored["category"] == "count" and scored["well_formed"] is True


def test_the_grader_scores_open_answers_and_its_prompt_and_verdict_are_kept():
    grader_model = GenericFakeChatModel(messages=iter([AIMessage("0.5"), AIMessage("I would not know.")]))
    scorer = FileScorer(grader=Grader(grader_model))
    question = EvalQuestion("8", 0, "What is on the table?", "a red cup and a blue plate")
    scored = asyncio.run(scorer.score(question, "a red cup", _record("a red cup")))
    assert (scored["correct"], scored["readable"], scored["method"], scored["pass"]) == (
        0.5,
        True,
        "grader",
        None,
    )
    assert "Correct answer: a red cup and a blue plate" in scored["grader"]["prompt"]
    assert "Model's answer: a red cup" in scored["grader"]["prompt"] and scored["grader"]["verdict"] == "0.5"
    unread = asyncio.run(scorer.score(question, "plates", _record("plates")))
    assert (unread["correct"], unread["readable"]) == (
        0.0,
        False,
    )  # no score in the reply: wrong, not guessed
    numeric = asyncio.run(scorer.score(EvalQuestion("9", 0, "How many?", "4"), "4", _record("4")))
    assert numeric["method"] == "number"  # the grader only scores open answers


def test_the_answer_log_keeps_whole_lines_and_cuts_a_torn_one(tmp_path):
    path = tmp_path / "answers.jsonl"
    with AnswerLog(path) as log:
        for index in range(3):
            log.append({"strategy": "greedy", "index": index, "correct": True})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"strategy": "greedy", "index": 3, "corr')  # killed mid-write
    log = AnswerLog(path)
    assert len(log) == 3 and log.dropped == 1 and not log.has("greedy", 3)
    assert path.read_bytes() == whole  # the torn line is cut off before anything is appended
    log.append({"strategy": "greedy", "index": 3, "correct": False})
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 3]


def test_one_run_at_a_time_writes_an_answer_log(tmp_path):
    path = tmp_path / "answers.jsonl"
    with AnswerLog(path) as first:
        first.append({"strategy": "greedy", "index": 0, "correct": True})
        with pytest.raises(ValueError, match="Another run is writing .*answers.jsonl'; let it finish"):
            AnswerLog(path)  # a second run into the same folder would ask the same questions again
        first.append({"strategy": "greedy", "index": 1, "correct": True})
    with AnswerLog(path) as again:  # the first run is over: the folder is free to resume
        assert len(again) == 2 and again.dropped == 0

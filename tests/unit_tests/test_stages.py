import pytest

from langchain_llava_cot.stages import STAGES, Stage, cut_stage, parse_answer, render_answer

WELL_FORMED = render_answer(
    {Stage.SUMMARY: "count", Stage.CAPTION: "two red", Stage.REASONING: "so two", Stage.CONCLUSION: "2"}
)


def test_well_formed_answer_parses_cleanly():
    parsed = parse_answer(WELL_FORMED)
    assert parsed.well_formed
    assert [parsed.stages[s] for s in STAGES] == ["count", "two red", "so two", "2"]
    assert parsed.conclusion == "2"


def test_render_uses_tags_and_blank_lines():
    assert WELL_FORMED.startswith("<SUMMARY> count </SUMMARY>\n\n<CAPTION> two red </CAPTION>")


@pytest.mark.parametrize(
    ("text", "problem", "conclusion"),
    [
        ("<SUMMARY> a </SUMMARY> <CONCLUSION> 3", "<CONCLUSION> not closed", "3"),
        ("<SUMMARY> a <CAPTION> b </CAPTION>", "<SUMMARY> not closed", "b"),
        ("<CONCLUSION> 1 </CONCLUSION><CONCLUSION> 2 </CONCLUSION>", "<CONCLUSION> repeated", "1"),
        ("<CAPTION> c </CAPTION><SUMMARY> s </SUMMARY>", "<SUMMARY> out of order", "c"),
        ("hello <SUMMARY> s </SUMMARY>", "text outside tags", "s"),
        ("<SUMMARY> s </SUMMARY> trailing", "text outside tags", "s"),
        ("</CAPTION> <SUMMARY> s </SUMMARY>", "</CAPTION> without <CAPTION>", "s"),
        ("<SUMMARY> s </CAPTION> t </SUMMARY>", "</CAPTION> inside <SUMMARY>", "s </CAPTION> t"),
        ("just an answer", "no stage tags", "just an answer"),
    ],
)
def test_malformed_text_is_reported_not_raised(text, problem, conclusion):
    parsed = parse_answer(text)
    assert not parsed.well_formed
    assert any(p.startswith(problem) for p in parsed.problems), parsed.problems
    assert parsed.conclusion == conclusion


def test_missing_stages_are_listed():
    parsed = parse_answer("<SUMMARY> s </SUMMARY>")
    assert parsed.missing == (Stage.CAPTION, Stage.REASONING, Stage.CONCLUSION)


def test_lowercase_tags_are_accepted():
    assert parse_answer("<conclusion> yes </conclusion>").stages == {Stage.CONCLUSION: "yes"}


def test_empty_text_parses_to_nothing():
    parsed = parse_answer("")
    assert parsed.stages == {} and len(parsed.missing) == 4 and parsed.conclusion == ""


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        (" two red </CAPTION>", ("two red", True)),
        (" two red", ("two red", False)),
        (" two red <REASONING> so", ("two red", False)),
        (" two red </SUMMARY>", ("two red", False)),
    ],
)
def test_cut_stage(generated, expected):
    assert cut_stage(Stage.CAPTION, generated) == expected


def test_each_stage_has_its_own_criterion():
    assert len({s.criterion for s in STAGES}) == 4

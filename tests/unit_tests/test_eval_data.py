"""Benchmark files in every format, read into questions: columns, options, pictures, bad rows and files."""

import base64
import json

import pytest

from langchain_llava_cot.demo.dataset import get_example
from langchain_llava_cot.eval import DataError, load_questions, parse_columns
from langchain_llava_cot.eval.demo_files import demo_rows, own_phrasing, write_benchmark

ROWS = demo_rows(6)


@pytest.mark.parametrize("name", ["bench.tsv", "bench.jsonl", "bench.json", "bench.parquet", "saved"])
def test_every_format_reads_back_the_same_questions(tmp_path, name):
    path = write_benchmark(tmp_path / name, ROWS)
    dataset = load_questions(path)
    assert dataset.skipped == []
    assert [q.index for q in dataset.questions] == [str(r["index"]) for r in ROWS]
    for question, row in zip(dataset.questions, ROWS):
        assert question.images == (row["image"],)  # the demo's own PNG, byte for byte
        assert question.question == row["question"]
        assert question.answer == row["answer"]
        assert dict(question.choices) == {k: row[k] for k in "ABCD" if k in row}
        assert question.category == row["category"]


def test_a_vlmevalkit_tsv_with_hint_reference_rows_and_other_columns(tmp_path):
    picture = get_example("test", 0).image_bytes
    lines = [
        "index\tquestion\thint\tA\tB\tC\tanswer\tcategory\tl2-category\timage",
        f"10\tHow many?\tCount them.\t2\t3\t4\tB\tcount\tperception\t{base64.b64encode(picture).decode()}",
        "11\tWhat colour?\t\tred\tblue\t\tred\tattribute\tperception\t10",  # the picture of row 10
    ]
    (tmp_path / "mmb.tsv").write_text("\n".join(lines) + "\n")
    first, second = load_questions(tmp_path / "mmb.tsv").questions
    assert (
        first.prompt()
        == "Count them.\nHow many?\nA. 2\nB. 3\nC. 4\nAnswer with the letter of the right option."
    )
    assert second.images == first.images == (picture,)
    assert (
        second.choices == (("A", "red"), ("B", "blue")) and second.answer == "A"
    )  # given as the option's text


def test_columns_are_named_where_the_usual_names_fail(tmp_path):
    picture = tmp_path / "p.png"
    picture.write_bytes(get_example("test", 1).image_bytes)
    row = {"pid": "q1", "query": "What is 2+2?", "decoded_image": "p.png", "ans": "4", "subject": "math"}
    (tmp_path / "mathvista.jsonl").write_text(json.dumps(row) + "\n")
    columns = parse_columns("question=query,image=decoded_image,answer=ans,category=subject,index=pid")
    (question,) = load_questions(tmp_path / "mathvista.jsonl", columns).questions
    assert (question.index, question.question, question.answer, question.category) == (
        "q1",
        "What is 2+2?",
        "4",
        "math",
    )
    assert question.images == (picture.read_bytes(),)
    with pytest.raises(DataError, match=r"no question column .*--columns question=COLUMN"):
        load_questions(tmp_path / "mathvista.jsonl")
    with pytest.raises(DataError, match="no column 'prompt'"):
        load_questions(tmp_path / "mathvista.jsonl", {"question": "prompt", "answer": "ans"})
    with pytest.raises(ValueError, match="FIELD=COLUMN"):
        parse_columns("question")


def test_a_row_whose_picture_cannot_be_decoded_is_skipped_with_its_index(tmp_path):
    rows = [dict(r) for r in ROWS[:3]]
    rows[1]["image"] = b"\x89PNG not really"
    path = write_benchmark(tmp_path / "b.tsv", rows)
    dataset = load_questions(path)
    assert [q.index for q in dataset.questions] == [str(rows[0]["index"]), str(rows[2]["index"])]
    assert len(dataset.skipped) == 1 and dataset.skipped[0].startswith(
        f"row {rows[1]['index']}: picture cannot"
    )


def test_an_answer_that_is_no_option_skips_its_row(tmp_path):
    rows = [
        {"id": "a", "question": "Q?", "choices": ["x", "y"], "answer": "z"},
        {"id": "b", "question": "Q?", "answer": "7"},
    ]
    (tmp_path / "q.json").write_text(json.dumps(rows))
    dataset = load_questions(tmp_path / "q.json")
    assert [q.index for q in dataset.questions] == ["b"] and "neither an option's letter" in dataset.skipped[
        0
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.tsv", None, "does not exist"),
        ("bench.csv", "a,b\n", r"unknown data format\. Pass one of: a VLMEvalKit \.tsv file"),
        ("bad.jsonl", '{"question": "Q?"\n', "line 1 is not JSON"),
        ("dict.json", '{"question": "Q?"}', "write a list of question objects"),
        ("noanswer.jsonl", '{"question": "Q?"}\n', r"has no answer column \(looked for answer\)"),
    ],
)
def test_a_file_that_cannot_be_used_is_one_clear_error_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_questions(path)
    assert name in str(error.value)


def test_shuffle_and_questions_take_a_seeded_sample(tmp_path):
    path = write_benchmark(tmp_path / "b.jsonl", ROWS)
    first = [q.index for q in load_questions(path, questions=3, shuffle=1).questions]
    assert first == [q.index for q in load_questions(path, questions=3, shuffle=1).questions]
    assert len(first) == 3 and first != [q.index for q in load_questions(path, questions=3).questions]


def test_own_phrasing_is_not_the_generators():
    for index in range(40):
        example = get_example("test", index, world="classic")
        assert own_phrasing(example) != example.question and own_phrasing(example).endswith("?")

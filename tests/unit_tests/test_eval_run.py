"""run_eval on a benchmark file with a scripted backend, and llava-cot eval's bad input: one line, exit 2."""

import json
import subprocess
import sys

import pytest
from fakes import SCRIPT, ScriptedBackend

from langchain_llava_cot.eval import run_eval
from langchain_llava_cot.eval.cli import main


def _file(tmp_path, count=6):
    from langchain_llava_cot.demo.dataset import get_example

    rows = []
    for index in range(count):  # the scripted model always concludes "3" first
        picture = tmp_path / f"{index}.png"
        picture.write_bytes(get_example("test", index).image_bytes)
        answer = "B" if index % 2 == 0 else "A"
        choices = ["3", "4"] if answer == "B" else ["3", "5"]
        choices = choices[::-1] if answer == "B" else choices
        rows.append({"id": f"q{index}", "image": picture.name, "question": "How many?", "choices": choices,
                     "answer": answer, "category": "even" if index % 2 == 0 else "odd"})  # fmt: skip
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_file_is_scored_per_category_and_resumed_without_asking_again(tmp_path):
    data = _file(tmp_path)
    backend = ScriptedBackend(SCRIPT)
    strategies = ["greedy", "best_of_n:likelihood:2"]
    report = run_eval(data=data, backend=backend, strategies=strategies, output_dir=tmp_path / "out",
                      progress=False, concurrency=3)  # fmt: skip
    greedy, best = report.results
    assert greedy.accuracy == 1.0 and greedy.unreadable == 0.0 and greedy.questions == 6
    assert greedy.by_kind == {"even": 1.0, "odd": 1.0} and greedy.caption_right is None
    assert best.vs_greedy == (0.0, 0.0, 0.0) and best.requests_per_question > 0
    lines = (tmp_path / "out" / "answers.jsonl").read_text().splitlines()
    assert sorted((json.loads(x)["strategy"], json.loads(x)["index"]) for x in lines) == sorted(
        (s, f"q{i}") for s in strategies for i in range(6)
    )
    asked = len(backend.sample_calls)
    again = run_eval(
        data=data, backend=backend, strategies=strategies, output_dir=tmp_path / "out", progress=False
    )
    assert len(backend.sample_calls) == asked and again.kept == 12  # nothing asked twice
    assert [r.accuracy for r in again.results] == [1.0, 1.0]
    assert "unreadable" in again.markdown() and "caption right" not in again.markdown()


def test_another_runs_answers_are_not_mixed_in(tmp_path):
    data = _file(tmp_path, 2)
    run_eval(data=data, backend=ScriptedBackend(SCRIPT), strategies=["greedy"], output_dir=tmp_path / "out",
             progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="holds answers of another run: temperature 0.6 \\(now 0.9\\)"):
        run_eval(data=data, backend=ScriptedBackend(SCRIPT), strategies=["greedy"],
                 output_dir=tmp_path / "out", progress=False, temperature=0.9)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--questions", "0"], "--questions must be a whole number of at least 1, got 0."),
        (["--questions", "-3"], "--questions must be a whole number of at least 1, got -3."),
        (["--concurrency", "0"], "--concurrency must be a whole number of at least 1"),
        (["--out", "{file}"], "is a file; name a folder"),
        (["--data", "{tmp}/missing.tsv"], "does not exist"),
        (["--data", "{tmp}/x.csv"], "unknown data format"),
        (["--data", "{tmp}/noanswer.jsonl"], "has no answer column"),
        (["--strategies", "beam"], "Unknown strategy 'beam'"),
        (["--columns", "question=q"], "--columns names the columns of a --data file"),
        (["--shuffle", "1"], "shuffle applies to a data file"),
        (["--model", "{tmp}/nowhere"], "Model folder"),
        (
            ["--base-url", "http://127.0.0.1:9/v1", "--workers", "2"],
            "Worker processes load an in-process model",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2_before_any_model_loads(tmp_path, args, message):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "noanswer.jsonl").write_text('{"question": "Q?"}\n')
    args = [a.format(tmp=tmp_path, file=tmp_path / "a-file") for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    code = (
        "import sys; from langchain_llava_cot.eval.cli import main; code = main(sys.argv[1:]); "
        "print(code, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr  # exit 2, and torch was never imported
    error_lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: ") and message in error_lines[0]


def test_help_describes_data_files_and_servers(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--data" in out and "--base-url" in out and "--api-key-env" in out and "--concurrency" in out

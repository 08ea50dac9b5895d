"""run_eval on a benchmark file with a scripted backend, and llava-cot eval's bad input: one line, exit 2."""

import asyncio
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
    again = run_eval(data=data, backend=ScriptedBackend(SCRIPT), strategies=["greedy"],
                     output_dir=tmp_path / "out", progress=False)  # fmt: skip
    assert again.kept == 2  # the refused run let go of the folder: the first one's settings resume it


class _RefusesLongPrompts(ScriptedBackend):
    """Refuses any question marked "(long)", as a backend refuses a prompt longer than its context."""

    def sample(self, requests):
        if any("(long)" in request.conversation.question for request in requests):
            msg = "The prompt is 5,000 tokens long;\n  the model takes 1,024. Shorten the question."
            raise ValueError(msg)
        return super().sample(requests)


def test_a_question_that_cannot_be_asked_is_counted_wrong_and_listed_in_one_line(tmp_path):
    data = _file(tmp_path, 3)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[1]["question"] = "How many? (long)"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    backend = _RefusesLongPrompts(SCRIPT)
    report = run_eval(data=data, backend=backend, strategies=["greedy"], output_dir=tmp_path / "out",
                      progress=False)  # fmt: skip
    (greedy,) = report.results
    assert greedy.questions == 3 and greedy.accuracy == pytest.approx(2 / 3)
    assert report.failures() == [
        "greedy, question q1: The prompt is 5,000 tokens long; the model takes 1,024. Shorten the question."
    ]
    asked = len(backend.sample_calls)
    again = run_eval(data=data, backend=backend, strategies=["greedy"], output_dir=tmp_path / "out",
                     progress=False)  # fmt: skip
    assert again.kept == 3 and len(backend.sample_calls) == asked  # the refused question is not asked again


async def test_where_an_event_loop_runs_the_eval_says_to_run_it_in_a_thread(tmp_path):
    data = _file(tmp_path, 2)
    with pytest.raises(RuntimeError, match=r"await asyncio.to_thread\(run_eval, \.\.\.\)"):
        run_eval(data=data, backend=ScriptedBackend(SCRIPT), strategies=["greedy"], output_dir=None,
                 progress=False)  # fmt: skip
    report = await asyncio.to_thread(
        run_eval, data=data, backend=ScriptedBackend(SCRIPT), strategies=["greedy"], output_dir=None,
        progress=False,
    )  # fmt: skip
    assert report.results[0].questions == 2 and report.results[0].accuracy == 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategies": ["retrace:pairwise:2"]}, "retrace:pairwise:2: strategy='retrace' compares scores"),
        ({"temperature": -1.0}, "greedy: temperature must be at least 0.0, got -1.0."),
        ({"max_stage_tokens": {"summary": 0}}, "max_stage_tokens['summary'] must be a whole number"),
        ({"timeout": 0, "backend": None, "base_url": "http://127.0.0.1:9/v1"}, "timeout must be a number"),
    ],
)
def test_a_search_the_engine_refuses_fails_once_before_any_question(tmp_path, options, message):
    backend = ScriptedBackend(SCRIPT)
    options = {"strategies": ["greedy"], "backend": backend, **options}
    with pytest.raises(ValueError, match="^[^\n]+$") as refused:
        run_eval(data=_file(tmp_path, 2), output_dir=tmp_path / "out", progress=False, **options)
    assert message in str(refused.value) and not backend.sample_calls
    assert not (tmp_path / "out").exists()


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
        (["--strategies", "retrace:pairwise:2"], "the 'pairwise' judge does not score"),
        (["--timeout", "30"], "timeout is how long a served model's reply may take: pass it with base_url"),
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


def test_a_server_too_slow_for_the_timeout_is_one_line_that_names_timeout(monkeypatch, capsys, tmp_path):
    from langchain_llava_cot.backends.openai.errors import ServerTimeoutError
    from langchain_llava_cot.eval import run

    def times_out(*args, **kwargs):
        msg = "The server at URL did not answer within the timeout (ReadTimeout()). Raise timeout=."
        raise ServerTimeoutError(msg)

    monkeypatch.setattr(run, "run_eval", times_out)  # what a slow server makes run_eval raise
    out = str(tmp_path / "out")
    assert main(["--base-url", "http://127.0.0.1:8000/v1", "--timeout", "90", "--out", out]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line.endswith(
        "within the timeout (ReadTimeout()). Rerun the same command with a longer --timeout (now 90 s); "
        f"the answers so far are kept in {out}/answers.jsonl."
    )


def test_help_describes_data_files_and_servers(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--data" in out and "--base-url" in out and "--api-key-env" in out and "--concurrency" in out


def test_a_model_retrained_into_the_same_folder_is_another_run(tmp_path):
    from langchain_llava_cot.eval.run import weights_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    assert weights_fingerprint(folder) is None  # no weights: nothing to tell apart
    (folder / "model.safetensors").write_bytes(b"\x00" * 4096)
    first = weights_fingerprint(folder)
    assert first == weights_fingerprint(folder)
    (folder / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 4095)  # same size, retrained
    assert weights_fingerprint(folder) not in (None, first)
    assert weights_fingerprint(tmp_path / "missing") is None

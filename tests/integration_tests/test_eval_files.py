"""``llava-cot eval --data`` with the demo model: every format, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.eval import run_eval
from langchain_llava_cot.eval.cli import main
from langchain_llava_cot.eval.demo_files import demo_rows, write_benchmark

pytestmark = pytest.mark.timeout(1200)

ROWS = demo_rows(3, phrasing="trained")


@pytest.fixture(scope="module")
def backend():
    with TransformersBackend(str(DEMO_MODEL_PATH)) as loaded:
        yield loaded


@pytest.mark.parametrize("name", ["bench.tsv", "bench.jsonl", "bench.parquet", "saved"])
def test_the_demo_model_answers_a_benchmark_file_in_every_format(tmp_path, backend, name):
    data = write_benchmark(tmp_path / name, ROWS)
    report = run_eval(data=data, backend=backend, strategies=["greedy", "best_of_n:likelihood:2"],
                      output_dir=tmp_path / "out", progress=False, concurrency=2)  # fmt: skip
    assert [r.questions for r in report.results] == [3, 3]
    for result in report.results:
        assert (
            0.0 <= result.accuracy <= 1.0
            and result.tokens_per_question > 0
            and result.requests_per_question >= 1
        )
        assert all(r["method"] == "choice" for r in result.records)
    assert report.plot_path and report.plot_path.read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["data"] == str(data) and len(saved["results"]) == 2


def _answers(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]
    return [(line["strategy"], line["index"]) for line in lines]


def test_a_run_killed_with_sigkill_resumes_without_losing_or_repeating_a_question(tmp_path):
    data = write_benchmark(tmp_path / "bench.jsonl", demo_rows(8, phrasing="trained"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "langchain_llava_cot.eval", "--data", str(data),
               "--strategies", "greedy", "--out", str(out), "--no-progress", "--seed", "3"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    answers = out / "answers.jsonl"
    deadline = time.monotonic() + 300
    while len(_answers(answers)) < 3 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = _answers(answers)
    assert 3 <= len(kept) < 8, "the run must be killed in the middle"
    with answers.open("ab") as file:  # as if the kill had come in the middle of writing a line
        file.write(b'{"strategy": "greedy", "index": "99", "corr')
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    assert second.returncode == 0, second.stderr
    assert f"Kept {len(kept)} answers already in" in second.stdout and "cut 1 torn line" in second.stdout
    final = _answers(answers)
    assert sorted(final) == sorted(("greedy", str(i)) for i in range(8))  # none lost, none asked twice
    assert final[: len(kept)] == kept and answers.read_bytes().endswith(b"}\n")
    print(f"\nkilled after {len(kept)} of 8 answers; the rerun kept them and asked the other {8 - len(kept)}")


def test_a_dead_server_is_one_line_and_exit_1_after_the_skipped_rows_are_shown_as_written(tmp_path, capsys):
    rows = demo_rows(2, phrasing="trained")
    rows[1]["answer"] = "[/b]"  # no option: skipped, and its line is printed as it is, not as markup
    data = write_benchmark(tmp_path / "bench.jsonl", rows)
    dead = ["--data", str(data), "--base-url", "http://127.0.0.1:9/v1", "--served-model", "m",
            "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    assert main(dead) == 1
    seconds = time.perf_counter() - started
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "skipped row 1: the answer '[/b]' is neither an option's letter" in lines[0]
    assert lines[1].startswith("error: Cannot reach an OpenAI-compatible server at http://127.0.0.1:9/v1")
    print(f"\na dead server: exit 1 after {seconds:.1f} s")

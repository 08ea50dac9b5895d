"""The llava-cot command on a tiny local model."""

import json

import pytest
from PIL import Image

from langchain_llava_cot.cli import main


def test_ask_prints_every_stage_and_the_answer(tiny_llava_path, tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    status = main(
        [
            "ask",
            str(image),
            "How many red shapes?",
            "--model",
            str(tiny_llava_path),
            "--candidates",
            "2",
            "--judge",
            "pairwise",
            "--seed",
            "0",
            "--max-stage-tokens",
            "6",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    for stage in ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION"):
        assert f"{stage} (2 candidates, 1 comparisons" in out
    assert "Answer:" in out and "stage_beam:" in out


def test_a_whole_answer_step_is_labelled_with_its_stages(tiny_llava_path, tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    options = ["--model", str(tiny_llava_path), "--strategy", "best_of_n", "--candidates", "2"]
    assert main(["ask", str(image), "How many?", *options, "--seed", "0", "--max-stage-tokens", "4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "SUMMARY TO CONCLUSION (2 candidates" in out
    assert "Judge: likelihood (no judge was measured on this model" in out  # judge="auto", and why


def test_step_scores_show_under_each_candidate_with_the_weakest_marked(tiny_llava_path, tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    options = [
        "--model",
        str(tiny_llava_path),
        "--strategy",
        "best_of_n",
        "--candidates",
        "3",
        "--judge",
        "verifier",
    ]
    assert main(["ask", str(image), "How many?", *options, "--seed", "1", "--max-stage-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "<- weakest step" in out and "<CAPTION>" in out  # the verifier scores each stage of an answer


def test_ask_json_is_the_whole_search_record(tiny_llava_path, tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    status = main(
        [
            "ask",
            str(image),
            "How many?",
            "--model",
            str(tiny_llava_path),
            "--strategy",
            "greedy",
            "--json",
            "--max-stage-tokens",
            "6",
        ]
    )
    record = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [s["stage"] for s in record["llava_cot"]["steps"]] == [
        "summary",
        "caption",
        "reasoning",
        "conclusion",
    ]
    assert record["usage"]["output_tokens"] > 0 and record["model_name"] == str(tiny_llava_path)


def test_missing_image_is_a_clear_error(tmp_path, capsys):
    assert main(["ask", str(tmp_path / "nope.png"), "?", "--model", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _error_line(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_an_empty_question_or_a_folder_is_one_line_and_exit_2(tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    assert main(["ask", str(image), "  ", "--model", str(tmp_path)]) == 2
    assert "question is empty" in _error_line(capsys)
    assert main(["ask", str(tmp_path), "How many?", "--model", str(tmp_path)]) == 2
    assert "is a folder" in _error_line(capsys)


def test_a_wrong_model_path_is_one_line_and_exit_2(tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    assert main(["ask", str(image), "?", "--model", str(tmp_path / "no-such-model")]) == 2
    assert "does not exist" in _error_line(capsys)


def test_a_dead_server_is_one_line_and_exit_1(tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    dead = ["ask", str(image), "?", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert main(dead) == 1
    assert "Cannot reach" in _error_line(capsys)
    with pytest.raises(Exception, match="Cannot reach"):
        main([*dead, "--debug"])  # --debug shows the whole error


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: stage_beam)", "(default: 4)", "(default: 0.6)", "(default: cpu)"):
        assert default in out

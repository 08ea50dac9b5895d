"""The llava-cot command on a tiny local model."""

import json

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

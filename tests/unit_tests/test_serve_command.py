"""``llava-cot serve`` refuses a bad command line before it loads a model or listens."""

import pytest

from langchain_llava_cot.cli import main


def test_serve_is_a_command_with_its_own_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: llava-cot serve")
    for option in ("--host", "--port", "--api-key-env", "--strategy", "--candidates", "--allow-image-urls"):
        assert option in out


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--api-key-env", "LLAVA_COT_TEST_KEY_THAT_IS_NOT_SET"], "which is not set: export"),
        (["--candidates", "0"], "candidates must be a whole number"),
        (["--served-model-name", "a@b"], "without '@'"),
        (["--max-request-mb", "0"], "--max-request-mb must be above 0"),
    ],
)
def test_a_bad_serve_option_is_a_clear_error(arguments, says, capsys, monkeypatch):
    monkeypatch.delenv("LLAVA_COT_TEST_KEY_THAT_IS_NOT_SET", raising=False)
    assert main(["serve", *arguments]) == 2
    assert says in capsys.readouterr().err

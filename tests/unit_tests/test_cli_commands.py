import pytest

from langchain_llava_cot.cli import main


@pytest.mark.parametrize("command", ["eval", "train-demo"])
def test_delegated_commands_show_their_own_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: llava-cot {command}")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("ask", "demo", "eval", "train-demo"):
        assert command in out


def test_bad_option_value_is_a_clear_error(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(b"not a png")
    assert main(["ask", str(image), "?", "--candidates", "0"]) == 2
    assert "candidates must be a whole number" in capsys.readouterr().err

"""What a person sees when a command line is wrong: the subcommand's usage, one error line, exit 2, and a
guess at what a misspelt flag or command meant."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from embedops.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `embedops ARGV`, expect argparse's exit 2, return stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def test_an_abbreviated_flag_is_refused_with_the_subcommand_usage(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["quantize", "--model-path", "m", "--output", "o", "--dtyp", "int8"], capsys)
    assert err.startswith("usage: embedops quantize ")
    assert error_lines(err) == ["embedops quantize: error: unrecognized arguments: --dtyp (did you mean --dtype?)"]


def test_a_misspelt_flag_is_named_rather_than_the_required_flag_it_hides(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["quantize", "--model-pth", "m", "--output", "o"], capsys)
    assert error_lines(err) == [
        "embedops quantize: error: unrecognized arguments: --model-pth (did you mean --model-path?)"
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_reports_an_unknown_flag_with_its_own_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([command, "--no-such-flag=1"], capsys)
    assert err.startswith(f"usage: embedops {command} ")
    assert len(error_lines(err)) == 1
    assert f"embedops {command}: error: unrecognized arguments: --no-such-flag=1" in err


def test_a_stray_value_is_reported_by_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["info", "model", "extra"], capsys)
    assert err.startswith("usage: embedops info ")
    assert error_lines(err) == ["embedops info: error: unrecognized arguments: extra"]


def test_a_bad_value_suggests_the_closest_choice(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["quantize", "--model-path", "m", "--output", "o", "--dtype", "int9"], capsys)
    assert err.startswith("usage: embedops quantize ")
    (line,) = error_lines(err)
    assert "argument --dtype: invalid choice: 'int9'" in line and line.endswith("did you mean 'int8'?")


def test_an_unknown_subcommand_suggests_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["quantise"], capsys)
    assert err.startswith("usage: embedops [-h]")
    (line,) = error_lines(err)
    assert line.startswith("embedops: error: argument COMMAND: invalid choice: 'quantise'")
    assert line.endswith("did you mean 'quantize'?")


def test_values_that_start_with_a_dash_still_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["finetune", "--data", "d", "--output", "o", "--lr", "-1"]).lr == -1
    assert parser.parse_args(["info", "--", "--odd-name"]).model == "--odd-name"
    assert parser.parse_args(["eval", "--model", "m", "--data", "d", "--split=-x"]).split == "-x"


def test_the_installed_command_refuses_an_abbreviation() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedops", "serve", "--dtyp", "fp16"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: embedops serve ")
    assert (
        result.stderr.splitlines()[-1]
        == "embedops serve: error: unrecognized arguments: --dtyp (did you mean --dtype?)"
    )


@pytest.mark.parametrize("command", ["mine", "finetune"])
def test_a_missing_data_file_is_named_without_a_line_number(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([command, "--data", "nosuch.tsv", "--output", "out.jsonl" if command == "mine" else "out"]) == 2
    assert capsys.readouterr().err == "error: nosuch.tsv: no such file\n"


def test_evaluation_progress_is_logged_and_shown_by_the_cli(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from embedops.evaluate import EvalConfig, evaluate

    data = tmp_path / "triples.tsv"
    data.write_text("".join(f"question {n}\tanswer {n}\tnoise {n}\n" for n in range(6)))
    logger = logging.getLogger("embedops.evaluate")  # the CLI stops embedops' records at its own handler
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="embedops.evaluate"):
            evaluate(EvalConfig(models=[str(tiny_model_dir)], data=data))
    finally:
        logger.removeHandler(caplog.handler)
    assert caplog.messages[0] == "evaluating 1 model(s) on triples (triples: 6 queries, 12 documents)"
    capsys.readouterr()

    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "evaluating 1 model(s) on triples (triples: 6 queries, 12 documents)"
    assert re.fullmatch(rf"  {re.escape(str(tiny_model_dir))}: \d+\.\d s", lines[-1])

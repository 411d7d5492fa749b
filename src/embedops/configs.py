"""Config dataclasses filled from a command's parsed flags by field name, so each default is written once.

The rule, for every command whose config is a dataclass: a flag stores its value under the name of the field
it sets (`dest=`), has no argparse default (a switch's False excepted), and is None when left out, which
leaves the field's own default in charge. A field holding a dataclass, such as `FinetuneConfig.lora`, is
filled the same way from the flags named FIELD_SUBFIELD (`--lora-r` sets `lora.r`). `--help` shows each
default as `(default: X)`, read from the dataclass when help is printed, so argparse holds no copy; a field
whose default is None or empty means "not given", and its flag's help says in words what happens then.
A flag that fills no field (`--port` of `embedops pipeline --serve`) keeps its default in argparse, shown the
same way.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass, replace
from typing import Any, Self


class FromFlags:
    """Mixin for a config dataclass that command-line flags fill in (the module docstring has the rule)."""

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> Self:
        """The config asked for by parsed flags (`vars(args)`): each given flag under its field's name."""
        return cls(**_given(cls, flags, ""))

    @classmethod
    def flag_defaults(cls) -> dict[str, Any]:
        """Each flag name (nested fields as FIELD_SUBFIELD) with the default it leaves in place when unset."""
        return _flat_defaults(cls, "")


def _defaults(config: Any) -> dict[str, Any]:
    """Each init field of a dataclass with its default: the declared default of a class (MISSING where it
    has none), or an instance's own value (a nested config's default instance)."""
    if not isinstance(config, type):
        return {item.name: getattr(config, item.name) for item in fields(config) if item.init}
    defaults = {}
    for item in fields(config):
        if item.init:
            factory = item.default_factory
            defaults[item.name] = factory() if factory is not MISSING else item.default
    return defaults


def _given(config: Any, flags: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    given = {}
    for name, default in _defaults(config).items():
        if is_dataclass(default) and not isinstance(default, type):
            given[name] = replace(default, **_given(default, flags, f"{prefix}{name}_"))
        elif flags.get(prefix + name) is not None:
            given[name] = flags[prefix + name]
    return given


def _flat_defaults(config: Any, prefix: str) -> dict[str, Any]:
    flat = {}
    for name, default in _defaults(config).items():
        if is_dataclass(default) and not isinstance(default, type):
            flat.update(_flat_defaults(default, f"{prefix}{name}_"))
        elif default is not MISSING:
            flat[prefix + name] = default
    return flat


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends each value flag's line with its field's default, imported only when help is printed
    (the config modules may import numpy, which `embedops --help` must not wait for)."""

    def __init__(self, prog: str, *, config: str, **kwargs: Any) -> None:
        super().__init__(prog, **kwargs)
        self._config = config

    @functools.cached_property
    def _defaults(self) -> dict[str, Any]:
        module, name = self._config.split(":")
        config: type[FromFlags] = getattr(importlib.import_module(module), name)
        return config.flag_defaults()

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or not action.option_strings or action.nargs == 0:
            return text
        default = self._defaults.get(action.dest, action.default)  # a flag that fills no field keeps its own
        if default is None or default in ("", []):
            return text
        return f"{text} (default: {str(default).replace('%', '%%')})"


def help_with_defaults(config: str) -> Callable[..., argparse.HelpFormatter]:
    """The `formatter_class` of a command whose flags fill the FromFlags dataclass `config`, written as
    'package.module:Class' so that it is imported only when help is printed."""
    return functools.partial(_DefaultsFormatter, config=config)

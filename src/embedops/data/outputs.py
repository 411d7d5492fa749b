"""Data files written all-or-nothing: temp files beside the targets (named by `embedops.files`), renamed into
place together."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TextIO

from embedops.data.readers import detect_format
from embedops.errors import ConfigError, OutputExistsError
from embedops.files import temp_path


class AtomicFiles:
    """Open outputs as hidden temp files; `commit()` renames them all, leaving the block without it removes them.

    A failure half-way (bad line, Ctrl-C, full disk) thus leaves neither a truncated file nor a stale one.
    """

    def __init__(self, *, force: bool = False) -> None:
        self.force = force
        self._open: list[tuple[Path, Path, TextIO]] = []
        self.committed = False

    def check(self, target: Path) -> Path:
        """Fail before any work when `target` is taken and --force was not given."""
        if target.exists() and not self.force:
            raise OutputExistsError(f"output {target} already exists; choose another path or pass --force")
        if target.is_dir():
            raise OutputExistsError(f"output {target} is a directory; give a file path")
        return target

    def open(self, target: Path) -> TextIO:
        target = self.check(Path(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(target)
        handle = open(temp, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed on commit or exit)
        self._open.append((target, temp, handle))
        return handle

    def temp_path(self, target: Path) -> Path:
        """A path to write `target` to by other means (e.g. a plot library); renamed on commit like the rest."""
        handle = self.open(target)
        handle.close()
        return self._open[-1][1]

    def discard(self, target: Path) -> None:
        """Give up on one output: its temp file is removed now and nothing is renamed to `target`."""
        for entry in [entry for entry in self._open if entry[0] == Path(target)]:
            entry[2].close()
            entry[1].unlink(missing_ok=True)
            self._open.remove(entry)

    def commit(self) -> None:
        for _, _, handle in self._open:
            handle.close()
        for target, temp, _ in self._open:
            os.replace(temp, target)
        self.committed = True

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.committed:
            return
        for _, temp, handle in self._open:
            handle.close()
            temp.unlink(missing_ok=True)


class PairWriter:
    """Writes (anchor, positive[, negative]) rows in the format the target's extension names."""

    def __init__(self, handle: TextIO, target: Path) -> None:
        self.format = detect_format(Path(target))
        self.handle = handle
        self._csv = csv.writer(handle, lineterminator="\n") if self.format == "csv" else None

    def write(self, anchor: str, positive: str, negative: str | None = None) -> None:
        cells = [anchor, positive] if negative is None else [anchor, positive, negative]
        if self._csv is not None:
            self._csv.writerow(cells)
        elif self.format == "jsonl":
            record = dict(zip(("anchor", "positive", "negative"), cells, strict=False))
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            if any(char in cell for cell in cells for char in "\t\r\n"):
                raise ConfigError("a text holds a tab or line break, which TSV cannot carry; write .jsonl or .csv")
            self.handle.write("\t".join(cells) + "\n")

"""Files replaced all at once: written under a hidden temp name beside the target, then renamed onto it.

Readers see the old file or the new one, never half of one, and a crash (even kill -9) leaves the old
file in place plus, at worst, a hidden `.NAME.PID.tmp` that the next run can recognise and remove.
The temp name lives here alone, so every writer and every cleanup agree on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The hidden name `path` is written under before the rename (beside it, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}{_SUFFIX}")


def is_temp_of(name: str, target: str) -> bool:
    """Whether the file name `name` is a temp file of `target` (any process's)."""
    return name.startswith(f".{target}.") and name.endswith(_SUFFIX)


def temp_files(directory: Path) -> list[Path]:
    """Temp files in `directory` that a killed writer left behind."""
    return sorted(directory.glob(f".*{_SUFFIX}"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed onto `path` when the block succeeds, removed when
    it fails. A directory written there replaces a directory at `path` in two steps (the old one is
    removed first, as a rename cannot replace a non-empty directory)."""
    staging = temp_path(path)
    try:
        yield staging
        if staging.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        _remove(staging)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once (see `atomic_path`)."""
    with atomic_path(path) as staging:
        staging.write_text(text, encoding="utf-8")

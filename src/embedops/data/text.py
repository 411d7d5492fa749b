"""Text normalisation shared by `prep` (what is written) and near-duplicate matching (what is compared)."""

from __future__ import annotations

import re
import unicodedata

# Control and format characters (zero-width spaces, BOMs, soft hyphens, bidi marks) are invisible:
# two texts that differ only by them are the same text, and a text made only of them is empty.
_INVISIBLE = {"Cc", "Cf"}
_NOT_WORD = re.compile(r"[^\w\s]+")


def normalize_text(text: str) -> str:
    """NFC, invisible characters removed, whitespace runs (tabs, newlines included) collapsed to one space."""
    text = unicodedata.normalize("NFC", text)
    if not text.isprintable():
        text = "".join(
            " " if char.isspace() else char
            for char in text
            if char.isspace() or unicodedata.category(char) not in _INVISIBLE
        )
    return " ".join(text.split())


def matching_form(text: str) -> str:
    """The form near-duplicate detection compares: case-folded, punctuation dropped, so that
    "How do I reset it?" and "how do i reset it" count as the same question."""
    folded = text.casefold()
    stripped = " ".join(_NOT_WORD.sub(" ", folded).split())
    return stripped or folded

"""Token ids for serving, safe to call from any thread at once, with or without transformers loaded.

A fast tokenizer's own call re-applies its truncation and padding settings to the shared Rust
tokenizer on every call, so concurrent calls need a lock; a private copy of the Rust tokenizer,
set once to neither truncate nor pad, needs none. Special tokens are placed by hand (the prefix and
suffix the model's post-processor puts around one sequence), so windowing can keep either side of a
long input. Slow tokenizers keep their own call, under a lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from embedops.errors import ArtifactError, RequestError
from embedops.models import read_json

Encode = Callable[[list[str]], list[list[int]]]
Decode = Callable[[list[int], bool], str]  # ids, skip special tokens → text
_PROBE_TEXT = "hello world"
_PROBE_ID = -1  # stands for the content in a slow tokenizer's build_inputs_with_special_tokens


class Token(NamedTuple):
    """One token as TEI's `/tokenize` returns it."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class ServingTokenizer:
    """Texts → content ids (no special tokens); `wrap` adds the model's special tokens around them."""

    encode: Encode
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    pad_left: bool
    vocab_size: int
    decode: Decode
    lowercase: bool = False
    # The private Rust tokenizer of a fast tokenizer: what /tokenize reads offsets and token texts from.
    backend: Any = None

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        return self.encode([text.lower() for text in texts] if self.lowercase else texts)

    def wrap(self, ids: Sequence[int]) -> list[int]:
        return [*self.prefix, *ids, *self.suffix]

    def tokens(self, text: str, *, add_special_tokens: bool) -> list[Token]:
        """Each token of `text` with its id, the text it stands for and its UTF-8 byte span (TEI's
        `/tokenize` shape: special tokens have their own text and no span)."""
        if self.backend is None:
            raise RequestError("this model's tokenizer has no offsets (not a fast tokenizer)", status=501)
        source = text.lower() if self.lowercase else text
        encoding = self.backend.encode(source, add_special_tokens=add_special_tokens)
        if len(source) != len(text):  # lowercasing changed the length: spans refer to the lowered text
            text = source
        ends = [0, *itertools.accumulate(len(char.encode()) for char in text)]  # char offset → byte offset
        tokens: list[Token] = []
        for token_id, (start, stop), special, piece in zip(
            encoding.ids, encoding.offsets, encoding.special_tokens_mask, encoding.tokens, strict=True
        ):
            if special:
                tokens.append(Token(token_id, piece, True, None, None))
            else:
                tokens.append(Token(token_id, text[start:stop], False, ends[start], ends[stop]))
        return tokens

    @classmethod
    def from_files(cls, directory: Path, *, lowercase: bool = False) -> ServingTokenizer | None:
        """From `tokenizer.json` and `tokenizer_config.json` alone (no transformers); None without them."""
        from tokenizers import Tokenizer

        if not (directory / "tokenizer.json").is_file():
            return None
        backend = _without_padding_or_truncation(Tokenizer.from_file(str(directory / "tokenizer.json")))
        config: dict[str, Any] = read_json(directory / "tokenizer_config.json")
        pad_token = config.get("pad_token")
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content")
        pad_id = backend.token_to_id(pad_token) if isinstance(pad_token, str) else None
        prefix, suffix = _specials_around(backend, directory)
        return cls(
            encode=_lock_free(backend),
            prefix=prefix,
            suffix=suffix,
            pad_id=pad_id or 0,
            pad_left=config.get("padding_side") == "left",
            vocab_size=backend.get_vocab_size(with_added_tokens=True),
            decode=_decoder(backend),
            lowercase=lowercase,
            backend=backend,
        )

    @classmethod
    def from_transformers(cls, tokenizer: Any, *, lowercase: bool = False) -> ServingTokenizer:
        """From a loaded Hugging Face tokenizer (what sentence-transformers holds)."""
        if getattr(tokenizer, "is_fast", False):
            from tokenizers import Tokenizer

            backend = _without_padding_or_truncation(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()))
            encode, decode = _lock_free(backend), _decoder(backend)
            prefix, suffix = _specials_around(backend, tokenizer.name_or_path)
        else:
            backend = None
            lock = threading.Lock()
            encode, decode = _locked(tokenizer, lock), _locked_decoder(tokenizer, lock)
            wrapped = tokenizer.build_inputs_with_special_tokens([_PROBE_ID])
            at = wrapped.index(_PROBE_ID)
            prefix, suffix = tuple(wrapped[:at]), tuple(wrapped[at + 1 :])
        return cls(
            encode=encode,
            prefix=prefix,
            suffix=suffix,
            pad_id=tokenizer.pad_token_id or 0,
            pad_left=tokenizer.padding_side == "left",
            vocab_size=len(tokenizer),
            decode=decode,
            lowercase=lowercase,
            backend=backend,
        )


def _without_padding_or_truncation(backend: Any) -> Any:
    backend.no_truncation()
    backend.no_padding()
    return backend


def _lock_free(backend: Any) -> Encode:
    """`backend` must be this tokenizer's own copy: nothing may change its settings after this."""

    def encode(texts: list[str]) -> list[list[int]]:
        if len(texts) == 1:  # skips the hand-off to the tokenizer's thread pool
            return [backend.encode(texts[0], add_special_tokens=False).ids]
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]

    return encode


def _decoder(backend: Any) -> Decode:
    def decode(ids: list[int], skip_special_tokens: bool) -> str:
        return str(backend.decode(ids, skip_special_tokens=skip_special_tokens))

    return decode


def _locked(tokenizer: Any, lock: threading.Lock) -> Encode:
    def encode(texts: list[str]) -> list[list[int]]:
        with lock:
            return tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]

    return encode


def _locked_decoder(tokenizer: Any, lock: threading.Lock) -> Decode:
    def decode(ids: list[int], skip_special_tokens: bool) -> str:
        with lock:
            return str(tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    return decode


def _specials_around(backend: Any, source: object) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the post-processor puts before and after a single sequence, read off a probe encoding."""
    content = backend.encode(_PROBE_TEXT, add_special_tokens=False).ids
    wrapped = backend.encode(_PROBE_TEXT, add_special_tokens=True).ids
    for at in range(len(wrapped) - len(content) + 1):
        if wrapped[at : at + len(content)] == content:
            return tuple(wrapped[:at]), tuple(wrapped[at + len(content) :])
    raise ArtifactError(f"{source}: the tokenizer's special tokens do not wrap the text; cannot serve it")

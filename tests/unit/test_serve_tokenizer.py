"""The serving tokenizer gives the ids the model's own tokenizer gives, from the files alone or from a
loaded tokenizer, for fast and slow tokenizers and for models that lowercase their input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertTokenizer

from embedops.models import DEFAULT_MODEL, resolve
from embedops.serve.tokenizer import ServingTokenizer

TEXTS = ["Hello World", "how do I share an album?", "naïve café — 東京 🙂", ""]


@pytest.fixture(scope="module")
def bundled() -> Path:
    return resolve(DEFAULT_MODEL).path


def _served(tokenizer: ServingTokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.wrap(ids) for ids in tokenizer.content_ids(texts)]


def test_files_and_loaded_tokenizer_agree_with_transformers(bundled: Path) -> None:
    reference = AutoTokenizer.from_pretrained(str(bundled))
    expected = reference(TEXTS)["input_ids"]
    from_files = ServingTokenizer.from_files(bundled)
    assert from_files is not None
    for served in (from_files, ServingTokenizer.from_transformers(reference)):
        assert _served(served, TEXTS) == expected
        assert (served.prefix, served.suffix) == ((reference.cls_token_id,), (reference.sep_token_id,))
        assert served.specials == reference.num_special_tokens_to_add(pair=False)
        assert (served.pad_id, served.pad_left, served.vocab_size) == (reference.pad_token_id, False, len(reference))


def test_slow_tokenizer_is_wrapped_like_its_own_call(bundled: Path) -> None:
    slow = BertTokenizer.from_pretrained(str(bundled))
    served = ServingTokenizer.from_transformers(slow)
    assert _served(served, TEXTS) == slow(TEXTS)["input_ids"]


def test_lowercasing_models_see_lowercase_text(bundled: Path, tmp_path: Path) -> None:
    cased = tmp_path / "cased"
    cased.mkdir()
    shutil.copy(bundled / "tokenizer.json", cased / "tokenizer.json")
    served = ServingTokenizer.from_files(cased, lowercase=True)
    plain = ServingTokenizer.from_files(cased)
    assert served is not None and plain is not None
    assert served.content_ids(["ALBUM Share"]) == plain.content_ids(["album share"])


def test_directory_without_tokenizer_json_is_not_opened(tmp_path: Path) -> None:
    assert ServingTokenizer.from_files(tmp_path) is None

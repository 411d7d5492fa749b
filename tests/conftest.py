"""Shared fixtures: a tiny real SentenceTransformer built from a config (fast unit tests), the
bundled real model, and the real datasets in ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets (WikiQA, STS-B, SICK) kept beside the project; skip where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-dim BERT SentenceTransformer with random weights and the bundled tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from embedops.models import resolve

    root = tmp_path_factory.mktemp("tiny")
    hf_dir, st_dir = root / "hf", root / "tiny-model"
    tokenizer = AutoTokenizer.from_pretrained(str(resolve("sentence-transformers/all-MiniLM-L6-v2").path))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def onnx_artifact(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an int8 ONNX artifact made by `embedops quantize` (what the pipeline ships)."""
    pytest.importorskip("onnxruntime")
    from embedops.quantize.config import QuantizeConfig
    from embedops.quantize.pipeline import quantize

    target = tmp_path_factory.mktemp("onnx") / "tiny-int8"
    quantize(QuantizeConfig(model_path=str(tiny_model_dir), output=str(target), dtype="int8", check_samples=8))
    return target

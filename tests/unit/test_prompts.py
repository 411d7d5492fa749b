"""Prompts, as text-embeddings-inference applies them: a model's prompt goes before texts when a request
(or `embedops embed --prompt-name`) names it, and a model's `default_prompt_name` is not applied but
pointed out when the model is loaded; `eval` scores texts as the server embeds them; for a torch model
and an ONNX artifact alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serve_app import LIMITS, run_server

from embedops.models import load, resolve
from embedops.serve.engine import Engine
from embedops.serve.settings import ServeSettings

TEXTS = ["how fast do glaciers melt?", "sea levels rise as the ice sheets shrink"]


@pytest.fixture(scope="module")
def prompted_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("prompted") / "prompted-model"
    shutil.copytree(tiny_model_dir, target)
    config_file = target / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config |= {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}
    config_file.write_text(json.dumps(config))
    return target


def embedded_with_passage_prompt(model: Path, tmp_path: Path) -> np.ndarray:
    """TEXTS' vectors from `embedops embed --prompt-name passage`, as stored in its shards."""
    from embedops.embed.job import EmbedConfig, run_embed
    from embedops.embed.manifest import read_embed_manifest
    from embedops.embed.shards import read_vectors

    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("id\ttext\n" + "".join(f"d{index}\t{text}\n" for index, text in enumerate(TEXTS)))
    run_embed(EmbedConfig(input=str(corpus), output=str(tmp_path / "out"), model=str(model), prompt_name="passage"))
    manifest = read_embed_manifest(tmp_path / "out")
    assert manifest is not None
    return read_vectors([tmp_path / "out" / entry["file"] for entry in manifest.shards])[1]


@pytest.fixture(scope="module")
def prompted_artifact(prompted_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from embedops.quantize.config import QuantizeConfig
    from embedops.quantize.pipeline import quantize

    target = tmp_path_factory.mktemp("prompted-onnx") / "prompted-int8"
    quantize(QuantizeConfig(model_path=str(prompted_model), output=str(target), dtype="int8", check_samples=8))
    return target


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_a_prompt_goes_before_texts_only_when_named(
    kind: str, prompted_model: Path, prompted_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = prompted_model if kind == "torch" else prompted_artifact
    model = load(resolve(path), device="cpu")
    assert model.prompts["passage"] == "passage: ", "the ONNX artifact's prompts reach its SentenceTransformer too"
    as_sent = model.encode(TEXTS, prompt="")
    named = model.encode(TEXTS, prompt_name="passage")
    assert not np.allclose(as_sent, named, atol=1e-4), "the prompt changes the vectors"

    with caplog.at_level("WARNING", logger="embedops.serve.engine"):
        engine = Engine(resolve(path), device="cpu")
    assert "default_prompt_name 'query'" in caplog.text, "the model's default, not applied, is pointed out"
    assert engine.info.forward == ("onnxruntime+numpy" if kind == "onnx" else "sentence-transformers")
    for url in run_server(ServeSettings(model=str(path), **LIMITS), engine):
        with httpx.Client(base_url=url, timeout=30) as client:
            info = client.get("/info").json()
            served = client.post("/embed", json={"inputs": TEXTS}).json()["embeddings"]
            served_named = client.post("/embed", json={"inputs": TEXTS, "prompt_name": "passage"}).json()
    assert info["prompts"] == sorted(model.prompts) and "passage" in info["prompts"]
    np.testing.assert_allclose(served, as_sent, atol=1e-5)
    np.testing.assert_allclose(served_named["embeddings"], named, atol=1e-5)

    np.testing.assert_allclose(embedded_with_passage_prompt(path, tmp_path), named, atol=1e-5)

    from embedops.evaluate.encoders import ModelEncoder

    np.testing.assert_allclose(ModelEncoder(str(path)).encode(TEXTS, batch_size=2), as_sent, atol=1e-5)


def test_quantization_drift_compares_the_texts_as_served(prompted_artifact: Path, onnx_artifact: Path) -> None:
    """The drift check embeds the same texts on both sides, without the default prompt that only the
    fp32 SentenceTransformer would apply: the prompted model drifts as little as the same model without."""
    from embedops.artifact import read_manifest

    drift = {}
    for name, path in (("prompted", prompted_artifact), ("plain", onnx_artifact)):
        manifest = read_manifest(path)
        assert manifest is not None and manifest.quantization is not None
        drift[name] = manifest.quantization["drift"]["mean_cosine"]
    assert drift["prompted"] == pytest.approx(drift["plain"], abs=1e-6)


def test_a_cut_from_the_left_keeps_the_named_prompt(prompted_model: Path) -> None:
    """TEI's truncation_direction Left keeps a long text's end; the prompt before it stays whole."""
    engine = Engine(resolve(prompted_model), device="cpu")
    long_text = " ".join(f"word{index}" for index in range(200))
    prompt_ids = engine.tokenizer.content_ids(["passage: "])[0]
    text_ids = engine.tokenizer.content_ids(["passage: " + long_text])[0]
    assert text_ids[: len(prompt_ids)] == prompt_ids
    room = engine.info.max_seq_length - engine.tokenizer.specials
    kept = engine.tokenizer.wrap(prompt_ids + text_ids[len(text_ids) - (room - len(prompt_ids)) :])
    expected = engine.finish(engine.embed([kept]), normalize=False, dimensions=None)[0]
    prompt_cut = engine.finish(
        engine.embed([engine.tokenizer.wrap(text_ids[-room:])]), normalize=False, dimensions=None
    )
    assert not np.allclose(expected, prompt_cut[0], atol=1e-4), "losing the prompt changes the vector"
    body = {"inputs": [long_text], "prompt_name": "passage", "truncate": True, "truncation_direction": "Left"}
    for url in run_server(ServeSettings(model=str(prompted_model), **{**LIMITS, "max_chars": 4000}), engine):
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post("/embed", json=body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["embeddings"][0], expected, atol=1e-5)


@pytest.fixture(scope="module")
def prompt_excluding_models(prompted_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The prompted model with a Pooling that leaves the prompt out (include_prompt=False, as INSTRUCTOR
    models set it), as a torch model and as its int8 ONNX artifact."""
    from embedops.quantize.config import QuantizeConfig
    from embedops.quantize.pipeline import quantize

    torch_model = tmp_path_factory.mktemp("excluding") / "excluding-model"
    shutil.copytree(prompted_model, torch_model)
    pooling = torch_model / json.loads((torch_model / "modules.json").read_text())[1]["path"] / "config.json"
    pooling.write_text(json.dumps(json.loads(pooling.read_text()) | {"include_prompt": False}))
    artifact = tmp_path_factory.mktemp("excluding-onnx") / "excluding-int8"
    quantize(QuantizeConfig(model_path=str(torch_model), output=str(artifact), dtype="int8", check_samples=8))
    return {"torch": torch_model, "onnx": artifact}


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_a_pooling_that_leaves_the_prompt_out_pools_the_text_alone(
    kind: str, prompt_excluding_models: dict[str, Path], tmp_path: Path
) -> None:
    """Served, embedded and batched next to unprompted rows, a named prompt conditions the text's tokens
    but is not averaged in, as sentence-transformers' encode does for such a model."""
    path = prompt_excluding_models[kind]
    model = load(resolve(path), device="cpu")
    named = model.encode(TEXTS, prompt_name="passage")
    plain = model.encode(TEXTS, prompt="")
    model[1].include_prompt = True
    prompt_pooled = model.encode(TEXTS, prompt_name="passage")
    assert not np.allclose(named, prompt_pooled, atol=1e-3), "leaving the prompt out changes the vectors"

    engine = Engine(resolve(path), device="cpu")
    assert not engine.pools_prompt
    assert engine.info.forward == ("onnxruntime+numpy" if kind == "onnx" else "sentence-transformers")
    prompted = engine.tokenize(TEXTS, truncate=True, prompt="passage: ")
    unprompted = engine.tokenize(TEXTS, truncate=True)
    skip = engine.prompt_tokens("passage: ")
    assert skip == len(engine.tokenizer.prefix) + len(engine.tokenizer.content_ids(["passage: "])[0])
    mixed = engine.embed([prompted[0], unprompted[1], prompted[1]], prompt_tokens=[skip, 0, skip])
    np.testing.assert_allclose(mixed, [named[0], plain[1], named[1]], atol=1e-5)

    for url in run_server(ServeSettings(model=str(path), **LIMITS), engine):
        with httpx.Client(base_url=url, timeout=30) as client:
            served = client.post("/embed", json={"inputs": TEXTS, "prompt_name": "passage"}).json()["embeddings"]
    np.testing.assert_allclose(served, named, atol=1e-5)

    np.testing.assert_allclose(embedded_with_passage_prompt(path, tmp_path), named, atol=1e-5)


def test_a_byte_level_prompt_ending_in_a_space_leaves_the_text_s_first_token_pooled(tmp_path: Path) -> None:
    """sentence-transformers strips a prompt before counting its tokens: with a byte-level BPE tokenizer
    "query: " alone ends in a lone space token that "query: text" does not have, so counting it would
    leave the text's first token out of pooling."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [f"query: {text}" for text in TEXTS] * 4, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"]
    )
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    hf_dir = tmp_path / "bpe-hf"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=fast.pad_token_id,
    )
    BertModel(config).save_pretrained(hf_dir)
    fast.save_pretrained(hf_dir)
    pooling = Pooling(32, "mean", include_prompt=False)
    model = SentenceTransformer(
        modules=[Transformer(str(hf_dir), max_seq_length=32), pooling], device="cpu", prompts={"query": "query: "}
    )
    model.save(str(tmp_path / "bpe"))

    engine = Engine(resolve(tmp_path / "bpe"), device="cpu")
    alone = engine.tokenizer.content_ids(["query: "])[0]
    joined = engine.tokenizer.content_ids(["query: " + TEXTS[0]])[0]
    assert joined[: len(alone)] != alone, "the prompt's last token merges with the text's first"
    assert engine.prompt_tokens("query: ") == model._get_prompt_length("query: ")
    served = engine.embed(
        engine.tokenize(TEXTS, truncate=True, prompt="query: "), prompt_tokens=engine.prompt_tokens("query: ")
    )
    np.testing.assert_allclose(served, model.encode(TEXTS, prompt_name="query"), atol=1e-5)

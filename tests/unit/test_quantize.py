"""`embedops quantize` on a tiny real model: ONNX int8/int4 and fp16 artifacts that load through
embedops.models.load, the drift gate, LoRA merging, and every bad-input case (exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import Manifest, read_manifest
from embedops.cli import main
from embedops.models import load, resolve
from embedops.quantize.kernels import cpu_class
from embedops.serve.engine import Engine

SENTENCES = ["the cat sat on the mat", "stock markets fell sharply", "how do I reset my password?"]


@pytest.fixture(scope="module")
def int8_artifact(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("q") / "tiny-int8"
    assert main(["quantize", "--model-path", str(tiny_model_dir), "--output", str(output), "--dtype", "int8"]) == 0
    return output


def staging_left(output: Path) -> list[Path]:
    return list(output.parent.glob(f".{output.name}.*"))


def test_int8_artifact_is_onnx_only_and_described(int8_artifact: Path, tiny_model_dir: Path) -> None:
    manifest = read_manifest(int8_artifact)
    assert manifest.kind == "quantized" and manifest.backend == "onnx" and manifest.dtype == "int8"
    assert manifest.file.startswith("onnx/model_qint8_") and (int8_artifact / manifest.file).is_file()
    assert manifest.parent == str(tiny_model_dir) and manifest.normalize and manifest.dim == 32
    quantization = manifest.quantization
    assert quantization["method"] == "onnx-rowwise-int8" and quantization["source"] == str(tiny_model_dir)
    assert (
        manifest.file == f"onnx/model_qint8_rowwise_{quantization['kernel']}.onnx"
        and quantization["batch_invariant"] is True
    )
    assert quantization["cpu"]["class"] == cpu_class() and quantization["embeddings"]["tables"] == 3
    assert {"mean_cosine", "p5_cosine", "min_cosine", "top10_overlap", "drift"} <= set(quantization["drift"])
    assert not list(int8_artifact.glob("*.safetensors"))  # no torch weights riding along
    assert [p.name for p in (int8_artifact / "onnx").iterdir()] == [Path(manifest.file).name]


def test_int8_artifact_encodes_like_its_source(int8_artifact: Path, tiny_model_dir: Path) -> None:
    quantized, source = load(int8_artifact), load(tiny_model_dir)
    ours = quantized.encode(SENTENCES, normalize_embeddings=True)
    theirs = source.encode(SENTENCES, normalize_embeddings=True)
    assert ours.shape == (3, 32)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-4)  # Normalize module kept
    assert (ours * theirs).sum(1).min() > 0.9
    assert quantized.max_seq_length == source.max_seq_length == 64


VARIED = [
    "a",
    "the cat sat on the mat",
    "stock markets fell sharply after the announcement of new tariffs on imported steel and aluminium",
    "how do I reset my password?",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
    "short",
    "a sentence of middling length about nothing much",
    "why is the sky blue during the day and red at sunset",
]


def lowest_batch_cosine(embed, texts: list[str], rounds: int = 6) -> float:
    """Lowest cosine between each text's vector alone and its vector inside shuffled batches of all texts."""
    alone = np.concatenate([embed([text]) for text in texts])
    rng = np.random.default_rng(0)
    lowest = 1.0
    for _ in range(rounds):
        order = rng.permutation(len(texts))
        batched = embed([texts[i] for i in order])
        lowest = min(lowest, float((batched * alone[order]).sum(axis=1).min()))
    return lowest


def test_int8_gives_a_text_the_same_vector_in_any_batch(int8_artifact: Path) -> None:
    """Activations are scaled per row, never per batch: padding and neighbours leave a vector as it is,
    in the server's engine and through sentence-transformers alike."""
    engine = Engine(resolve(str(int8_artifact)))
    assert engine.info.batch_invariant
    assert lowest_batch_cosine(lambda texts: engine.embed(engine.tokenize(texts, truncate=True)), VARIED) > 0.99999
    model = load(int8_artifact)
    assert lowest_batch_cosine(lambda texts: model.encode(texts, normalize_embeddings=True), VARIED) > 0.99999


def test_dynamic_int8_is_kept_as_an_option(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "dynamic"
    argv = ["quantize", "--model-path", str(tiny_model_dir), "--output", str(output), "--int8-scheme", "dynamic"]
    assert main([*argv, "--target-cpu", "avx2", "--check-samples", "8"]) == 0
    manifest = read_manifest(output)
    assert manifest.file == "onnx/model_qint8_avx2.onnx"
    assert manifest.quantization["method"] == "onnx-dynamic-int8" and manifest.quantization["batch_invariant"] is False
    assert not Engine(resolve(str(output))).info.batch_invariant


def test_int8_artifact_loads_as_a_plain_onnx_session(int8_artifact: Path) -> None:
    import onnxruntime as ort

    manifest = read_manifest(int8_artifact)
    session = ort.InferenceSession(str(int8_artifact / manifest.file), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"input_ids", "attention_mask", "token_type_ids"}
    assert session.get_outputs()[0].name == "last_hidden_state"


def test_int4_is_smaller_than_int8(int8_artifact: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx_ir", reason="ONNX Runtime's 4-bit quantizer needs onnx-ir")
    output = tmp_path / "tiny-int4"
    code = main(
        [
            "quantize",
            "--model-path",
            str(tiny_model_dir),
            "--output",
            str(output),
            "--dtype",
            "int4",
            "--block-size",
            "16",
        ]
    )
    assert code == 0
    manifest = read_manifest(output)
    quantization = manifest.quantization
    assert manifest.dtype == "int4" and quantization["method"] == "onnx-weight-only-int4-embeddings-int8-matmuls"
    assert quantization["embeddings"] == {
        "op": "GatherBlockQuantized",
        "bits": 4,
        "block_size": 16,
        "symmetric": True,
    }
    assert quantization["matmuls"]["bits"] == 8 and quantization["matmuls"]["block_size"] == 32  # hidden size 32
    int8_file = int8_artifact / read_manifest(int8_artifact).file
    assert (output / manifest.file).stat().st_size < int8_file.stat().st_size
    assert_int4_graph(output / manifest.file, embedding_block=16, matmul_block=32)
    quantized = load(output).encode(SENTENCES, normalize_embeddings=True)
    source = load(tiny_model_dir).encode(SENTENCES, normalize_embeddings=True)
    assert quantized.shape == (3, 32) and (quantized * source).sum(1).min() > 0.9


def assert_int4_graph(path: Path, *, embedding_block: int, matmul_block: int) -> None:
    """4-bit embedding tables, 8-bit MatMul weights, and no full-precision weight matrix left behind."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {initializer.name for initializer in graph.initializer}

    def attributes(op_type: str) -> list[dict]:
        return [
            {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for node in graph.node
            if node.op_type == op_type
        ]

    gathers, matmuls = attributes("GatherBlockQuantized"), attributes("MatMulNBits")
    assert gathers and all(a["block_size"] == embedding_block and a.get("bits", 4) == 4 for a in gathers)
    assert matmuls and all(a["bits"] == 8 and a["block_size"] == matmul_block for a in matmuls)
    assert not [node for node in graph.node if node.op_type == "Gather" and node.input[0] in weights]
    assert not [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


@pytest.mark.parametrize(
    ("depths", "wanted", "block"),
    [((384, 1536), 128, 128), ((384, 1536), 64, 64), ((32, 64), 128, 32), ((48,), 64, 32), ((8,), 128, 16)],
)
def test_matmul_block_fits_the_shortest_weight(depths: tuple[int, ...], wanted: int, block: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    from embedops.quantize.onnx_int import _matmul_block

    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]) for i in range(len(depths))]
    weights = [helper.make_tensor(f"w{i}", TensorProto.FLOAT, [k, 4], [0.0] * 4 * k) for i, k in enumerate(depths)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])], [], weights)
    assert _matmul_block(onnx.helper.make_model(graph), wanted) == block


def test_fp16_keeps_torch_weights_in_half_precision(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    output = tmp_path / "tiny-fp16"
    assert main(["quantize", "--model-path", str(tiny_model_dir), "--output", str(output), "--dtype", "fp16"]) == 0
    manifest = read_manifest(output)
    assert manifest.backend == "torch" and manifest.dtype == "fp16" and manifest.file is None
    with safe_open(str(output / "model.safetensors"), "pt") as weights:
        assert {str(weights.get_tensor(name).dtype) for name in weights.keys()} == {"torch.float16"}  # noqa: SIM118
    assert manifest.quantization["drift"]["mean_cosine"] > 0.99


def test_drift_gate_fails_and_publishes_nothing(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "gated"
    code = main(
        [
            "quantize",
            "--model-path",
            str(tiny_model_dir),
            "--output",
            str(output),
            "--dtype",
            "int8",
            "--max-drift",
            "0",
        ]
    )
    assert code == 1
    assert "FAILED" in capsys.readouterr().err
    assert not output.exists() and not staging_left(output)


def test_drift_gate_passes_within_limit(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "gated-ok"
    code = main(
        [
            "quantize",
            "--model-path",
            str(tiny_model_dir),
            "--output",
            str(output),
            "--dtype",
            "fp16",
            "--max-drift",
            "0.02",
            "--json",
        ]
    )
    assert code == 0 and read_manifest(output).quantization["drift"]["drift"] <= 0.02


def test_check_data_is_the_drift_sample(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"text_a": f"question {i}", "text_b": f"answer {i}"}) + "\n" for i in range(8)),
        encoding="utf-8",
    )
    output = tmp_path / "checked"
    assert (
        main(
            [
                "quantize",
                "--model-path",
                str(tiny_model_dir),
                "--output",
                str(output),
                "--dtype",
                "bf16",
                "--check-data",
                str(pairs),
            ]
        )
        == 0
    )
    drift = read_manifest(output).quantization["drift"]
    assert drift["samples"] == 16 and drift["source"] == str(pairs)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model-path", "{tmp}/missing"], "does not exist"),
        (["--model-path", "{tmp}/not-a-model"], "not a model directory"),
        (["--model-path", "{tiny}", "--dtype", "fp16", "--backend", "onnx"], "--backend torch"),
        (["--model-path", "{tiny}", "--dtype", "int8", "--backend", "torch"], "--backend onnx"),
        (["--model-path", "{tiny}", "--backend", "bnb"], "--backend onnx"),
        (["--model-path", "{tiny}", "--check-data", "{tmp}/absent.tsv"], "no such file"),
        (["--model-path", "{tiny}", "--output", "{tmp}/taken"], "already exists"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    flags: list[str], message: str, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("hello")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    args = [f.format(tmp=tmp_path, tiny=tiny_model_dir) for f in flags]
    output = args[args.index("--output") + 1] if "--output" in args else str(tmp_path / "out")
    if "--output" not in args:
        args += ["--output", output]
    if "bnb" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA; the no-CUDA error path cannot be shown")
    assert main(["quantize", *args]) == 2
    assert message in capsys.readouterr().err
    assert not Path(output).exists() or (Path(output) / "keep.txt").read_text() == "mine"
    assert not staging_left(Path(output))


def test_quantized_artifact_is_not_quantized_again(int8_artifact: Path, tmp_path: Path, capsys) -> None:
    assert main(["quantize", "--model-path", str(int8_artifact), "--output", str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err


def test_lora_adapter_is_merged_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from peft import LoraConfig, TaskType

    from embedops.artifact import ArtifactBuilder

    adapter_dir = tmp_path / "adapter"
    model = load(tiny_model_dir)
    model.add_adapter(
        LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            r=4,
            lora_alpha=32,
            target_modules=["query", "value"],
            init_lora_weights=False,
        )
    )
    with ArtifactBuilder(adapter_dir) as builder:
        model.save(str(builder.path), create_model_card=False)
        builder.publish(
            Manifest(
                kind="finetuned",
                base_model=str(tiny_model_dir),
                dim=32,
                max_seq_length=64,
                pooling="mean",
                normalize=True,
                adapter={"type": "lora", "r": 4, "merged": False, "base": str(tiny_model_dir)},
            )
        )
    output = tmp_path / "adapter-int8"
    assert main(["quantize", "--model-path", str(adapter_dir), "--output", str(output)]) == 0
    assert read_manifest(output).adapter["merged"] is True
    quantized = load(output).encode(SENTENCES, normalize_embeddings=True)
    tuned = load(adapter_dir).encode(SENTENCES, normalize_embeddings=True)
    base = load(tiny_model_dir).encode(SENTENCES, normalize_embeddings=True)
    assert (quantized * tuned).sum(1).mean() > (quantized * base).sum(1).mean()


@pytest.mark.slow
def test_killed_quantization_leaves_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedops",
            "quantize",
            "--model-path",
            str(tiny_model_dir),
            "--output",
            str(output),
            "--dtype",
            "int8",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while not staging_left(output) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "quantization ended before it could be killed mid-way"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not output.exists()
    # The next run for the same target removes the dead process's staging directory and succeeds.
    assert main(["quantize", "--model-path", str(tiny_model_dir), "--output", str(output), "--dtype", "fp16"]) == 0
    assert not staging_left(output)

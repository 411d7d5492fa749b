"""`embedops embed` with the tiny model: every input format, bad input located, vectors equal to the
server's /embed over real HTTP, stored dtypes, and a kill -9 mid-run resumed to the same result."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedops.embed.job import EmbedConfig, run_embed
from embedops.embed.manifest import read_embed_manifest
from embedops.embed.shards import read_vectors
from embedops.embed.sources import open_source
from embedops.errors import ConfigError, DataError, OutputExistsError

EMBEDOPS = [sys.executable, "-m", "embedops"]
PASSAGES = [
    ("d1", "The cat sat on the mat."),
    ("d2", "Sea levels rise as glaciers melt."),
    ("d3", "Python is a programming language with dynamic types."),
    ("d4", "A very long passage " + "about many things " * 40),
    ("d5", "Short."),
]


def write_tsv(path: Path, rows: list[tuple[str, str]], header: bool = True) -> Path:
    lines = (["id\ttext"] if header else []) + [f"{ident}\t{text}" for ident, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def embed(
    tmp_path: Path, model: Path, source: Path, name: str = "out", **options: object
) -> tuple[list[str], np.ndarray]:
    output = tmp_path / name
    run_embed(EmbedConfig(input=str(source), output=str(output), model=str(model), **options))  # type: ignore[arg-type]
    manifest = read_embed_manifest(output)
    assert manifest is not None and manifest.complete
    return read_vectors([output / entry["file"] for entry in manifest.shards])


def test_every_format_reads_the_same_ids_and_texts(tmp_path: Path) -> None:
    expected = [("d1", "A title first text"), ("7", "second, with a comma\nand a newline")]
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "A title", "text": "first text"}\n'
        '{"_id": 7, "title": "", "text": "second, with a comma\\nand a newline"}\n'
    )
    custom = tmp_path / "custom.jsonl"
    custom.write_text(
        '{"doc": "d1", "body": "A title first text"}\n\n{"doc": 7, "body": "second, with a comma\\nand a newline"}\n'
    )
    csv = tmp_path / "c.csv"
    csv.write_text('id,text\nd1,A title first text\n7,"second, with a comma\nand a newline"\n')
    parquet = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"id": ["d1", "7"], "title": ["A title", None], "text": ["first text", expected[1][1]]}), parquet
    )
    text_file = tmp_path / "t.txt"
    text_file.write_text("first\n\nthird\n")
    tsv = write_tsv(tmp_path / "plain.tsv", [("a", "x"), ("b", "y")], header=False)

    def read(path: Path, **fields: str) -> list[tuple[str, str]]:
        return [(p.id, p.text) for p in open_source(path, **fields)]

    assert read(beir) == expected
    assert read(custom, id_field="doc", text_field="body") == expected
    assert read(csv) == expected
    assert read(parquet) == expected
    assert read(parquet, title_field="") == [("d1", "first text"), expected[1]]
    assert read(text_file) == [("1", "first"), ("3", "third")]
    assert read(tsv) == [("a", "x"), ("b", "y")]


def test_a_shard_read_from_its_first_line_equals_that_part_of_a_whole_read(tmp_path: Path) -> None:
    rows = [(f"d{i}", f"text {i}" + (", with\na newline" if i % 3 == 0 else "")) for i in range(10)]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"_id": ident, "text": text}) + "\n\n" for ident, text in rows))
    csv = tmp_path / "c.csv"
    csv.write_text("id,text\n" + "".join(f'{ident},"{text}"\n' for ident, text in rows))
    tsv = write_tsv(tmp_path / "c.tsv", [(ident, text.replace("\n", " ")) for ident, text in rows])
    text_file = tmp_path / "c.txt"
    text_file.write_text("".join(text.replace("\n", " ") + "\n\n" for _, text in rows))
    parts = tmp_path / "parts"
    parts.mkdir()
    for number, block in enumerate((rows[:4], rows[4:])):
        table = pa.table({"id": [ident for ident, _ in block], "text": [text for _, text in block]})
        pq.write_table(table, parts / f"{number}.parquet")
    for path in (jsonl, csv, tsv, text_file, parts):
        source = open_source(path)
        whole = list(source)
        assert len(whole) == 10, path
        for start in (0, 3, 4, 9):
            assert list(source.read(whole[start].line)) == whole[start:], (path, start)


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2, "invalid JSON"),
        ('{"_id": "a", "text": "x"}\n{"text": "y"}\n', 2, "'_id'"),
        ('{"_id": "a", "body": "x"}\n', 1, "--text-field"),
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n', 3, "'a' appears more"),
        ("\n\n", 1, "no passages"),
    ],
)
def test_bad_corpus_is_reported_at_its_line_before_any_work(
    tmp_path: Path, tiny_model_dir: Path, content: str, line: int, words: str
) -> None:
    source = tmp_path / "corpus.jsonl"
    source.write_text(content)
    with pytest.raises(DataError) as error:
        run_embed(EmbedConfig(input=str(source), output=str(tmp_path / "out"), model=str(tiny_model_dir)))
    assert (error.value.path, error.value.line) == (str(source), line)
    assert words in str(error.value)
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", PASSAGES)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    cases = [  # both are refused before the model is loaded
        (["--input", str(tmp_path / "nosuch.tsv"), "--output", str(tmp_path / "o")], "no such file"),
        (["--input", str(corpus), "--output", str(taken)], "not an embedding output"),
    ]
    for arguments, words in cases:
        result = subprocess.run(
            [*EMBEDOPS, "embed", "--model", str(tiny_model_dir), *arguments], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and words in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    for options, words in [
        ({"dimensions": 999}, "at most the model's 32"),
        ({"prompt_name": "nosuch"}, "is not one of the model's prompts"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            run_embed(EmbedConfig(input=str(corpus), output=str(tmp_path / "o"), model=str(tiny_model_dir), **options))
        assert not (tmp_path / "o").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_vectors_equal_the_servers_embed_over_http(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", PASSAGES)
    port = free_port()
    server = subprocess.Popen(
        [*EMBEDOPS, "serve", "--model", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        plain_ids, plain = embed(tmp_path, tiny_model_dir, corpus, "plain", shard_size=2)
        cut_ids, cut = embed(tmp_path, tiny_model_dir, corpus, "cut", dimensions=8, normalize=True, max_seq_length=16)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.2)
        texts = [text for _, text in PASSAGES]
        served = httpx.post(f"{url}/embed", json={"inputs": texts}, timeout=60).json()["embeddings"]
        # The server's window is the model's; --max-seq-length 16 is matched by sending the first 16 tokens' worth.
        served_cut = httpx.post(
            f"{url}/embed", json={"inputs": texts, "dimensions": 8, "normalize": True}, timeout=60
        ).json()["embeddings"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert plain_ids == cut_ids == [ident for ident, _ in PASSAGES]
    np.testing.assert_allclose(plain, np.array(served), atol=1e-5)
    np.testing.assert_allclose(cut[[0, 1, 2, 4]], np.array(served_cut)[[0, 1, 2, 4]], atol=1e-5)
    # Only the one long passage is cut by the 16-token window, so only its vector differs.
    assert not np.allclose(cut[3], np.array(served_cut)[3], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)


def test_stored_dtypes_keep_the_vectors(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", PASSAGES)
    _, full = embed(tmp_path, tiny_model_dir, corpus, "f32")
    _, half = embed(tmp_path, tiny_model_dir, corpus, "f16", dtype="float16")
    _, bits = embed(tmp_path, tiny_model_dir, corpus, "bin", dtype="binary")
    _, small = embed(tmp_path, tiny_model_dir, corpus, "i8", dtype="int8", shard_size=2)
    assert half.dtype == np.float16 and np.allclose(half, full, atol=1e-3)
    assert bits.dtype == np.uint8 and bits.shape == (5, 4)
    np.testing.assert_array_equal(np.unpackbits(bits, axis=1).astype(bool), full > 0)
    manifest = read_embed_manifest(tmp_path / "i8")
    assert manifest is not None and manifest.int8_ranges is not None
    low, high = np.array(manifest.int8_ranges["low"]), np.array(manifest.int8_ranges["high"])
    # Ranges come from the first shard; every shard is quantized with them, later ones clipped.
    np.testing.assert_allclose(low, full[:2].min(axis=0), atol=1e-6)
    restored = (small.astype(np.float32) + 128) * (high - low) / 255 + low
    inside = (full >= low) & (full <= high)
    assert np.abs(restored - full)[inside].max() <= (high - low).max() / 255
    assert small.dtype == np.int8


def test_changed_plan_is_refused_and_force_starts_over(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", PASSAGES)
    embed(tmp_path, tiny_model_dir, corpus, shard_size=2)
    again = run_embed(
        EmbedConfig(input=str(corpus), output=str(tmp_path / "out"), model=str(tiny_model_dir), shard_size=2)
    )
    assert again.already_complete and again.embedded == 0
    with pytest.raises(OutputExistsError, match="another options"):
        run_embed(EmbedConfig(input=str(corpus), output=str(tmp_path / "out"), model=str(tiny_model_dir)))
    write_tsv(corpus, PASSAGES[:3])
    with pytest.raises(OutputExistsError, match="another input"):
        run_embed(EmbedConfig(input=str(corpus), output=str(tmp_path / "out"), model=str(tiny_model_dir), shard_size=2))
    forced = run_embed(
        EmbedConfig(
            input=str(corpus), output=str(tmp_path / "out"), model=str(tiny_model_dir), shard_size=2, force=True
        )
    )
    assert (forced.count, forced.shards, forced.embedded) == (3, 2, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "embed.json",
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    with pytest.raises(ConfigError, match="--dtype"):
        run_embed(EmbedConfig(input=str(corpus), output=str(tmp_path / "x"), model=str(tiny_model_dir), dtype="int4"))


def test_a_damaged_shard_is_embedded_again_on_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", PASSAGES)
    _, before = embed(tmp_path, tiny_model_dir, corpus, shard_size=2)
    shard = tmp_path / "out" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-20] + b"\0" * 20)
    result = run_embed(
        EmbedConfig(input=str(corpus), output=str(tmp_path / "out"), model=str(tiny_model_dir), shard_size=2)
    )
    assert (result.resumed_shards, result.embedded) == (2, 2)
    _, after = read_vectors(sorted((tmp_path / "out").glob("part-*.parquet")))
    np.testing.assert_array_equal(after, before)


@pytest.mark.slow
def test_kill_minus_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [(f"p{i}", f"passage number {i} about topic {i % 97} and more words {i * 7}") for i in range(6000)]
    corpus = write_tsv(tmp_path / "big.tsv", rows)
    ids_whole, whole = embed(tmp_path, tiny_model_dir, corpus, "whole", shard_size=200)
    output = tmp_path / "killed"
    command = [*EMBEDOPS, "embed", "--model", str(tiny_model_dir), "--input", str(corpus), "--shard-size", "200"]
    process = subprocess.Popen(
        [*command, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (output / "part-00004.parquet").exists():
        assert time.monotonic() < deadline and process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = read_embed_manifest(output)
    assert killed is not None and not killed.complete
    written = len(list(output.glob("part-*.parquet")))
    assert 5 <= written < 30
    resumed = run_embed(EmbedConfig(input=str(corpus), output=str(output), model=str(tiny_model_dir), shard_size=200))
    assert resumed.resumed_shards == written and resumed.embedded == 6000 - 200 * written
    assert not list(output.glob(".*.tmp"))
    ids_resumed, resumed_vectors = read_vectors(sorted(output.glob("part-*.parquet")))
    assert ids_resumed == ids_whole == [ident for ident, _ in rows]
    np.testing.assert_array_equal(resumed_vectors, whole)


def test_batches_in_lanes_keep_every_vector_in_its_row(onnx_artifact: Path) -> None:
    """Two lanes run batches at once and finish out of order; each vector still lands in its passage's
    row, equal to that passage embedded alone (the int8 graph is batch-invariant)."""
    from embedops.embed.encoder import EncodeOptions, PassageEncoder
    from embedops.models import resolve
    from embedops.serve.engine import Engine
    from embedops.serve.lanes import batch_job_lanes

    texts = [f"passage {index} " + "about the sea and the ice " * (index % 7) for index in range(60)]
    engine = Engine(resolve(onnx_artifact), device="cpu", lanes=batch_job_lanes(2))
    assert engine.concurrent_batches == 2
    seen: list[int] = []
    vectors = PassageEncoder(engine, EncodeOptions(batch_size=4)).encode(texts, seen.append)
    assert sum(seen) == len(texts) and len(seen) == 15
    alone = np.concatenate([engine.embed(engine.tokenize([text], truncate=True)) for text in texts])
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


def test_a_failed_batch_stops_the_lanes_and_reaches_the_caller(onnx_artifact: Path) -> None:
    from embedops.embed.encoder import EncodeOptions, PassageEncoder
    from embedops.errors import ArtifactError
    from embedops.models import resolve
    from embedops.serve.engine import Engine
    from embedops.serve.lanes import batch_job_lanes

    calls = itertools.count()  # next() is atomic: the lanes call it from two threads

    class Failing(Engine):
        def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
            vectors = super().embed(batch, **options)
            return vectors[:, :3] if next(calls) == 3 else vectors  # the third batch comes back too narrow

    engine = Failing(resolve(onnx_artifact), device="cpu", lanes=batch_job_lanes(2))  # loading was call 0
    with pytest.raises(ArtifactError, match="shape"):
        PassageEncoder(engine, EncodeOptions(batch_size=1)).encode([f"text {index}" for index in range(200)])
    assert next(calls) < 100, "the batches after the failed one were cancelled"

"""Fault injection, as a hostile or unlucky user meets embedops: models that carry code or lie about
their width, hand-edited manifests, kills while a checkpoint is written, a changed recipe on resume,
a full or read-only disk, a closed pipe, and data files that are huge, multi-line or not files."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import MANIFEST_NAME, ArtifactBuilder, Manifest, read_manifest, write_manifest
from embedops.cli import main
from embedops.data import PairReader
from embedops.errors import ArtifactError, DataError, RequestError
from embedops.models import load, resolve
from embedops.train.finetune import work_dir_for

EMBEDOPS = [sys.executable, "-m", "embedops"]


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def artifact_from(model_dir: Path, target: Path, **fields: object) -> Path:
    """A published artifact holding `model_dir`'s files, with manifest fields as given."""
    with ArtifactBuilder(target) as builder:
        shutil.copytree(model_dir, builder.path, dirs_exist_ok=True)
        return builder.publish(Manifest(kind="finetuned", base_model="tiny", **fields))  # type: ignore[arg-type]


def edit_manifest(path: Path, *, resign: bool = False, **changes: object) -> None:
    """Edit embedops.json by hand; `resign` also renews its digest, as someone who read our code might."""
    data = json.loads((path / MANIFEST_NAME).read_text())
    data.update(changes)
    if resign:
        manifest = Manifest.from_dict({k: v for k, v in data.items() if k != "digest"})
        write_manifest(path, manifest)
    else:
        (path / MANIFEST_NAME).write_text(json.dumps(data))


# 1. Code shipped with a model


def crafted_model(tiny_model_dir: Path, target: Path, marker: Path) -> Path:
    """The tiny model with a module of its own: importing pwn.py writes `marker`."""
    path = copy_model(tiny_model_dir, target)
    (path / "pwn.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from sentence_transformers.models import Normalize as Pwn\n"
    )
    modules = json.loads((path / "modules.json").read_text())
    modules[-1]["type"] = "pwn.Pwn"
    (path / "modules.json").write_text(json.dumps(modules))
    return path


def test_a_module_of_the_models_own_is_refused_unless_trusted(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    marker = tmp_path / "marker"
    model = crafted_model(tiny_model_dir, tmp_path / "crafted", marker)
    with pytest.raises(ArtifactError, match=r"'pwn\.Pwn'.*--trust-remote-code"):
        resolve(model)
    for command in (
        ["eval", "--model", str(model), "--data", str(write_pairs(tmp_path / "pairs.tsv", 4))],
        ["quantize", "--model-path", str(model), "--output", str(tmp_path / "q")],
        ["serve", "--model", str(model), "--port", "1"],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "pwn.Pwn" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert main(["info", str(model)]) == 0
    assert "loading it needs --trust-remote-code" in capsys.readouterr().out
    assert not marker.exists(), "no command may import the model's module without --trust-remote-code"
    assert "EMBEDOPS_TRUST_REMOTE_CODE" not in os.environ

    load(resolve(model, trust_remote_code=True), device="cpu")
    assert marker.read_text() == "ran", "--trust-remote-code loads the model's own module"


def test_a_hub_snapshot_with_its_own_module_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Hub snapshots are local directories too: the same check holds for a real offline HF cache."""
    from test_models import hf_cache_with, run_offline

    marker = tmp_path / "marker"
    hf_cache_with(tmp_path / "home", "someone/crafted", crafted_model(tiny_model_dir, tmp_path / "crafted", marker))
    quantize = ["quantize", "--model-path", "someone/crafted", "--output", str(tmp_path / "q")]
    code = (
        "from embedops.cli import main\n"
        f"raise SystemExit(main(['info', 'someone/crafted', '--json']) or main({quantize!r}))\n"
    )
    result = run_offline(code, tmp_path / "home")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "'pwn.Pwn'" in result.stderr and "--trust-remote-code" in result.stderr
    assert '"remote_code"' in result.stdout and not marker.exists()


def test_auto_map_to_custom_classes_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "auto-map")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Evil"}}))
    with pytest.raises(ArtifactError, match="auto_map"):
        resolve(model)
    assert resolve(model, trust_remote_code=True).trust_remote_code


def test_the_onnx_path_shares_the_module_check(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "onnx", backend="onnx", file="model.safetensors", dim=32)
    modules = json.loads((model / "modules.json").read_text())
    modules[-1]["type"] = "os.system"
    (model / "modules.json").write_text(json.dumps(modules))
    edit_manifest(model, resign=True, files_sha256=_rehash(model))
    with pytest.raises(ArtifactError, match=r"'os\.system'"):
        resolve(model)


def _rehash(path: Path) -> dict[str, str]:
    from embedops.artifact import hash_files

    return hash_files(path)


# 2. A model whose width is not the recorded one


def dense_model(tiny_model_dir: Path, target: Path) -> Path:
    """The tiny model with a Dense(32 -> 8) projection after pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    modules = [*list(model)[:2], Dense(32, 8), list(model)[2]]
    SentenceTransformer(modules=modules, device="cpu").save(str(target))
    return target


def test_a_dense_models_width_is_measured_and_a_wrong_record_refused(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    from embedops.serve.engine import Engine

    plain = dense_model(tiny_model_dir, tmp_path / "dense")
    assert main(["info", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dim"] == 8
    assert Engine(resolve(plain), device="cpu").info.dim == 8

    unrecorded = artifact_from(plain, tmp_path / "unrecorded")
    assert Engine(resolve(unrecorded), device="cpu").info.dim == 8, "no recorded dim: the measured one is served"
    lying = artifact_from(plain, tmp_path / "lying", dim=32)
    with pytest.raises(ArtifactError, match="produces 8-dimensional vectors but its manifest records dim 32"):
        Engine(resolve(lying), device="cpu")


def test_an_edited_dim_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    edit_manifest(model, dim=-5)
    with pytest.raises(ArtifactError, match="dim must be a positive integer"):
        resolve(model)
    edit_manifest(model, dim="384")
    with pytest.raises(ArtifactError, match="dim must be int or null, not str"):
        resolve(model)


def test_a_failing_delivery_answers_with_json_500_and_the_server_carries_on(tiny_model_dir: Path) -> None:
    """An engine whose output has the wrong width for one batch: that request gets a JSON 500 at once,
    the next one is answered, and the server stays ready."""
    import httpx
    from test_serve_app import run_server

    from embedops.serve.engine import Engine
    from embedops.serve.settings import ServeSettings

    class NarrowOnce(Engine):
        failures = 1

        def embed(self, batch: list[list[int]]) -> np.ndarray:
            output = super().embed(batch)
            if NarrowOnce.failures and len(batch) == 3:
                NarrowOnce.failures -= 1
                return output[:, :5]
            return output

    servers = run_server(ServeSettings(), NarrowOnce(resolve(tiny_model_dir), device="cpu"))
    url = next(servers)
    try:
        failed = httpx.post(f"{url}/embed", json={"inputs": ["a", "b", "c"]}, timeout=10)
        assert failed.status_code == 500 and failed.headers["content-type"].startswith("application/json")
        assert "shape (3, 5)" in json.dumps(failed.json())
        again = httpx.post(f"{url}/embed", json={"inputs": ["a", "b", "c"]}, timeout=10)
        assert again.status_code == 200 and np.array(again.json()["embeddings"]).shape == (3, 32)
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        next(servers, None)


def test_delivery_that_raises_still_resolves_every_future(tiny_model_dir: Path) -> None:
    import asyncio

    from embedops.serve.batcher import Batcher, _Item, _Job

    async def deliver() -> BaseException | None:
        loop = asyncio.get_running_loop()
        job = _Job(loop.create_future(), np.empty((1, 32), np.float32), 1)
        Batcher._deliver([_Item(job, 0, [1], 0)], np.zeros((1, 7), np.float32))  # a row of the wrong width
        return job.future.exception()

    failure = asyncio.run(deliver())
    assert isinstance(failure, RequestError) and failure.http_status == 500


def test_a_model_without_finite_vectors_never_turns_ready(tiny_model_dir: Path) -> None:
    import httpx
    from test_serve_app import run_server

    from embedops.serve.engine import Engine
    from embedops.serve.settings import ServeSettings

    class NotANumber(Engine):
        def embed(self, batch: list[list[int]]) -> np.ndarray:
            return np.full_like(super().embed(batch), np.nan)

    servers = run_server(ServeSettings(), NotANumber(resolve(tiny_model_dir), device="cpu"))
    url = next(servers)
    try:
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503 and "non-finite" in response.json()["error"]
    finally:
        next(servers, None)


# 3. Manifest edits


def test_hand_edits_of_the_manifest_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32, license="apache-2.0")
    edit_manifest(model, license="mit")
    with pytest.raises(ArtifactError, match="edited after publication"):
        resolve(model)
    edit_manifest(model, license="apache-2.0")
    resolve(model)  # the original content is accepted again
    edit_manifest(model, training={"epochs": 99})
    with pytest.raises(ArtifactError, match="edited after publication"):
        resolve(model)
    edit_manifest(model, training=None, digest=None)
    with pytest.raises(ArtifactError, match="has no digest"):
        resolve(model)


def test_renewing_the_digest_does_not_walk_around_the_file_checks(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    files = read_manifest(model).files_sha256
    weights = "model.safetensors"

    deleted = {k: v for k, v in files.items() if k != weights}
    edit_manifest(model, resign=True, files_sha256=deleted)
    with pytest.raises(ArtifactError, match=f"{weights} is not listed"):
        resolve(model)

    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not a graph")
    edit_manifest(model, resign=True, files_sha256=files, backend="onnx", file=str(outside))
    with pytest.raises(ArtifactError, match="is not one of the files listed"):
        resolve(model)

    traversal = {**files, "../../../etc/hostname": "0" * 64}
    edit_manifest(model, resign=True, files_sha256=traversal, backend="torch", file=None)
    with pytest.raises(ArtifactError, match="is not a plain path inside the artifact") as refused:
        resolve(model)
    assert "found" not in str(refused.value), "a name outside the artifact is never read or hashed"

    edit_manifest(model, resign=True, files_sha256={**files, "/etc/hostname": "0" * 64})
    with pytest.raises(ArtifactError, match="is not a relative path"):
        resolve(model)

    edit_manifest(model, resign=True, files_sha256=files)
    (model / "pwn.py").write_text("raise SystemExit")
    with pytest.raises(ArtifactError, match=r"pwn\.py is not listed"):
        resolve(model)
    (model / "pwn.py").unlink()
    os.symlink(tmp_path / "outside.onnx", model / "link.onnx")
    with pytest.raises(ArtifactError, match=r"link\.onnx is not listed"):
        resolve(model)


def test_files_sha256_as_a_list_is_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    edit_manifest(model, files_sha256=["model.safetensors"])
    assert main(["info", str(model)]) == 2
    assert "files_sha256 must be dict" in capsys.readouterr().err


def test_info_verify_lists_every_difference(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    assert main(["info", str(model), "--verify"]) == 0
    assert ": ok (" in capsys.readouterr().out

    (model / "extra.bin").write_bytes(b"x")
    with open(model / "model.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff")
    edit_manifest(model, license="edited")
    assert main(["info", str(model), "--verify", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 3
    assert any("edited after publication" in p for p in problems)
    assert any("model.safetensors does not match" in p for p in problems)
    assert any("extra.bin is not listed" in p for p in problems)


# 4, 5. Kills while a checkpoint is written; a changed recipe on resume


def finetune_command(data: Path, model: Path, out: Path, *, batch_size: int = 2) -> list[str]:
    return [
        *EMBEDOPS,
        "finetune",
        "--data",
        str(data),
        "--base-model",
        str(model),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        str(batch_size),
        "--save-every",
        "5",
        "--device",
        "cpu",
    ]


def write_pairs(path: Path, count: int) -> Path:
    path.write_text("".join(f"question number {i}\tanswer about topic {i}\n" for i in range(count)))
    return path


@pytest.mark.slow
def test_kill_while_checkpointing_resumes_from_the_last_whole_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    data, out = write_pairs(tmp_path / "pairs.tsv", 60), tmp_path / "ft"
    command = finetune_command(data, tiny_model_dir, out)
    checkpoints = work_dir_for(out) / "checkpoints"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(checkpoints.glob("checkpoint-*/trainer_state.json"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before its second checkpoint"
        time.sleep(0.02)
    time.sleep(random.uniform(0, 0.5))  # a random instant of the saves that follow
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    # Whatever instant the kill hit, leave the newest checkpoint as a kill mid-save does: the trainer
    # state cut short, the weights half written.
    newest = max(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    state = newest / "trainer_state.json"
    if state.is_file():
        state.write_text(state.read_text()[:40])
    weights = newest / "model.safetensors"
    if weights.is_file():
        os.truncate(weights, weights.stat().st_size // 2)
    whole = [p for p in checkpoints.glob("checkpoint-*") if p != newest]
    resumed_step = max(int(p.name.rsplit("-", 1)[1]) for p in whole)
    seconds_before = json.loads((work_dir_for(out) / "clock.json").read_text())["steps"][str(resumed_step)]

    changed_command = [*finetune_command(data, tiny_model_dir, out, batch_size=4), "--resume"]
    changed = subprocess.run(changed_command, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "different batch_size" in changed.stderr, changed.stderr[-500:]
    assert "Traceback" not in changed.stderr

    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping {newest.name}" in result.stderr
    training = read_manifest(out).training
    assert training["steps"] == 60 and training["segments"] == 2
    assert training["seconds"] > seconds_before > 0, "the first segment's training time is counted"
    assert not work_dir_for(out).exists()


def test_latest_complete_passes_over_every_partial_state(tmp_path: Path) -> None:
    from embedops.train.checkpoints import latest_complete

    def checkpoint(step: int, *files: str, state: str = "{}") -> Path:
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        for name in files:
            (path / name).write_bytes(b"x")
        if state is not None:
            (path / "trainer_state.json").write_text(state)
        return path

    whole = ("model.safetensors", "optimizer.pt", "scheduler.pt")
    good = checkpoint(5, *whole)
    checkpoint(10, "model.safetensors", "optimizer.pt")  # killed before the scheduler was saved
    checkpoint(15, *whole, state='{"global_st')  # killed while the trainer state was written
    checkpoint(20, "optimizer.pt", "scheduler.pt")  # weights missing
    assert latest_complete(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_the_run_clock_starts_from_the_seconds_behind_the_resumed_checkpoint(tmp_path: Path) -> None:
    from embedops.train.checkpoints import RunClock

    (tmp_path / "clock.json").write_text(json.dumps({"steps": {"10": 100.0, "20": 250.0}, "segments": 1}))
    clock = RunClock(tmp_path, tmp_path / "checkpoint-10")
    assert 100.0 <= clock.seconds < 110.0 and clock.segments == 2
    assert RunClock(tmp_path, None).seconds < 10.0, "a run started over counts from zero"


# 6. I/O failures: disk full, read-only output, a closed pipe


def run_limited(
    command: list[str], *, file_bytes: int | None = None, read_only: bool = False
) -> subprocess.CompletedProcess:
    """Run a command with files capped at `file_bytes` (a full disk, as writes see it) or without the
    privilege to write into read-only directories (root otherwise writes anywhere)."""

    def limit() -> None:
        if file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))

    if read_only and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limit)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(word in result.stderr for word in words), result.stderr[-1000:]


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "writer"), [("int8", "onnx"), ("fp16", "safetensors")])
def test_quantize_on_a_full_disk_fails_in_one_line_and_leaves_nothing(
    tmp_path: Path, tiny_model_dir: Path, dtype: str, writer: str
) -> None:
    """Both writers: ONNX's (an OSError) and safetensors' (a SafetensorError carrying the OS message)."""
    out = tmp_path / "out"
    out.mkdir()
    command = [*EMBEDOPS, "quantize", "--model-path", str(tiny_model_dir), "--output", str(out / "q"), "--dtype", dtype]
    result = run_limited(command, file_bytes=64 << 10)
    assert_one_line_error(result, "File too large", *(["model weights"] if writer == "safetensors" else []))
    assert list(out.iterdir()) == [], "no artifact and no staging directory is left behind"


def test_prep_into_a_read_only_directory_fails_in_one_line(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.tsv", 20)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        command = [*EMBEDOPS, "prep", "--data", str(data), "--output", str(locked / "clean.tsv")]
        assert_one_line_error(run_limited(command, read_only=True), "Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_prep_on_a_full_disk_fails_in_one_line(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.tsv", 2000)
    out = tmp_path / "out"
    out.mkdir()
    command = [*EMBEDOPS, "prep", "--data", str(data), "--output", str(out / "clean.tsv")]
    assert_one_line_error(run_limited(command, file_bytes=4 << 10), "File too large")
    assert not (out / "clean.tsv").exists()


def test_info_into_a_closed_pipe_is_one_line_not_a_traceback(tiny_model_dir: Path) -> None:
    info = subprocess.Popen(
        [*EMBEDOPS, "info", str(tiny_model_dir), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert info.stdout is not None and info.stderr is not None
    info.stdout.close()  # what `| head` does once it has its lines
    err = info.stderr.read().decode()
    assert info.wait(timeout=120) == 2
    assert "Traceback" not in err and "broken pipe" in err


# 7. Data files: no newline for 2 GB, multi-line CSV fields, a directory


def test_a_2gb_file_without_newlines_fails_at_line_1_in_bounded_memory(tmp_path: Path) -> None:
    huge = tmp_path / "huge.tsv"
    with open(huge, "wb") as handle:
        handle.truncate(2 << 30)  # sparse: 2 GiB of NUL bytes, no newline, almost no disk
    code = (
        "import resource, sys\n"
        "from embedops.data import PairReader\n"
        "from embedops.errors import DataError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    list(PairReader(sys.argv[1]))\n"
        "except DataError as exc:\n    print(exc)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(huge)], capture_output=True, text=True, timeout=120)
    message, peak_mib = result.stdout.strip().splitlines()
    assert message.startswith(f"{huge}:1: line is longer than 8 MiB")
    assert int(peak_mib) < 64, f"reading the file took {peak_mib} MiB more than the import"


def test_a_quoted_csv_field_keeps_its_newline_and_its_line(tmp_path: Path) -> None:
    data = tmp_path / "pairs.csv"
    data.write_text('anchor,positive\nfirst,"two\nlines"\nsecond,one line\nthird,"unclosed\n')
    reader = PairReader(data)
    rows = []
    with pytest.raises(DataError) as refused:
        rows.extend(reader)
    assert [(row.anchor, row.positive, row.line) for row in rows] == [
        ("first", "two\nlines", 2),
        ("second", "one line", 4),
    ]
    assert refused.value.line == 5


def test_a_directory_as_data_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        PairReader(tmp_path)


def test_evaluation_readers_share_the_cap_and_the_line_numbers(tmp_path: Path) -> None:
    from embedops.evaluate.datasets import load_beir, load_sts

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    with open(beir / "corpus.jsonl", "wb") as handle:
        handle.truncate(9 << 20)  # one 9 MiB line
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: line is longer than 8 MiB"):
        load_beir(beir, "test")

    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a document"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (beir / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t\xff\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: not valid UTF-8"):
        load_beir(beir, "test")

    sts = tmp_path / "sts.tsv"
    sts.write_bytes(b"genre\tfile\tyear\tid\t4.0\ta\tb\n" + b"genre\tfile\tyear\tid\t1.0\t\xfe\tb\n")
    with pytest.raises(DataError, match=r"sts\.tsv:2: not valid UTF-8"):
        load_sts(sts, "test")
